"""Limits declared with each field: bad numbers, names and sizes are refused by `validate`, all at once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.errors import UserError
from orchestrator.config import experiment as config
from tests.conftest import REPO

BASE: dict[str, Any] = {
    "name": "x",
    "data": {"train": "d/train", "val": "d/val", "build": {"root": "raw", "train_list": "t.txt", "num_classes": 5}},
}
CLI = [sys.executable, "-m", "orchestrator.cli"]


def problems(raw: dict[str, Any], overrides: Sequence[str] = ()) -> str:
    """The text of the UserError that from_dict raises (fails the test when it accepts `raw`)."""
    with pytest.raises(UserError) as e:
        config.from_dict(raw, list(overrides))
    return str(e.value)


@pytest.mark.parametrize(
    "override, expected",
    [
        # the cases of issue 11: each crashed the child or produced a nonsense run
        ("snapshot.interval=0", "snapshot.interval: must be >= 1, got 0"),
        ("validation.interval=0", "validation.interval: must be >= 1, got 0"),
        ("progress.log_interval=0", "progress.log_interval: must be >= 1, got 0"),
        ("checks.loss_window=0", "checks.loss_window: must be >= 1, got 0"),
        ("snapshot.keep_last=-1", "snapshot.keep_last: must be >= 1, got -1"),
        ("snapshot.keep_last=0", "resume continues from the newest snapshot"),
        ("solver.base_lr=nan", "solver.base_lr: must be a finite number, got nan"),
        ("solver.base_lr=.nan", "solver.base_lr: must be a finite number, got nan"),
        ("solver.base_lr=-.inf", "solver.base_lr: must be a finite number, got -inf"),
        ("solver.base_lr=1e400", "solver.base_lr: must be a finite number, got inf"),
        ("data.build.resize=big", "data.build.resize: must be WIDTHxHEIGHT"),
        ("data.build.resize=240x0", "data.build.resize: must be WIDTHxHEIGHT"),
        ("data.build.resize=240x", "data.build.resize: must be WIDTHxHEIGHT"),
        # every section's numbers
        ("solver.max_iter=-5", "solver.max_iter: must be >= 1, got -5"),
        ("solver.max_iter=3000000000", "solver.max_iter: must be <= 2147483647"),
        ("solver.base_lr=0", "solver.base_lr: must be > 0, got 0.0"),
        ("solver.momentum=1", "solver.momentum: must be >= 0 and < 1, got 1.0"),
        ("solver.momentum2=-0.1", "solver.momentum2: must be >= 0 and < 1"),
        ("solver.weight_decay=-1e-4", "solver.weight_decay: must be >= 0"),
        ("solver.power=-1", "solver.power: must be >= 0"),
        ("solver.clip_gradients=0", "solver.clip_gradients: must be > 0 or -1, got 0.0"),
        ("solver.iter_size=0", "solver.iter_size: must be >= 1"),
        ("solver.stepsize=0", "solver.stepsize: must be >= 1"),
        ("solver.stepvalue=[100, 0]", "solver.stepvalue[1]: must be >= 1, got 0"),
        ("checks.stats_interval=0", "checks.stats_interval: must be >= 1"),
        ("checks.loss_factor=1", "checks.loss_factor: must be > 1"),
        ("checks.warmup=-1", "checks.warmup: must be >= 0"),
        ("checks.saturation_loss=0", "checks.saturation_loss: must be > 0"),
        ("checks.update_ratio_min=-1", "checks.update_ratio_min: must be >= 0"),
        ("checks.update_ratio_max=inf", "checks.update_ratio_max: must be a finite number"),
        ("early_stop.patience=0", "early_stop.patience: must be >= 1"),
        ("early_stop.min_delta=-0.1", "early_stop.min_delta: must be >= 0"),
        ("lr_on_plateau.factor=1", "lr_on_plateau.factor: must be > 0 and < 1, got 1.0"),
        ("lr_on_plateau.min_lr=-1", "lr_on_plateau.min_lr: must be >= 0"),
        ("lr_on_plateau.patience=0", "lr_on_plateau.patience: must be >= 1"),
        ("validation.max_images=0", "validation.max_images: must be >= 1, got 0"),
        ("data.batch_size=0", "data.batch_size: must be >= 1"),
        ("data.val_batch_size=0", "data.val_batch_size: must be >= 1"),
        ("data.build.num_classes=256", "data.build.num_classes: must be >= 1 and <= 255"),
        ("data.build.ignore_label=-1", "data.build.ignore_label: must be >= 0 and <= 255"),
        ("net.width=0", "net.width: must be >= 1"),
        ("net.depth=0", "net.depth: must be >= 1"),
        ("net.num_classes=0", "net.num_classes: must be >= 1"),
        ("seed=-1", "seed: must be >= 0"),
    ],
)
def test_each_bad_value_is_refused_with_its_path(override: str, expected: str) -> None:
    text = problems(BASE, [override])
    assert expected in text and "1 problem(s)" in text


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.augment.crop=[0, 32]", "data.augment.crop[0]: must be >= 1, got 0"),
        ("data.augment.crop=[32]", "data.augment.crop: must be [height, width]"),
        ("data.augment.scale=[0, 1]", "data.augment.scale[0]: must be > 0"),
        ("data.augment.scale=[1.5, 1.0]", "data.augment.scale: must be [min, max] with min <= max"),
    ],
)
def test_augmentation_limits(override: str, expected: str) -> None:
    text = problems(BASE, ["data.layer=paired", override])
    assert expected in text and "1 problem(s)" in text


def test_cross_field_rules() -> None:
    assert "solver.gamma: must be > 0 for lr_policy step" in problems(BASE, ["solver.lr_policy=step", "solver.gamma=0"])
    assert "solver.stepvalue: must increase" in problems(
        BASE, ["solver.lr_policy=multistep", "solver.stepvalue=[50, 20]"]
    )
    assert "checks.update_ratio_min: must be below checks.update_ratio_max" in problems(
        BASE, ["checks.update_ratio_min=0.5", "checks.update_ratio_max=0.1"]
    )


def test_sane_values_stay_accepted() -> None:
    exp = config.from_dict(
        BASE,
        [
            "solver.clip_gradients=-1",
            "solver.lr_policy=sigmoid",
            "solver.gamma=-0.01",
            "snapshot.keep_last=1",
            "snapshot.keep_best=false",
            "checks.warmup=0",
            "data.build.resize=240x180",
            "seed=2147483647",
            "solver.momentum=0",
            "lr_on_plateau.min_lr=0",
            "name=exp-1.v2_b",
        ],
    )
    assert exp.solver.gamma == -0.01 and exp.snapshot.keep_last == 1
    assert exp.data.build is not None and exp.data.build.resize == "240x180"
    for shipped in (REPO / "experiments").glob("*.yaml"):
        assert config.load_experiment(shipped).name == shipped.stem


def test_one_bad_field_does_not_hide_another() -> None:
    """Issue 11: max_iter -5 vanished from the list because base_lr 'fast' broke the section's check."""
    raw = {**BASE, "solver": {"base_lr": "fast", "max_iter": -5, "lr_policy": "multistep"}}
    text = problems(raw)
    for needle in (
        "solver.base_lr: expected a number, got 'fast'",
        "solver.max_iter: must be >= 1, got -5",
        "solver.stepvalue: lr_policy multistep needs a list of iterations",
    ):
        assert needle in text
    assert "3 problem(s)" in text


