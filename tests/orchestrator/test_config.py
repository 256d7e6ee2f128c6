"""The experiment schema: strict keys with paths, all errors at once, typed --set overrides."""

from __future__ import annotations

import subprocess
import sys

import pytest

from common.errors import UserError
from orchestrator.config import experiment as config
from tests.conftest import REPO

BASE = {"name": "x", "data": {"train": "d/train", "val": "d/val"}}


def test_all_errors_reported_with_paths():
    raw = {
        "name": "x",
        "data": {"train": "a", "batchsize": 3},
        "solver": {"lr_polcy": "step", "base_lr": "fast"},
        "device": "gpu0",
        "extra": 1,
    }
    with pytest.raises(UserError) as e:
        config.from_dict(raw)
    text = str(e.value)
    for needle in (
        "data.batchsize: unknown key (did you mean 'batch_size'?)",
        "solver.lr_polcy: unknown key",
        "solver.base_lr: expected a number",
        "device: must be 'cpu' or 'gpu:N'",
        "extra: unknown key",
    ):
        assert needle in text
    assert "5 problem(s)" in text


def test_set_overrides_are_type_checked():
    exp = config.from_dict(BASE, ["solver.base_lr=1e4", "checks.stats_interval=5", "net.batch_norm=true"])
    assert exp.solver.base_lr == 1e4 and exp.checks.stats_interval == 5 and exp.net.batch_norm is True
    with pytest.raises(UserError, match="checks.stats_interval: expected an integer"):
        config.from_dict(BASE, ["checks.stats_interval=often"])
    with pytest.raises(UserError, match="solver.nope: unknown key"):
        config.from_dict(BASE, ["solver.nope=1"])


def test_augmentation_needs_the_paired_layer():
    with pytest.raises(UserError, match="needs layer: paired"):
        config.from_dict({"name": "x", "data": {"train": "a", "augment": {"mirror": True}}})
    exp = config.from_dict(
        {"name": "x", "data": {"train": "a", "layer": "paired", "augment": {"mirror": True, "crop": [32, 32]}}}
    )
    assert exp.data.augment.crop == [32, 32]


def test_yaml_round_trip_and_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "e.yaml"
    p.write_text("name: e\ndata: {train: d/train, val: d/val}\nsolver: {base_lr: 1e-3}\n")
    exp = config.load_experiment(p)
    assert exp.data.train == str(tmp_path / "d/train") and exp.solver.base_lr == 1e-3
    again = config.from_dict(__import__("yaml").safe_load(config.to_yaml(exp)))
    assert again == exp


def test_validate_cli_exit_codes(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: g\ndata: {train: a}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: g\ndata: {train: a, vall: b}\nsolver: {max_iters: 3}\n")
    cli = [sys.executable, "-m", "orchestrator.cli", "validate"]
    assert subprocess.run(cli + [str(good)], cwd=REPO, capture_output=True, timeout=120).returncode == 0
    r = subprocess.run(cli + [str(bad)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "data.vall" in r.stderr and "solver.max_iters" in r.stderr
    r = subprocess.run(cli + [str(tmp_path / "missing.yaml")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not found" in r.stderr
