"""Shared fixtures. Caffe's glog chatter is kept out of the test output."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("GLOG_minloglevel", "2")

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "datasets" / "camvid"
SKIP_IN_CI = "skipped under CI=true, where every test must run"


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport | None:
    """Under CI=true a skip is a failure (CI has Caffe's tools, root for tmpfs mounts, Ray and
    CamVid, so nothing there has a reason to skip), except a test marked `gpu`."""
    if os.environ.get("CI") != "true" or call.excinfo is None or item.get_closest_marker("gpu"):
        return None
    if not call.excinfo.errisinstance(pytest.skip.Exception):
        return None
    report = pytest.TestReport.from_item_and_call(item, call)
    report.outcome = "failed"
    report.longrepr = f"{SKIP_IN_CI}: {call.excinfo.value}"
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A whole module skipped at import (pytest.importorskip) is a failure under CI=true too."""
    if os.environ.get("CI") == "true" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"{SKIP_IN_CI}: {report.longrepr}"


def build_splits(out: Path, lists: Path, num_classes: int = 5, ignore_label: int = 255, **options: Any) -> Path:
    """The data stage's train and val outputs (out/train, out/val) from lists/train.txt and
    lists/val.txt, built quietly; `options` go to build_dataset (root, resize, ...). Returns `out`."""
    from data_prep.build import build_dataset

    for split in ("train", "val"):
        build_dataset(
            out / split,
            num_classes=num_classes,
            ignore_label=ignore_label,
            list_file=lists / f"{split}.txt",
            quiet=True,
            **options,
        )
    return out


@pytest.fixture(scope="session")
def camvid() -> Path:
    """The real CamVid subset beside the repo (skipped with the reason when it is absent)."""
    if not (CAMVID / "train.txt").exists():
        pytest.skip(f"CamVid subset not found at {CAMVID} (see ../shared/datasets/camvid/README.md)")
    return CAMVID