def test_a_rule_over_a_bad_field_is_not_reported_twice() -> None:
    """augment.mirror 'maybe' is reported as mistyped, not also as 'needs layer: paired'."""
    text = problems({**BASE, "data": {"train": "a", "augment": {"mirror": "maybe"}}})
    assert "data.augment.mirror: expected true or false" in text and "1 problem(s)" in text


@pytest.mark.parametrize("name", [".", "..", "a/b", "/tmp", "a\\b", "", ".hidden", "-x", "x" * 101, "a b"])
def test_name_must_be_a_plain_directory_name(name: str) -> None:
    """Issue 11: `name: ..` with --fresh deleted the parent of runs/."""
    assert "name: must be a plain name" in problems({**BASE, "name": name})


def test_numbers_beyond_a_float_are_not_finite() -> None:
    assert "solver.base_lr: must be a finite number, got inf" in problems({**BASE, "solver": {"base_lr": 10**400}})


def test_bad_set_override_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"--set 'solver.stepvalue=\[1, 2': not a YAML value"):
        config.from_dict(BASE, ["solver.stepvalue=[1, 2"])


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(CLI + list(args), cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_validate_lists_every_error_at_once(tmp_path: Path) -> None:
    raw = {
        "name": "..",
        "data": {"train": "a", "build": {"root": "r", "train_list": "t", "num_classes": 5, "resize": "big"}},
        "solver": {"base_lr": float("nan"), "max_iter": -5, "lr_polcy": "step"},
        "checks": {"loss_window": 0},
        "validation": {"interval": 0},
        "progress": {"log_interval": 0},
        "snapshot": {"interval": 0, "keep_last": 0, "keep_best": False},
    }
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(raw))
    r = run_cli("validate", str(f))
    assert r.returncode == 2
    for path in (
        "name:",
        "data.build.resize:",
        "solver.base_lr:",
        "solver.max_iter:",
        "solver.lr_polcy: unknown key (did you mean 'lr_policy'?)",
        "checks.loss_window:",
        "validation.interval:",
        "progress.log_interval:",
        "snapshot.interval:",
        "snapshot.keep_last:",
    ):
        assert f"  - {path}" in r.stderr
    assert f"{f}: 10 problem(s)" in r.stderr


def test_run_refuses_a_bad_config_before_creating_anything(tmp_path: Path) -> None:
    f = tmp_path / "e.yaml"
    f.write_text("name: e\ndata: {train: a}\nsnapshot: {interval: 0}\n")
    r = run_cli("run", str(f), "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 2 and "snapshot.interval: must be >= 1" in r.stderr
    assert not (tmp_path / "run").exists()


def test_non_utf8_yaml_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "latin1.yaml"
    f.write_bytes("name: café\ndata: {train: a}\n".encode("latin-1"))
    r = run_cli("validate", str(f))
    assert r.returncode == 2 and f"{f}: not UTF-8 text" in r.stderr and "byte 0xe9" in r.stderr
