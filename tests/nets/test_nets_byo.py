"""Bring your own net: the doctor's defects seen on users' nets, each on a small net through
real Caffe (the probe in its child) or through `orchestrate check`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError
from nets import forks
from nets.doctor import diagnose
from nets.graph import Context
from nets.prototxt import load_net
from orchestrator.cli import main

pytestmark = pytest.mark.caffe

DATA = (
    'layer { name: "data" type: "Input" top: "data" top: "{label}" input_param { '
    "shape { dim: 1 dim: 3 dim: 16 dim: 16 } shape { dim: 1 dim: 1 dim: 16 dim: 16 } } }\n"
)
CONV = (
    'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
    "convolution_param {{ num_output: {n} kernel_size: 3 pad: 1 {filler} }} }}\n"
)
MSRA = 'weight_filler { type: "msra" }'
RELU = 'layer {{ name: "relu_{b}" type: "ReLU" bottom: "{b}" top: "{b}" }}\n'
UP = (
    'layer { name: "upscore" type: "Deconvolution" bottom: "score_fr" top: "upscore" param { lr_mult: 0 } '
    "convolution_param { num_output: 4 kernel_size: 4 stride: 2 bias_term: false } }\n"
    'layer { name: "score" type: "Crop" bottom: "upscore" bottom: "data" top: "score" '
    "crop_param { axis: 2 offset: 1 } }\n"
)
LOSS = (
    'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "{label}" top: "loss" '
    "loss_param {{ {param} }} }}\n"
)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def fcn_like(classifier_filler: str = "", label: str = "label", loss_param: str = "ignore_label: 255") -> str:
    """data -> conv (msra) -> ReLU -> pool -> score_fr -> upscore (no filler, group 1) -> Crop -> loss."""
    return (
        DATA.replace("{label}", label)
        + CONV.format(name="feat", bottom="data", n=8, filler=MSRA)
        + RELU.format(b="feat")
        + 'layer { name: "pool" type: "Pooling" bottom: "feat" top: "pool" '
        + "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
        + CONV.format(name="score_fr", bottom="pool", n=4, filler=classifier_filler).replace(
            "kernel_size: 3 pad: 1", "kernel_size: 1"
        )
        + UP
        + LOSS.format(label=label, param=loss_param)
    )


def test_probe_runs_the_net_the_run_runs(tmp_path):
    """The probe applies the run's bilinear surgery (group 1 over 4 channels: a diagonal
    kernel) and a zero classifier over live features is expected to output zeros."""
    found = [
        f
        for f in diagnose(write(tmp_path / "net.prototxt", fcn_like()), log_dir=str(tmp_path))
        if f.code != "no-validation"
    ]
    assert [f for f in found if f.severity == "error"] == []
    assert {(f.code, f.layer, f.severity) for f in found} == {
        ("zero-init", "score_fr", "info"),
        ("deconv-not-bilinear", "upscore", "info"),
    }
    # with a filler on the classifier, the surgery's kernel is what makes `score` live
    filled = diagnose(write(tmp_path / "filled.prototxt", fcn_like(MSRA)), log_dir=str(tmp_path))
    assert [f for f in filled if f.code != "no-validation"] == [f for f in found if f.code == "deconv-not-bilinear"]


def test_without_the_runs_surgery_the_upsampling_stays_zero(tmp_path):
    """surgery.bilinear: false: nothing fills the Deconvolution, so it is a zero layer too."""
    path = write(tmp_path / "net.prototxt", fcn_like(MSRA))
    found = {(f.code, f.layer): f for f in diagnose(path, log_dir=str(tmp_path), surgery=False)}
    assert found[("deconv-not-bilinear", "upscore")].severity == "warning"
    assert "surgery is off" in found[("deconv-not-bilinear", "upscore")].message
    assert found[("zero-init", "upscore")].severity == "error"
    assert found[("zero-init", "upscore")].data["reason"] == "frozen"  # lr_mult 0: never learns


def test_probe_fills_label_inputs_by_their_consumers(tmp_path):
    import caffe

    from nets import probe
    from nets.prototxt import parse_net

    text = (
        'layer { name: "data" type: "Input" top: "data" top: "sem" top: "geo" input_param { '
        "shape { dim: 1 dim: 3 dim: 16 dim: 16 } shape { dim: 1 dim: 1 dim: 16 dim: 16 } "
        "shape { dim: 1 dim: 1 dim: 16 dim: 16 } } }\n"
        + CONV.format(name="score_sem", bottom="data", n=5, filler=MSRA)
        + CONV.format(name="score_geo", bottom="data", n=3, filler=MSRA)
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score_sem" bottom: "sem" top: "loss" '
        "loss_param { ignore_label: 255 } }\n"
        + 'layer { name: "acc" type: "Accuracy" bottom: "score_geo" bottom: "geo" top: "acc" }\n'
    )
    path = write(tmp_path / "two.prototxt", text)
    net = caffe.Net(path, caffe.TRAIN)
    probe.fill_inputs(net, parse_net(text), seed=0)
    sem, geo = net.blobs["sem"].data, net.blobs["geo"].data
    assert set(np.unique(sem)) <= set(range(5)) | {255} and 255 in sem and len(np.unique(sem)) > 3
    assert set(np.unique(geo)) <= set(range(3))  # the accuracy has no ignore_label
    assert np.abs(net.blobs["data"].data).max() > 1  # the image is noise, not a label
    # and through the doctor: labels named sem/geo no longer crash the loss
    assert [f for f in diagnose(path, log_dir=str(tmp_path)) if f.severity == "error"] == []


def test_unknown_layer_type_is_blamed_on_its_own_layer(tmp_path):
    text = (
        DATA.replace("{label}", "label")
        + CONV.format(name="conv1", bottom="data", n=4, filler=MSRA)
        + 'layer { name: "conv1_bn" type: "NoSuchLayer" bottom: "conv1" top: "conv1" }\n'
    )
    [invalid] = [
        f for f in diagnose(write(tmp_path / "net.prototxt", text), log_dir=str(tmp_path)) if f.code == "net-invalid"
    ]
    assert invalid.layer == "conv1_bn" and "NoSuchLayer" in invalid.message


def test_fork_layer_types_get_their_bvlc_equivalent(tmp_path):
    """`type: "BN"` parses (types are strings) but BVLC Caffe has no such layer: the net is bad
    input (exit 2) named with every fork layer, before any probe runs."""
    text = (
        DATA.replace("{label}", "label")
        + CONV.format(name="conv1", bottom="data", n=4, filler=MSRA)
        + 'layer { name: "conv1_bn" type: "BN" bottom: "conv1" top: "conv1" }\n'
        + 'layer { name: "up" type: "Upsample" bottom: "conv1" top: "up" }\n'
    )
    with pytest.raises(UserError) as e:
        diagnose(write(tmp_path / "net.prototxt", text), log_dir=str(tmp_path))
    message = str(e.value)
    assert "caffe-segnet" in message and "conv1_bn" in message and "up" in message
    assert "BatchNorm" in message and "Deconvolution" in message and "cannot build" in message
    # the static rule says the same over a parsed net
    found = forks.check_fork_layers(load_net(tmp_path / "net.prototxt"), Context())
    assert {f.layer for f in found} == {"conv1_bn", "up"} and all(f.severity == "error" for f in found)
    assert "BatchNorm" in found[0].fix


def test_empty_and_binary_files_are_clear_errors(tmp_path, capsys):
    for text in ("", "# only a comment\n\n"):
        with pytest.raises(UserError, match="no layers"):
            diagnose(write(tmp_path / "empty.prototxt", text))
    binary = tmp_path / "w.caffemodel"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(UserError, match="binary") as e:
        diagnose(str(binary))
    assert len(str(e.value)) < 400 and "\\x" not in str(e.value)
    assert main(["check", "--prototxt", write(tmp_path / "e.prototxt", "")]) == 2
    assert "no findings" not in capsys.readouterr().out


def stats_dir(root: Path, **stats) -> str:
    root.mkdir()
    (root / "stats.json").write_text(json.dumps(stats))
    return str(root)


def test_check_takes_the_data_stage_output(tmp_path, capsys):
    """Labels 0..4 plus 255 against 4 scores and no ignore_label: the label-range rules fire
    before the probe, and the probe feeds only labels Caffe can take."""
    data = stats_dir(tmp_path / "data", num_classes=5, ignore_label=255)
    net = write(tmp_path / "net.prototxt", fcn_like(MSRA, label="gt", loss_param="normalization: VALID"))
    rc = main(["check", "--prototxt", net, "--data", data, "--json"])
    found = json.loads(capsys.readouterr().out)
    assert rc == 1
    codes = {(f["code"], f["layer"]) for f in found if f["severity"] == "error"}
    assert {("num-output-mismatch", "score_fr"), ("ignore-label-mismatch", "loss")} <= codes
    assert "net-invalid" not in {f["code"] for f in found}
    # a split data stage (train/ and val/): the train side's stats
    split = tmp_path / "split"
    split.mkdir()
    stats_dir(split / "train", num_classes=4, ignore_label=255)
    assert main(["check", "--prototxt", net, "--data", str(split), "--static", "--json"]) == 1
    assert {f["code"] for f in json.loads(capsys.readouterr().out) if f["severity"] == "error"} == {
        "ignore-label-mismatch"
    }
    assert main(["check", "--prototxt", net, "--data", str(tmp_path / "missing")]) == 2
    assert "stats.json" in capsys.readouterr().err


def test_the_probe_still_reports_zeros_nothing_static_explains(tmp_path):
    """A ReLU fed only negative values: dead-top where it starts, zero-gradient below it."""
    text = (
        DATA.replace("{label}", "label")
        + CONV.format(name="conv1", bottom="data", n=4, filler=MSRA)
        + 'layer { name: "shift" type: "Power" bottom: "conv1" top: "shift" power_param { scale: 0 shift: -1 } }\n'
        + RELU.format(b="shift")
        + CONV.format(name="score", bottom="shift", n=4, filler=MSRA)
        + LOSS.format(label="label", param="ignore_label: 255")
    )
    found = {(f.code, f.layer) for f in diagnose(write(tmp_path / "net.prototxt", text), log_dir=str(tmp_path))}
    assert {("dead-top", "relu_shift"), ("zero-gradient", "conv1")} <= found
    assert not {f for f in found if f[0] == "zero-init"}


def test_surgery_the_probe_cannot_do_is_a_finding(tmp_path):
    """Channels the static rules cannot follow (a Concat): the probe's surgery finds that one
    bilinear kernel would mix 8 channels into 4, and says so instead of dying."""
    text = (
        DATA.replace("{label}", "label")
        + CONV.format(name="a", bottom="data", n=4, filler=MSRA)
        + CONV.format(name="b", bottom="data", n=4, filler=MSRA)
        + 'layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "score_fr" }\n'
        + UP
        + LOSS.format(label="label", param="ignore_label: 255")
    )
    path = write(tmp_path / "net.prototxt", text)
    assert "deconv-group" not in {f.code for f in diagnose(path, dynamic=False)}
    found = diagnose(path, log_dir=str(tmp_path))
    [f] = [f for f in found if f.code == "deconv-group"]
    assert (f.severity, f.layer, f.data) == ("error", "upscore", {"surgery": "refused"})
    assert "mix" in f.message and "net-invalid" not in {g.code for g in found}


def test_labels_caffe_cannot_take_are_found_without_crashing(tmp_path):
    """Labels 0..3 and 255 read from an LMDB by a net with 4 scores and no ignore_label: the
    probe reports them (and does not feed them to Caffe); with stats.json the static rule says it."""
    from tests.nets.conftest import easy_pairs, write_lmdb

    images, labels = easy_pairs(4, 16, 4)
    labels[:, :, :2] = 255
    src = [write_lmdb(tmp_path / "images", images), write_lmdb(tmp_path / "labels", labels)]
    data = "".join(
        f'layer {{ name: "{t}" type: "Data" top: "{t}" data_param {{ source: "{s}" backend: LMDB batch_size: 2 }} }}\n'
        for t, s in zip(("data", "label"), src, strict=True)
    )
    net = write(tmp_path / "net.prototxt", data + fcn_like(MSRA, loss_param="normalization: VALID").split("\n", 1)[1])
    found = diagnose(net, log_dir=str(tmp_path))
    [bad] = [f for f in found if f.code == "label-out-of-range"]
    assert (bad.severity, bad.layer, bad.data["values"], bad.data["classes"]) == ("error", "loss", [255.0], 4)
    assert "ignore_label" in bad.fix and "net-invalid" not in {f.code for f in found}
    with_stats = {
        f.code for f in diagnose(net, data_stats={"num_classes": 4, "ignore_label": 255}, log_dir=str(tmp_path))
    }
    assert "ignore-label-mismatch" in with_stats and "label-out-of-range" not in with_stats
