"""The synthetic dataset: deterministic, imbalanced, small, in the CamVid list format, buildable.
(How fast it is made is a benchmark's business, not a test's.)"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from common.errors import UserError
from data_prep.synth import make_synthetic
from orchestrator.cli import main


def test_defaults_small_imbalanced_and_listed(tmp_path: Path) -> None:
    meta = make_synthetic(tmp_path / "s")
    assert (meta["num_classes"], meta["ignore_label"], meta["train"], meta["val"]) == (5, 255, 200, 50)
    assert json.loads((tmp_path / "s" / "dataset.json").read_text()) == meta
    lines = (tmp_path / "s" / "train.txt").read_text().splitlines()
    assert len(lines) == 200 and len((tmp_path / "s" / "val.txt").read_text().splitlines()) == 50
    # exactly the listed files, nothing else: one image and one label PNG per listed pair
    written = {str(f.relative_to(tmp_path / "s")) for f in (tmp_path / "s").rglob("*.png")}
    listed = {
        rel
        for name in ("train.txt", "val.txt")
        for line in (tmp_path / "s" / name).read_text().splitlines()
        for rel in line.split()
    }
    assert written == listed and len(written) == 500
    img_rel, lab_rel = lines[0].split()
    img = cv2.imread(str(tmp_path / "s" / img_rel))
    lab = cv2.imread(str(tmp_path / "s" / lab_rel), cv2.IMREAD_UNCHANGED)
    assert img.shape == (64, 64, 3) and lab.shape == (64, 64) and lab.dtype == np.uint8
    counts = np.zeros(256, np.int64)
    for line in lines:
        counts += np.bincount(cv2.imread(str(tmp_path / "s" / line.split()[1]), -1).ravel(), minlength=256)
    assert set(np.flatnonzero(counts)) <= {0, 1, 2, 3, 4, 255}
    share = counts[:5] / counts[:5].sum()
    assert share[4] < 0.02 and share[4] > 0.001  # one rare class, but present
    assert share[0] > 0.5 and all(share[1:4] > 0.02)
    np.testing.assert_allclose(meta["train_class_pixel_share"], share, atol=1e-5)
    assert 0 < counts[255] / counts.sum() < 0.1  # a thin ignore ring


def test_deterministic_from_seed(tmp_path: Path) -> None:
    a = make_synthetic(tmp_path / "a", seed=5, train=6, val=2, size="48x80")
    make_synthetic(tmp_path / "b", seed=5, train=6, val=2, size=(48, 80))
    make_synthetic(tmp_path / "c", seed=6, train=6, val=2, size=(48, 80))
    assert a["size"] == [48, 80]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 16
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert any((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files)
    assert cv2.imread(str(tmp_path / "a" / "images" / "val_0001.png")).shape == (48, 80, 3)


def test_classes_differ_by_colour(synth_dir: Path) -> None:
    """What makes it learnable fast: each shape class has its own mean colour, far from the others."""
    sums, n = np.zeros((5, 3)), np.zeros(5)
    for line in (synth_dir / "train.txt").read_text().splitlines():
        i, lb = line.split()
        img, lab = cv2.imread(str(synth_dir / i)).astype(float), cv2.imread(str(synth_dir / lb), -1)
        for c in range(5):
            sums[c] += img[lab == c].sum(0)
            n[c] += (lab == c).sum()
    means = sums / n[:, None]
    dist = np.linalg.norm(means[:, None] - means[None], axis=2)
    assert dist[~np.eye(5, dtype=bool)].min() > 60


def test_cli_synth_then_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--train", "12", "--val", "4", "--seed", "2"]) == 0
    assert "12 train + 4 val" in capsys.readouterr().out
    # --num-classes/--ignore-label come from dataset.json
    rc = main(
        [
            "data",
            "build",
            "--list",
            str(tmp_path / "s" / "train.txt"),
            "--val-list",
            str(tmp_path / "s" / "val.txt"),
            "--out",
            str(tmp_path / "db"),
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "throughput:" in out
    stats = json.loads((tmp_path / "db" / "train" / "stats.json").read_text())
    assert (stats["num_records"], stats["num_classes"], stats["ignore_label"]) == (12, 5, 255)
    assert main(["data", "synth", "--out", str(tmp_path / "s")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_bad_synth_arguments(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not HxW"):
        make_synthetic(tmp_path / "x", size="64")
    with pytest.raises(UserError, match="too small"):
        make_synthetic(tmp_path / "x", size=(8, 8))
    with pytest.raises(UserError, match="at least one"):
        make_synthetic(tmp_path / "x", train=0)
    assert not (tmp_path / "x").exists()


def test_one_size_parser_keeps_each_option_order() -> None:
    """data_prep.sizes.parse_size: the numbers in the order written; --resize reads WxH, --size HxW."""
    from data_prep.cli import parse_size
    from data_prep.sizes import parse_size as parse

    assert parse("480x360") == parse_size("480X360") == (480, 360)
    assert parse("32x48", "HxW") == (32, 48)
    with pytest.raises(ValueError, match="height and width must be positive"):
        parse("0x48", "HxW")
    with pytest.raises(UserError, match="--size 'big' is not HxW"):
        make_synthetic(Path("unused"), size="big")
