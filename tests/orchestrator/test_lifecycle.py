"""The lifecycle matrix (issue 21): every BVLC-compatible public net of the corpus
(tests/nets/public.py REGISTRY, kind "bvlc") goes through the whole life a user gives it, on
synthetic data: `check` (no error) -> a 20-iteration `run` with validation and its pictures,
killed with SIGKILL after its first snapshot and `resume`d -> `predict --eval` equal to the
run's best validation (mIoU to 1e-6) -> the last snapshot continued by Caffe's own
`caffe train --snapshot`.

What the test changes in each public net, and only that (the parsed net is edited):
- its data layers (any phase) become the data stage's LMDB Data layers, one per top (the
  image top and every label top read the synthetic set), batch 2 in TRAIN, 1 in TEST;
- the classifier layers (num_output = the net's classes, a group of that size) get the
  synthetic set's 5 classes;
- every other num_output is divided by WIDTH (VGG16 and AlexNet at full width take seconds per
  iteration on 2 CPU cores: the matrix proves the net's structure, not its capacity);
- a net the registry marks with `label_crop` (the valid-convolution U-Net) gets its label
  cropped to its scores inside the net (tests.nets.public.add_label_crop);
- a deploy net (no label, no loss: dilation8) gets what its training net adds: a fixed
  bilinear 8x upsampling of its scores, the label cropped inside the net to them (the
  context net scores the centre: input S gives (S - 372) / 8 scores), SoftmaxWithLoss and
  Accuracy; its Softmax output goes.
Weights: the nets without fillers get what a user brings, random He-scaled weights saved
as a caffemodel (the backbone only for FCN, whose classifiers start at zero on purpose;
every layer for DIGITS' FCN-AlexNet and dilation8, as their surgery tools save them).
The measured check seconds and run seconds per iteration are printed (-s) per net."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orchestrator.jsonio import read_jsonl
from tests.nets.public import BVLC_NETS, PUBLIC, REGISTRY, add_label_crop, backbone_weights, full_weights
from tests.orchestrator.conftest import experiment, orchestrate, orchestrate_bg, synth_splits, write_exp
from tests.orchestrator.test_interop import caffe_train, display_solver

pytestmark = [pytest.mark.caffe, pytest.mark.slow]

WIDTH = 16  # num_output divisor for the layers that are not classifiers
CLASSES = 5
# input side per net where the registry's is larger than needed (dilation8: (S - 372) / 8 >= 2
# scores a side); a net the registry gives a side above 64 trains at that side
SIDE = {"dilation8-camvid": 388}
# base_lr per net: FCN's losses are summed over the 32x32 pixels (normalize: false): 1e-6 acts like 1e-3 per pixel;
# with random backbones on raw pixels, gradients are clipped (solver.clip_gradients)
SOLVER = {n: 1e-6 for n in ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn-alexnet", "siftflow-fcn32s")}
# deploy nets: (score blob, where its first score sits in the input, upsampling factor)
DEPLOY = {"dilation8-camvid": ("ctx_final", 182, 8)}


def _data_layers(data: Path, image: str, labels: tuple[str, ...]) -> list[Any]:
    from caffe.proto import caffe_pb2

    out = []
    for phase, split, batch in ((caffe_pb2.TRAIN, "train", 2), (caffe_pb2.TEST, "val", 1)):
        for top, lmdb in [(image, "images")] + [(t, "labels") for t in labels]:
            x = caffe_pb2.LayerParameter(name=f"{top}_{split}", type="Data", top=[top])
            x.include.add(phase=phase)
            x.data_param.source, x.data_param.batch_size = str(data / split / lmdb), batch
            x.data_param.backend = caffe_pb2.DataParameter.LMDB
            if lmdb == "images":
                x.transform_param.mean_value.extend([110, 112, 111])
            out.append(x)
    return out


def _narrow(net: Any, classes: set[int]) -> None:
    """Classifiers to CLASSES outputs, every other num_output divided by WIDTH (whole groups)."""
    for layer in net.layer:
        if layer.type not in ("Convolution", "Deconvolution", "InnerProduct"):
            continue
        p = layer.inner_product_param if layer.type == "InnerProduct" else layer.convolution_param
        if p.num_output in classes:
            p.num_output = CLASSES
            if layer.type != "InnerProduct" and p.group in classes:
                p.group = CLASSES
        else:
            g = max(1, p.group) if layer.type != "InnerProduct" else 1
            p.num_output = max(g, p.num_output // WIDTH // g * g)


def _deploy_to_train(net: Any, name: str) -> None:
    """What a deploy net's training net adds (see the module docstring)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    score, offset, factor = DEPLOY[name]
    del net.input[:]
    del net.input_shape[:]
    kept = [x for x in net.layer if x.type != "Softmax"]
    del net.layer[:]
    net.layer.extend(kept)
    k = 2 * factor - factor % 2
    extra = f"""
layer {{ name: "upscore" type: "Deconvolution" bottom: "{score}" top: "upscore" param {{ lr_mult: 0 }}
  convolution_param {{ num_output: {CLASSES} group: {CLASSES} kernel_size: {k} stride: {factor}
    pad: {(factor - 1) // 2 + 1} bias_term: false weight_filler {{ type: "bilinear" }} }} }}
layer {{ name: "label_crop" type: "Crop" bottom: "label" bottom: "upscore" top: "label_crop"
  crop_param {{ axis: 2 offset: {offset} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "upscore" bottom: "label_crop" top: "loss"
  propagate_down: true propagate_down: false loss_param {{ ignore_label: 255 normalization: VALID }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "upscore" bottom: "label_crop" top: "accuracy"
  include {{ phase: TEST }} accuracy_param {{ ignore_label: 255 }} }}
"""
    net.MergeFrom(text_format.Parse(extra, caffe_pb2.NetParameter()))


