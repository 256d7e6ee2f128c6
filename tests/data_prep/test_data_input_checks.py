"""Inputs that used to pass silently or end in a traceback: lossy (JPEG/WebP) label files, an ignore
label that is also a class id, a malformed dataset.json, --out below a file, non-UTF-8 text files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from dp_helpers import assert_failed, build_argv, caffe_datum_array, cli_build, read_lmdb

from orchestrator.cli import main


def _many_class_labels(data: Path, ext: str, fmt: str, params: tuple[int, ...] = ()) -> Path:
    """Rewrite the six labels as 11-class block labels encoded as `fmt`, saved under extension `ext`;
    the list points at them. Returns the list."""
    rng = np.random.default_rng(5)
    lines = []
    for i in range(6):
        lab = rng.integers(0, 11, (3, 4)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
        (data / "lab" / f"{i:03d}{ext}").write_bytes(cv2.imencode(fmt, lab, list(params))[1].tobytes())
        lines.append(f"img/{i:03d}.png lab/{i:03d}{ext}\n")
    (data / "list.txt").write_text("".join(lines))
    return data / "list.txt"


def test_jpeg_labels_refused(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _many_class_labels(data, ".jpg", ".jpg")
    out = tmp_path / "out"
    rc, _, err = cli_build(data, out, capsys, "--num-classes", "11")
    assert_failed(rc, err, out, "list.txt line 1", "lab/000.jpg", "JPEG", "lossy", "--allow-lossy-labels")


def test_lossy_detected_by_content_not_name(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _many_class_labels(data, ".png", ".jpg")  # JPEG bytes named .png
    rc, _, err = cli_build(data, tmp_path / "a", capsys, "--num-classes", "11")
    assert_failed(rc, err, tmp_path / "a", "lab/000.png", "JPEG")
    _many_class_labels(data, ".webp", ".webp", (cv2.IMWRITE_WEBP_QUALITY, 90))
    rc, _, err = cli_build(data, tmp_path / "b", capsys, "--num-classes", "11")
    assert_failed(rc, err, tmp_path / "b", "lab/000.webp", "WebP", "lossy")
    _many_class_labels(data, ".jpg", ".png")  # PNG bytes named .jpg: lossless, fine
    rc, _, err = cli_build(data, tmp_path / "c", capsys, "--num-classes", "11")
    assert rc == 0, err
    _many_class_labels(data, ".webp", ".webp", (cv2.IMWRITE_WEBP_QUALITY, 101))  # lossless WebP
    rc, _, err = cli_build(data, tmp_path / "d", capsys, "--num-classes", "11")
    assert rc == 0, err


@pytest.mark.caffe
def test_allow_lossy_labels(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Accepted on request, with a warning in stats.json; the counts show why it is not the default."""
    _many_class_labels(data, ".jpg", ".jpg")
    out = tmp_path / "out"
    rc, _, err = cli_build(data, out, capsys, "--num-classes", "11", "--allow-lossy-labels")
    assert rc == 0, err
    stats = json.loads((out / "stats.json").read_text())
    [warning] = [w for w in stats["warnings"] if "lossy" in w]
    assert "6 label files" in warning and "JPEG" in warning and "warning: 6 label files" in err
    assert stats["options"]["allow_lossy_labels"] is True
    truth = sum(
        np.bincount(cv2.imdecode(np.fromfile(p, np.uint8), cv2.IMREAD_UNCHANGED).ravel(), minlength=256)
        for p in sorted((data / "lab").glob("*.jpg"))
    )
    stored = sum(np.bincount(caffe_datum_array(v).ravel(), minlength=256) for _, v in read_lmdb(out / "labels"))
    assert np.array_equal(stored, truth)  # what was decoded is stored (the JPEG's values, invented classes included)


def test_ignore_label_inside_classes_warns(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc, _, err = cli_build(data, out, capsys, "--ignore-label", "2")
    assert rc == 0, err
    stats = json.loads((out / "stats.json").read_text())
    [warning] = [w for w in stats["warnings"] if "--ignore-label 2" in w]
    assert "class id" in warning and "0..4" in warning and f"warning: {warning}" in err
    assert stats["class_pixel_counts"][2] == 0 and stats["class_weights"]["median_frequency"][2] == 0


@pytest.mark.parametrize(
    "text,words",
    [
        (b'{"num_classes": 5, "ignore_label": 255', ["not valid JSON", "line 1"]),
        (b"[5, 255]", ["must be a JSON object"]),
        (b'{"num_classes": "five", "ignore_label": 255}', ["num_classes", "'five'", "integer"]),
        (b'{"name": "caf\xe9", "num_classes": 5, "ignore_label": 255}', ["not UTF-8", "byte 0xe9"]),
    ],
)
def test_bad_dataset_json(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: bytes, words: list[str]
) -> None:
    (data / "dataset.json").write_bytes(text)
    out = tmp_path / "out"
    rc = main(["data", "build", "--list", str(data / "list.txt"), "--out", str(out), "--quiet"])
    assert_failed(rc, capsys.readouterr().err, out, str(data / "dataset.json"), "--num-classes", *words)
    rc, _, err = cli_build(data, out, capsys)  # given on the command line: dataset.json is not needed
    assert rc == 0, err


@pytest.mark.parametrize("command", ["build", "synth"])
def test_out_below_a_file(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    out = blocker / "sub" / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    if command == "build":
        rc, _, err = cli_build(data, out, capsys)
    else:
        rc, err = main(["data", "synth", "--out", str(out)]), capsys.readouterr().err
    assert_failed(rc, err, out, f"--out {out}", f"{blocker} is a file", "choose another --out")
    assert blocker.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == before


def test_non_utf8_list(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A latin-1 list naming a file that exists (latin-1 name on disk) used to say 'does not exist'."""
    (data / "img" / "000.png").rename(data / "img" / "caf\udce9.png")  # bytes b"caf\xe9.png" on disk
    lst = data / "list.txt"
    lst.write_bytes(lst.read_bytes().replace(b"img/000.png", b"img/caf\xe9.png"))
    out = tmp_path / "out"
    rc, _, err = cli_build(data, out, capsys)
    assert_failed(rc, err, out, str(lst), "line 1", "not UTF-8", "byte 0xe9", "iconv")


def test_non_utf8_palette(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pal = data / "palette.txt"
    pal.write_bytes(b"# couleurs \xe9t\xe9\nsky 0 128 128 128\n")
    out = tmp_path / "out"
    rc, _, err = cli_build(data, out, capsys, "--palette", str(pal))
    assert_failed(rc, err, out, str(pal), "line 1", "not UTF-8")


def test_non_utf8_file_name_in_folders(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--images/--labels: a latin-1 file name cannot become an LMDB key or a line of index.txt."""
    for sub in ("img", "lab"):
        (data / sub / "000.png").rename(data / sub / "caf\udce9.png")
    out = tmp_path / "out"
    rc = main(build_argv(["--images", str(data / "img"), "--labels", str(data / "lab")], out, "--quiet"))
    assert_failed(rc, capsys.readouterr().err, out, "not valid UTF-8", "rename")
