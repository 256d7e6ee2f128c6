"""`orchestrate run` end to end on real Caffe: completes, diverges, stops in pre-flight, fails cleanly."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest

from data_prep.partials import claim
from orchestrator.jsonio import read_jsonl
from tests.orchestrator.conftest import build_section, experiment, orchestrate, orchestrate_bg, write_exp

pytestmark = pytest.mark.caffe


def test_normal_run_completes_and_loss_falls(synth_lmdb, tmp_path):
    run = tmp_path / "run"
    r = orchestrate("run", str(write_exp(tmp_path, experiment(synth_lmdb))), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["iterations"] == 40
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["iter"] for m in metrics] == list(range(1, 41))
    losses = [m["loss"] for m in metrics]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert {"mean_abs_data", "mean_abs_diff"} <= set(metrics[4]["stats"]["param"]["conv1_1/0"])
    val = read_jsonl(run / "val.jsonl")
    assert [v["iter"] for v in val] == [20, 40]
    assert set(val[0]) >= {"pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu", "per_class_iu"}
    best = max(val, key=lambda v: v["mean_iu"])  # the first of equals: only a higher mIoU is a new best
    assert summary["best"]["iteration"] == best["iter"] and summary["best"]["metrics"]["mean_iu"] == best["mean_iu"]
    assert (run / summary["best"]["snapshot"]).exists()
    for f in ("curves.png", "report.md", "config.yaml", "train.prototxt", "val.prototxt", "deploy.prototxt"):
        assert (run / f).exists(), f
    assert "Best validation" in (run / "report.md").read_text()
    # surgery ran on the upsampling layer and was verified
    assert any(f["code"] == "surgery" for f in summary["findings"])
    # glog chatter went to the log file, not the console
    assert "Creating layer" in (run / "caffe.log").read_text() and "Creating layer" not in r.stdout + r.stderr


def test_huge_lr_diverges_with_a_diagnosis(synth_lmdb, tmp_path):
    run = tmp_path / "run"
    exp = experiment(synth_lmdb, solver={"type": "SGD", "base_lr": 0.01, "max_iter": 60}, checks={"stats_interval": 5})
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run), "--set", "solver.base_lr=1e4")
    assert r.returncode == 3, r.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged"
    metrics = read_jsonl(run / "metrics.jsonl")
    first_bad = next(m["iter"] for m in metrics if m["loss"] is None or not np.isfinite(m["loss"]) or m["loss"] > 80)
    assert summary["iterations"] - first_bad <= 5  # within one statistics interval
    diag = [f for f in summary["findings"] if f["code"] == "diverged"]
    assert diag and f"iteration {summary['iterations']}" in diag[0]["message"] and "base_lr" in diag[0]["fix"]


def test_a_summed_loss_that_diverges_is_diagnosed_per_pixel(synth_lmdb, tmp_path):
    """net.normalization BATCH_SIZE with base_lr 0.01 on 32x32 images: the doctor's error (run
    with --force) proposes a per-pixel base_lr, and the divergence diagnosis names the
    normalization and what base_lr equals per pixel instead of only "10x lower"."""
    run = tmp_path / "run"
    exp = experiment(
        synth_lmdb,
        net={"normalization": "BATCH_SIZE"},
        solver={"type": "SGD", "base_lr": 0.01, "momentum": 0.9, "max_iter": 60},
        checks={"stats_interval": 5},
    )
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run), "--force")
    assert r.returncode == 3, r.stderr[-2000:]
    findings = json.loads((run / "summary.json").read_text())["findings"]
    [pre] = [f for f in findings if f["code"] == "loss-normalization-lr"]
    assert pre["severity"] == "error" and pre["data"]["suggested_lr"] == 0.01 and "equals 10 per pixel" in pre["fix"]
    [diag] = [f for f in findings if f["code"] == "diverged"]
    assert "normalization BATCH_SIZE" in diag["message"] and "1024 pixels acts like 10 per pixel" in diag["message"]
    assert "per-pixel base_lr 0.01" in diag["fix"] and "would still act like 1 per pixel" in diag["fix"]
    assert abs(diag["data"]["equivalent_lr"] - 10.24) < 1e-6 and diag["data"]["pixels"] == 1024


NO_FILLER_NET = """
layer { name: "data" type: "Data" top: "data" include { phase: TRAIN }
  data_param { source: "%(d)s/train/images" batch_size: 2 backend: LMDB } }
