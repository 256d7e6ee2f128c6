"""Fixtures for the data stage: a small synthetic dataset, six coded pairs, and the CamVid train LMDBs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dp_helpers import coded_pairs, write_pairs

os.environ.setdefault("GLOG_minloglevel", "2")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset (30 train + 10 val, 64x64)."""
    from data_prep.synth import make_synthetic

    out = tmp_path_factory.mktemp("synth") / "ds"
    make_synthetic(out, seed=3, train=30, val=10)
    return out


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """Six good pairs (24x32, classes 0..4) and list.txt, in tmp_path/data."""
    images, labels = coded_pairs(6)
    write_pairs(tmp_path / "data", images, labels)
    return tmp_path / "data"


@pytest.fixture(scope="session")
def camvid_db(camvid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 92 CamVid train pairs built into LMDBs (raw), once per session."""
    from data_prep.build import build_dataset

    out = tmp_path_factory.mktemp("camvid") / "db"
    build_dataset(out, num_classes=11, ignore_label=11, list_file=camvid / "train.txt", quiet=True)
    return out
