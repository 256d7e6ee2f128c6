"""Fixtures for the controller: a small synthetic dataset with LMDBs, and a runner of the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, build_splits


@pytest.fixture(scope="session")
def synth_lmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 train + 12 val synthetic 32x32 images, built into the data stage's output dirs."""
    return synth_splits(tmp_path_factory.mktemp("ctl"), seed=1, train=40, val=12)


def synth_splits(root: Path, *, seed: int, train: int, val: int, side: int = 32) -> Path:
    """`train` + `val` synthetic side x side images (5 classes) under root/raw, built into the data
    stage's output dirs root/train and root/val (ignore label 255). Returns `root`."""
    from data_prep.synth import make_synthetic

    make_synthetic(root / "raw", seed=seed, train=train, val=val, size=(side, side))
    return build_splits(root, root / "raw")


def build_section(raw: Path, **fields: Any) -> dict[str, Any]:
    """An experiment's data.build that makes the LMDBs from raw/train.txt and raw/val.txt (5
    classes); `fields` add or override."""
    return {"root": str(raw), "train_list": "train.txt", "val_list": "val.txt", "num_classes": 5, **fields}


def experiment(data: Path, **over: Any) -> dict[str, Any]:
    """A fast experiment on the synthetic LMDBs; keyword sections replace or extend the defaults."""
    exp: dict[str, Any] = {
        "name": "t",
        "seed": 0,
        "data": {"train": str(data / "train"), "val": str(data / "val"), "batch_size": 4},
        "net": {"arch": "compact", "width": 8, "depth": 2},
        "solver": {"type": "Adam", "base_lr": 0.002, "max_iter": 40},
        "checks": {"stats_interval": 5},
        "validation": {"interval": 20},
        "snapshot": {"interval": 10, "keep_last": 2},
        "progress": {"quiet": True},
    }
    for k, v in over.items():
        exp[k] = {**exp[k], **v} if isinstance(v, dict) and isinstance(exp.get(k), dict) else v
    return exp


def write_exp(tmp_path: Path, exp: dict[str, Any]) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(exp))
    return p


def orchestrate_bg(*args: str, **kw: Any) -> subprocess.Popen[str]:
    """The real CLI started in the background, for a test that interrupts or kills it; stdout and
    stderr piped as text unless `kw` says otherwise (DEVNULL, start_new_session, ...)."""
    popen: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **kw}
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, **popen)


def orchestrate(*args: str, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess (so Caffe aborts and exit codes are real)."""
    env = {**os.environ, "GLOG_minloglevel": "0"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kw,
    )


def data_layers(d: Path | str, phase: str, split: str, batch: int) -> str:
    """Two native Data layers (image with a mean, label) reading a data-stage output dir."""
    return f"""layer {{ name: "data" type: "Data" top: "data" include {{ phase: {phase} }}
  transform_param {{ mean_value: 110 mean_value: 112 mean_value: 111 }}
  data_param {{ source: "{d}/{split}/images" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "label" type: "Data" top: "label" include {{ phase: {phase} }}
  data_param {{ source: "{d}/{split}/labels" batch_size: {batch} backend: LMDB }} }}
"""


def user_net(d: Path | str, batch: int, *, with_val: bool = False, score: str = "score", kernel: int = 1) -> str:
    """A hand-written net as users have them (5 classes, ignore 255): Data layers, two convs with
    msra fillers, SoftmaxWithLoss; with `with_val`, TEST-phase data layers too (a train_val file)."""
    layers = data_layers(d, "TRAIN", "train", batch) + (data_layers(d, "TEST", "val", 1) if with_val else "")
    return (
        layers
        + f"""layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 8 kernel_size: 3 pad: 1 weight_filler {{ type: "msra" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "{score}" type: "Convolution" bottom: "conv1" top: "{score}"
  convolution_param {{ num_output: 5 kernel_size: {kernel} pad: {kernel // 2} weight_filler {{ type: "msra" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "{score}" bottom: "label" top: "loss"
  loss_param {{ ignore_label: 255 normalization: VALID }} }}
"""
    )


def unet(d: Path | str, batch: int) -> str:
    """A train_val U-Net as users write them: valid convolutions, a skip cropped to the decoder,
    and the label (`mask`) cropped inside the net to the 22x22 scores of a 32x32 input."""
    text = data_layers(d, "TRAIN", "train", batch) + data_layers(d, "TEST", "val", 1)
    text = text.replace('top: "label"', 'top: "mask"')
    text += _valid_conv("c1", "data", 8) + _valid_conv("c2", "c1", 8)
    text += """layer { name: "p1" type: "Pooling" bottom: "c2" top: "p1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
"""
    text += _valid_conv("c3", "p1", 16)
    text += """layer { name: "up" type: "Deconvolution" bottom: "c3" top: "up"
  convolution_param { num_output: 8 kernel_size: 2 stride: 2 weight_filler { type: "msra" } } }
layer { name: "skip" type: "Crop" bottom: "c2" bottom: "up" top: "skip" crop_param { axis: 2 offset: 2 } }
layer { name: "cat" type: "Concat" bottom: "skip" bottom: "up" top: "cat" }
"""
    text += _valid_conv("c4", "cat", 8)
    return (
        text
        + """layer { name: "score" type: "Convolution" bottom: "c4" top: "score"
  convolution_param { num_output: 5 kernel_size: 1 weight_filler { type: "msra" } } }
layer { name: "crop_mask" type: "Crop" bottom: "mask" bottom: "score" top: "mask_crop"
  crop_param { axis: 2 offset: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "mask_crop" top: "loss"
  propagate_down: true propagate_down: false loss_param { ignore_label: 255 normalization: VALID } }
layer { name: "accuracy" type: "Accuracy" bottom: "score" bottom: "mask_crop" top: "accuracy"
  include { phase: TEST } accuracy_param { ignore_label: 255 } }
"""
    )


def _valid_conv(name: str, bottom: str, n: int) -> str:
    return f"""layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"
  convolution_param {{ num_output: {n} kernel_size: 3 weight_filler {{ type: "msra" }} }} }}
layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}
"""
