"""Helpers shared by the data_prep tests (imported by name: this folder has no __init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest


def read_lmdb(path: Path) -> list[tuple[bytes, bytes]]:
    """All (key, value) records of an LMDB, in cursor order (the order Caffe's Data layer reads)."""
    with lmdb.open(str(path), readonly=True, lock=False) as env, env.begin() as txn:
        return [(bytes(k), bytes(v)) for k, v in txn.cursor()]


def caffe_datum_array(value: bytes) -> np.ndarray:
    """C x H x W uint8 of a Datum parsed by Caffe's own protobuf classes (independent of ours)."""
    from caffe.proto import caffe_pb2

    d = caffe_pb2.Datum()
    d.ParseFromString(value)
    if d.encoded:
        img = cv2.imdecode(np.frombuffer(d.data, np.uint8), cv2.IMREAD_UNCHANGED)
        return img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
    return np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width)


def write_pairs(root: Path, images: list[np.ndarray], labels: list[np.ndarray], list_name: str = "list.txt") -> Path:
    """Write images (BGR) and index-PNG labels under `root` and a CamVid-style list file."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    (root / "lab").mkdir(exist_ok=True)
    lines = []
    for i, (im, lb) in enumerate(zip(images, labels, strict=True)):
        cv2.imwrite(str(root / "img" / f"{i:03d}.png"), im)
        cv2.imwrite(str(root / "lab" / f"{i:03d}.png"), lb)
        lines.append(f"img/{i:03d}.png lab/{i:03d}.png\n")
    lst = root / list_name
    lst.write_text("".join(lines))
    return lst


def coded_pairs(
    n: int, h: int = 24, w: int = 32, seed: int = 0, block: int = 4
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pairs whose label can be read back from the image: blue channel = 40 * class id (0..4) in
    random `block`-pixel squares, so any geometric mismatch between image and label shows up."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        lab = rng.integers(0, 5, (h // block, w // block)).repeat(block, 0).repeat(block, 1).astype(np.uint8)
        img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        img[..., 0] = lab * 40
        images.append(img)
        labels.append(lab)
    return images, labels


PAIRED_MEAN = [10.0, 20.0, 30.0]


def paired_params(db: Path, **kw: object) -> dict[str, object]:
    """The paired data layer's parameters over a built `db`: batches of 3, mean PAIRED_MEAN, seed 1;
    `kw` adds or overrides."""
    return {
        "images": str(db / "images"),
        "labels": str(db / "labels"),
        "batch_size": 3,
        "mean_bgr": PAIRED_MEAN,
        "seed": 1,
        **kw,
    }


def no_leftovers(parent: Path) -> list[str]:
    """Names in `parent` that look like a half-written output."""
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def build_argv(source: list[str], out: Path | None, *extra: str, num_classes: str = "5") -> list[str]:
    """The words of `orchestrate data build` reading `source` (`["--list", FILE]`, or `--images`
    and `--labels`) into `out` (None: no --out, the caller adds one), 5 classes (`num_classes`),
    ignore label 255, then `extra`."""
    to = ["--out", str(out)] if out is not None else []
    return ["data", "build", *source, *to, "--num-classes", num_classes, "--ignore-label", "255", *extra]


def cli_build(data: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    """`orchestrate data build` on data/list.txt (5 classes, ignore 255; `extra` may override): rc, stdout, stderr."""
    from orchestrator.cli import main

    rc = main(build_argv(["--list", str(data / "list.txt")], out, "--quiet", "--workers", "2", *extra))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def assert_failed(rc: int, err: str, out: Path, *words: str) -> None:
    """Exit 2, every word in the message, a fix, and no output nor half-written folder beside it."""
    assert rc == 2, err
    for w in words:
        assert w in err, f"{w!r} not in: {err}"
    assert "fix:" in err
    assert not out.exists()
    if out.parent.is_dir():
        assert no_leftovers(out.parent) == []


def start_blocked_build(data: Path, out: Path, workers: str = "1") -> subprocess.Popen[bytes]:
    """A real `orchestrate data build` that writes the six good pairs, then blocks reading a FIFO
    listed as the seventh image (no writer ever opens it): a build caught mid-way, without timing."""
    os.mkfifo(data / "img" / "fifo.png")
    cv2.imwrite(str(data / "lab" / "fifo.png"), np.zeros((24, 32), np.uint8))
    blocked = data / "blocked.txt"
    blocked.write_text((data / "list.txt").read_text() + "img/fifo.png lab/fifo.png\n")
    cmd = [
        sys.executable,
        "-m",
        "orchestrator.cli",
        *build_argv(["--list", str(blocked)], out, "--workers", workers, "--quiet"),
    ]
    proc = subprocess.Popen(
        cmd, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120  # a liveness guard, not a speed check
    while not any((p / "labels" / "data.mdb").exists() for p in out.parent.glob(f".{out.name}.partial-*")):
        if proc.poll() is not None:
            pytest.fail(f"the build ended early (rc {proc.returncode}): {proc.communicate()[1].decode()}")
        assert time.monotonic() < deadline, "the blocked build never created its partial folder"
        time.sleep(0.05)
    return proc
