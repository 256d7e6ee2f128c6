"""Fixtures for the data stage: a small synthetic dataset and the CamVid train LMDBs, built once."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GLOG_minloglevel", "2")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset (30 train + 10 val, 64x64)."""
    from data_prep.synth import make_synthetic

    out = tmp_path_factory.mktemp("synth") / "ds"
    make_synthetic(out, seed=3, train=30, val=10)
    return out


@pytest.fixture(scope="session")
def camvid_db(camvid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 92 CamVid train pairs built into LMDBs (raw), once per session."""
    from data_prep.build import build_dataset

    out = tmp_path_factory.mktemp("camvid") / "db"
    build_dataset(out, num_classes=11, ignore_label=11, list_file=camvid / "train.txt", quiet=True)
    return out