def trainable(name: str, data: Path, out: Path) -> Path:
    """The public net as a user's train_val prototxt on the data stage's LMDBs (docstring)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    entry = REGISTRY[name]
    net = text_format.Parse((PUBLIC / entry.file).read_text(), caffe_pb2.NetParameter())
    classes = {entry.num_classes} | ({3} if name.startswith("siftflow") else set())  # siftflow's geo head
    _narrow(net, classes)
    labels = entry.label_tops
    if not entry.loss:
        _deploy_to_train(net, name)
        labels = ("label",)
    kept = [x for x in net.layer if x.name not in entry.data_layers]
    del net.layer[:]
    net.layer.extend(_data_layers(data, entry.image_top, labels) + kept)
    add_label_crop(net, name)  # a valid-convolution U-Net: its label cropped to the score, in the net
    path = out / f"{name}.prototxt"
    path.write_text(text_format.MessageToString(net))
    return path


def weights_for(name: str, net: Path, out: Path) -> Path:
    entry = REGISTRY[name]
    if entry.zero_classifiers:  # FCN: an ImageNet backbone, the classifiers start at zero
        return backbone_weights(net, entry.backbone, out / "backbone.caffemodel")
    return full_weights(net, out / "weights.caffemodel", zero=("score_fr",) if "fcn" in name else ())


@pytest.fixture(scope="module")
def synth_at(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """side -> 8 train + 4 val synthetic images at side x side (made once per side)."""
    made: dict[int, Path] = {}

    def at(side: int) -> Path:
        if side not in made:
            made[side] = synth_splits(tmp_path_factory.mktemp(f"side{side}"), seed=3, train=8, val=4, side=side)
        return made[side]

    return at


def side_of(name: str) -> int | None:
    """The input side a net needs (None: any; the 32x32 set): SIDE, else the registry's when
    its geometry does not fit any size (above 64)."""
    return SIDE.get(name) or (REGISTRY[name].size if REGISTRY[name].size > 64 else None)


def _kill_after_first_snapshot(exp: Path, run: Path) -> None:
    """`orchestrate run` killed with SIGKILL once its first snapshot is complete."""
    proc = orchestrate_bg("run", str(exp), "--run-dir", str(run), stdout=subprocess.DEVNULL)
    end = time.monotonic() + 600
    while not (run / "snapshots" / "iter_5" / "manifest.json").exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < end, "no snapshot at iteration 5"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # the worker dies with its parent
    proc.wait()
    time.sleep(0.3)


@pytest.mark.parametrize("name", BVLC_NETS)
def test_public_net_lifecycle(name, synth_lmdb, request, tmp_path):
    side = side_of(name)
    data = request.getfixturevalue("synth_at")(side) if side else synth_lmdb
    net = trainable(name, data, tmp_path)
    exp = experiment(
        data,
        net={"prototxt": str(net), "num_classes": CLASSES, "ignore_label": 255},
        weights=str(weights_for(name, net, tmp_path)),
        solver={"type": "SGD", "base_lr": SOLVER.get(name, 0.01), "max_iter": 20, "clip_gradients": 10.0},
        validation={"interval": 10, "pictures": 2},
        snapshot={"interval": 5, "keep_last": 2},
    )
    exp_path = write_exp(tmp_path, exp)
    t0 = time.monotonic()
    r = orchestrate("check", str(exp_path), timeout=600)
    check_s = time.monotonic() - t0
    assert r.returncode == 0 and "ERROR" not in r.stdout + r.stderr, (r.stdout + r.stderr)[-4000:]
    run = tmp_path / "run"
    _kill_after_first_snapshot(exp_path, run)
    killed_at = read_jsonl(run / "metrics.jsonl")[-1]["iter"]
    r = orchestrate("resume", str(run), timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["iterations"] == 20
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["iter"] for m in metrics] == list(range(1, 21))
    assert (run / "best" / "best.json").exists() and list((run / "best").glob("val_*.png"))
    assert not any(f["code"] == "pictures-failed" for f in summary["findings"])
    # predict --eval: the best snapshot scores what its validation scored
    out = tmp_path / "pred"
    r = orchestrate("predict", str(run), "--list", str(data / "raw" / "val.txt"), "--out", str(out), "--eval")
    assert (out / "eval.json").exists(), r.stderr[-3000:]
    best = next(v for v in read_jsonl(run / "val.jsonl") if v["iter"] == summary["best"]["iteration"])
    assert abs(json.loads((out / "eval.json").read_text())["mean_iu"] - best["mean_iu"]) < 1e-6
    # Caffe's own binary continues the last snapshot
    elsewhere = tmp_path / "caffe"
    elsewhere.mkdir()
    losses = caffe_train(
        display_solver(run, elsewhere, 22), run / "snapshots" / "iter_20" / "state.solverstate", elsewhere
    )
    assert {21, 22} <= set(losses) and np.isfinite([losses[21], losses[22]]).all()
    per_iter = float(np.median([m["seconds"] for m in metrics[1:]]))
    print(f"\nlifecycle {name}: check {check_s:.1f} s, run {per_iter:.3f} s/iteration (killed at {killed_at})")
