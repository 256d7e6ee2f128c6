"""Every bad input: a clear error naming file (and list line) and the reason, exit code 2, and
nothing on disk that looks complete. --skip-bad leaves such pairs out and lists them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from dp_helpers import assert_failed, build_argv, no_leftovers, read_lmdb
from dp_helpers import cli_build as build

from orchestrator.cli import main


def test_missing_file(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (data / "img" / "003.png").unlink()
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys)
    assert_failed(rc, err, out, "list.txt line 4", "003.png", "does not exist")


def test_unreadable_image(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (data / "img" / "001.png").write_bytes(b"this is not an image at all")
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys)
    assert_failed(rc, err, out, "list.txt line 2", "001.png", "not a readable image")


def test_truncated_image_last_pair(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The last pair fails, after five records were written to the temp LMDBs: none survive."""
    p = data / "img" / "005.png"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys)
    assert_failed(rc, err, out, "list.txt line 6", "005.png", "truncated")


def test_truncated_jpeg(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cut JPEG decodes as grey without an error in OpenCV: the missing end marker catches it."""
    img = cv2.imread(str(data / "img" / "002.png"))
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    (data / "img" / "002.jpg").write_bytes(jpg[: len(jpg) - 40])
    lst = data / "list.txt"
    lst.write_text(lst.read_text().replace("img/002.png", "img/002.jpg"))
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys)
    assert_failed(rc, err, out, "list.txt line 3", "002.jpg", "truncated")


def test_size_mismatch(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cv2.imwrite(str(data / "lab" / "002.png"), np.zeros((12, 16), np.uint8))
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys)
    assert_failed(rc, err, out, "list.txt line 3", "lab/002.png", "16x12", "32x24")


def test_label_value_out_of_range(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lab = cv2.imread(str(data / "lab" / "004.png"), cv2.IMREAD_UNCHANGED)
    lab[5, 7] = 9
    lab[0, 0] = 255  # the ignore label is fine
    cv2.imwrite(str(data / "lab" / "004.png"), lab)
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys)
    assert_failed(rc, err, out, "list.txt line 5", "004.png", "label value 9 at pixel (x=7, y=5)")


def test_empty_list(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (data / "list.txt").write_text("# nothing here\n\n")
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys)
    assert_failed(rc, err, out, "list.txt", "no entries")


def test_malformed_line(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (data / "list.txt").write_text("img/000.png lab/000.png\nimg/001.png\n")
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys)
    assert_failed(rc, err, out, "list.txt line 2", "expected 'image label'")


def test_duplicate_entries(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lst = data / "list.txt"
    lst.write_text(lst.read_text() + "img/001.png lab/001.png\n")
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys)
    assert_failed(rc, err, out, "list.txt line 7", "duplicate entry", "001.png", "line 2")


def test_output_exists_needs_overwrite(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc, _, err = build(data, out, capsys)
    assert rc == 2 and "already exists" in err and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "mine"
    rc, _, err = build(data, out, capsys, "--overwrite")
    assert rc == 0, err
    assert not (out / "keep.txt").exists() and (out / "stats.json").exists()
    assert no_leftovers(tmp_path) == []


def test_failed_overwrite_keeps_old_output(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert build(data, out, capsys)[0] == 0
    before = (out / "stats.json").read_text()
    (data / "img" / "000.png").write_bytes(b"junk")
    rc, _, err = build(data, out, capsys, "--overwrite")
    assert rc == 2 and "000.png" in err
    assert (out / "stats.json").read_text() == before


def test_skip_bad_lists_and_leaves_out(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (data / "img" / "001.png").write_bytes(b"junk")
    (data / "lab" / "003.png").unlink()
    out = tmp_path / "out"
    rc, stdout, err = build(data, out, capsys, "--skip-bad")
    assert rc == 0, err
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_records"] == 4
    assert [s["where"].rsplit(" ", 2)[-2:] for s in stats["skipped"]] == [["line", "2"], ["line", "4"]]
    assert stats["skipped"][1]["file"].endswith("lab/003.png")
    assert err.count("skipped:") == 2 and "001.png" in err and "003.png" in err
    assert "2 skipped" in stdout
    keys = [k for k, _ in read_lmdb(out / "images")]
    assert keys == [k for k, _ in read_lmdb(out / "labels")]
    assert [k.decode() for k in keys] == [
        "00000000_000.png",
        "00000001_002.png",
        "00000002_004.png",
        "00000003_005.png",
    ]


def test_all_bad_is_an_error(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for p in (data / "img").iterdir():
        p.write_bytes(b"junk")
    out = tmp_path / "out"
    rc, _, err = build(data, out, capsys, "--skip-bad")
    assert_failed(rc, err, out, "no usable pairs")


def test_bad_settings(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = main(build_argv(["--list", str(data / "list.txt")], out, num_classes="300"))
    assert_failed(rc, capsys.readouterr().err, out, "--num-classes 300")
    rc = main(["data", "build", "--list", str(data / "list.txt"), "--out", str(out)])
    assert_failed(rc, capsys.readouterr().err, out, "--num-classes and --ignore-label are needed")
    rc = main(["data", "build", "--out", str(out), "--num-classes", "5", "--ignore-label", "255"])
    assert_failed(rc, capsys.readouterr().err, out, "--list FILE or both --images DIR and --labels DIR")