layer { name: "label" type: "Data" top: "label" include { phase: TRAIN }
  data_param { source: "%(d)s/train/labels" batch_size: 2 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "score" type: "Convolution" bottom: "conv1" top: "score"
  convolution_param { num_output: 5 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 normalize: false } }
"""


def test_user_net_without_fillers_stops_in_preflight(synth_lmdb, tmp_path):
    net = tmp_path / "user.prototxt"
    net.write_text(NO_FILLER_NET % {"d": synth_lmdb})
    exp = experiment(synth_lmdb, net={"prototxt": str(net), "num_classes": 5, "ignore_label": 255})
    run = tmp_path / "run"
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run))
    assert r.returncode == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "pre-flight" in summary["stop_reason"]
    zero = [f for f in summary["findings"] if f["code"] == "zero-init"]
    assert zero and zero[0]["layer"] == "conv1"
    assert "zero-init" in r.stderr and not (run / "metrics.jsonl").exists()


BAD_CROP_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "ref" type: "Input" top: "ref" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "crop" type: "Crop" bottom: "data" bottom: "ref" top: "crop" crop_param { axis: 2 offset: 12 } }
"""


def test_caffe_abort_becomes_a_finding(synth_lmdb, tmp_path):
    net = tmp_path / "crop.prototxt"
    net.write_text(BAD_CROP_NET)
    r = orchestrate("check", "--prototxt", str(net), "--json")
    assert r.returncode == 1, r.stderr[-1500:]
    found = json.loads(r.stdout)
    invalid = [f for f in found if f["code"] == "net-invalid"]
    assert invalid and invalid[0]["layer"] == "crop" and "crop" in invalid[0]["message"].lower()


@pytest.mark.gpu
def test_gpu_on_a_machine_without_gpu_fails_cleanly(synth_lmdb, tmp_path):
    """`device: gpu:0` follows the machine: with a CUDA build and a GPU that Caffe can open
    (asked in a child: Caffe aborts when it cannot), the run trains; otherwise it ends
    `failed` with `gpu-unavailable` instead of crashing."""
    import subprocess
    import sys

    from orchestrator.cli.envinfo import build_info

    usable = (
        bool(build_info().get("gpu"))
        and subprocess.run(
            [sys.executable, "-c", "import caffe; caffe.set_device(0); caffe.set_mode_gpu()"],
            capture_output=True,
            timeout=120,
        ).returncode
        == 0
    )
    run = tmp_path / "run"
    r = orchestrate("run", str(write_exp(tmp_path, experiment(synth_lmdb, device="gpu:0"))), "--run-dir", str(run))
    summary = json.loads((run / "summary.json").read_text())
    if usable:
        assert r.returncode == 0, r.stderr[-1500:]
        assert summary["status"] == "completed" and summary["iterations"] == 40
        assert not any(f["code"] == "gpu-unavailable" for f in summary["findings"])
        return
    assert r.returncode == 2, r.stderr[-1500:]
    assert summary["status"] == "failed"
    assert summary["findings"][-1]["code"] == "gpu-unavailable"
    assert "device: cpu" in summary["findings"][-1]["fix"]
    assert (run / "report.md").exists() and (run / "caffe.log").exists()


def test_a_run_waits_for_another_building_its_data(synth_lmdb, tmp_path):
    """Two runs started together on one dataset: the second waits for the first's build of the
    LMDBs (here a live claim held by this test) instead of failing on its temp folder."""
    data = tmp_path / "d"
    data.mkdir()
    exp = experiment(synth_lmdb, solver={"max_iter": 10}, validation={"interval": 10})
    exp["data"] = {**exp["data"], "train": str(data / "train"), "val": str(data / "val")}
    exp["data"]["build"] = build_section(synth_lmdb / "raw")
    busy = data / ".train.partial-other"
    busy.mkdir()
    other = claim(busy)  # another process's build, as the child sees it: a live lock
    proc = orchestrate_bg("run", str(write_exp(tmp_path, exp)), "--run-dir", str(tmp_path / "run"))
    try:
        time.sleep(3)
        assert proc.poll() is None, proc.communicate()
        assert not (data / "train").exists()  # it waits: nothing of its own built meanwhile
    finally:
        other.release()
        shutil.rmtree(busy)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert f"waiting for pid {os.getpid()}, which is building {data / 'train'}" in out, out
    assert (data / "train" / "stats.json").is_file()
