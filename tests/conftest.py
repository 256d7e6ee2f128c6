"""Shared fixtures. Caffe's glog chatter is kept out of the test output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GLOG_minloglevel", "2")

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "datasets" / "camvid"


@pytest.fixture(scope="session")
def camvid() -> Path:
    """The real CamVid subset beside the repo (skipped with the reason when it is absent)."""
    if not (CAMVID / "train.txt").exists():
        pytest.skip(f"CamVid subset not found at {CAMVID} (see ../shared/datasets/camvid/README.md)")
    return CAMVID
