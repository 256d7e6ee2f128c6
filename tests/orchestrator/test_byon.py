"""Bring your own net (`net: prototxt:`): validation over the whole val set with the net's own
blob names, a clear finding when it cannot validate, and surgery that never stops a run.
Real Caffe throughout, on the small synthetic LMDBs (the CamVid nets: test_byon_camvid.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from orchestrator import metrics
from orchestrator.config import experiment as cfgmod
from orchestrator.jsonio import read_jsonl
from orchestrator.train.hooks.validation import validate
from orchestrator.train.worker import apply_surgery
from tests.orchestrator.conftest import experiment, orchestrate, write_exp

pytestmark = pytest.mark.caffe

# a user's net on the synthetic data (5 classes, ignore 255), with its own blob names:
# the label top is `gt`, the class scores `cls_score` (no blob is called score or label)
DATA_LAYERS = """
layer { name: "data" type: "Data" top: "data" %(phase)s
  data_param { source: "%(d)s/images" batch_size: %(b)d backend: LMDB } }
layer { name: "gt" type: "Data" top: "gt" %(phase)s
  data_param { source: "%(d)s/labels" batch_size: %(b)d backend: LMDB } }
"""
USER_NET = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
%(middle)s
layer { name: "cls_score" type: "Convolution" bottom: "%(top)s" top: "cls_score"
  param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 5 kernel_size: 1 weight_filler { type: "msra" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "cls_score" bottom: "gt" top: "loss"
  loss_param { ignore_label: 255 normalization: VALID } }
"""
# ENet-style learned upsampling: 16 channels in, 8 out, lr_mult 1 and its own filler
LEARNED_UP = """
layer { name: "down" type: "Convolution" bottom: "conv1" top: "down" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "msra" } } }
layer { name: "relu2" type: "ReLU" bottom: "down" top: "down" }
layer { name: "up" type: "Deconvolution" bottom: "down" top: "up" param { lr_mult: 1 }
  convolution_param { num_output: 8 kernel_size: 4 stride: 2 pad: 1 bias_term: false weight_filler { type: "msra" } } }
layer { name: "relu3" type: "ReLU" bottom: "up" top: "up" }
"""


def user_net(tmp_path: Path, data: Path, split: str, batch: int, middle: str = "", top: str = "conv1") -> Path:
    p = tmp_path / f"{split}.prototxt"
    p.write_text(DATA_LAYERS % {"d": data / split, "b": batch, "phase": ""} + USER_NET % {"middle": middle, "top": top})
    return p


def run_user_net(tmp_path: Path, lmdb: Path, net: dict, val_data: bool = True, **over) -> tuple[Path, object]:
    """`orchestrate run` (no --force) of a user net on the synthetic data; data.val only with val_data."""
    run = tmp_path / "run"
    exp = experiment(lmdb, **over)
    exp["net"] = net
    if not val_data:
        del exp["data"]["val"]
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run))
    return run, r


def test_user_net_validates_the_whole_val_set_with_its_own_blob_names(synth_lmdb, tmp_path):
    # val batch 5 over 12 images: 3 batches, of which the last counts only 2 images
    net = {
        "prototxt": str(user_net(tmp_path, synth_lmdb, "train", 4)),
        "val_prototxt": str(user_net(tmp_path, synth_lmdb, "val", 5)),
    }
    run, r = run_user_net(tmp_path, synth_lmdb, net)
    assert r.returncode == 0, r.stderr[-2000:]
    val = read_jsonl(run / "val.jsonl")
    assert [v["iter"] for v in val] == [20, 40] and val[-1]["images"] == 12
    # the same numbers from the weights at iteration 40, every val image exactly once
    import caffe

    test = caffe.Net(str(run / "val.prototxt"), str(run / "snapshots" / "iter_40" / "weights.caffemodel"), caffe.TEST)
    conf = np.zeros((5, 5), np.int64)
    for take in (5, 5, 2):
        test.forward()
        conf += metrics.confusion(
            test.blobs["cls_score"].data[:take].argmax(1), test.blobs["gt"].data[:take, 0], 5, 255
        )
    assert val[-1]["mean_iu"] == pytest.approx(metrics.scores(conf)["mean_iu"], abs=1e-12)
    assert val[-1]["pixel_accuracy"] == pytest.approx(metrics.scores(conf)["pixel_accuracy"], abs=1e-12)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best"]["iteration"] == max(val, key=lambda v: v["mean_iu"])["iter"]  # the first of equals
    assert not [f for f in summary["findings"] if f["code"] == "no-validation"]


def test_train_val_file_is_its_own_val_net(synth_lmdb, tmp_path):
    p = tmp_path / "train_val.prototxt"
    p.write_text(
        DATA_LAYERS % {"d": synth_lmdb / "train", "b": 4, "phase": "include { phase: TRAIN }"}
        + DATA_LAYERS % {"d": synth_lmdb / "val", "b": 6, "phase": "include { phase: TEST }"}
        + USER_NET % {"middle": "", "top": "conv1"}
    )
    run, r = run_user_net(tmp_path, synth_lmdb, {"prototxt": str(p)}, val_data=False, validation={"interval": 40})
    assert r.returncode == 0, r.stderr[-2000:]
    assert [(v["iter"], v["images"]) for v in read_jsonl(run / "val.jsonl")] == [(40, 12)]


def test_validation_capped_by_max_images(synth_lmdb, tmp_path):
    net = {
        "prototxt": str(user_net(tmp_path, synth_lmdb, "train", 4)),
        "val_prototxt": str(user_net(tmp_path, synth_lmdb, "val", 4)),
    }
    run, r = run_user_net(tmp_path, synth_lmdb, net, validation={"interval": 40, "max_images": 7})
    assert r.returncode == 0, r.stderr[-2000:]
    assert [v["images"] for v in read_jsonl(run / "val.jsonl")] == [7]


DUMMY_VAL = """
layer { name: "data" type: "DummyData" top: "data" top: "gt"
  dummy_data_param { shape { dim: 2 dim: 3 dim: 32 dim: 32 } shape { dim: 2 dim: 1 dim: 32 dim: 32 }
                     data_filler { type: "gaussian" std: 50 } data_filler { type: "constant" value: 1 } } }
"""


def _dummy_val(tmp_path: Path, train: Path) -> Path:
    text = train.read_text()
    body = text[text.index('layer { name: "conv1"') :]
    p = tmp_path / "dummy_val.prototxt"
    p.write_text(DUMMY_VAL + body)
    return p


def test_uncountable_val_net_warns_no_validation(synth_lmdb, tmp_path):
    train = user_net(tmp_path, synth_lmdb, "train", 4)
    net = {"prototxt": str(train), "val_prototxt": str(_dummy_val(tmp_path, train))}
    run, r = run_user_net(tmp_path, synth_lmdb, net, val_data=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (run / "val.jsonl").exists()
    summary = json.loads((run / "summary.json").read_text())
    warn = [f for f in summary["findings"] if f["code"] == "no-validation"]
    assert warn and warn[0]["severity"] == "warning"
    assert "DummyData" in warn[0]["message"] and "validation.max_images" in warn[0]["fix"]


def test_uncountable_val_net_uses_max_images(synth_lmdb, tmp_path):
    train = user_net(tmp_path, synth_lmdb, "train", 4)
    net = {"prototxt": str(train), "val_prototxt": str(_dummy_val(tmp_path, train))}
    run, r = run_user_net(tmp_path, synth_lmdb, net, val_data=False, validation={"interval": 40, "max_images": 4})
    assert r.returncode == 0, r.stderr[-2000:]
    val = read_jsonl(run / "val.jsonl")
    assert [v["images"] for v in val] == [4]
    assert val[0]["pixel_accuracy"] == val[0]["mean_accuracy"]  # every label is 1: one class to score
    info = [f for f in json.loads((run / "summary.json").read_text())["findings"] if f["code"] == "validation-size"]
    assert info and "max_images = 4" in info[0]["message"]


def test_find_score_label_reads_the_loss_bottoms():
    from orchestrator.train.hooks.validation import find_score_label

    assert find_score_label(
        [
            ("Data", []),
            ("Convolution", ["data"]),
            ("SoftmaxWithLoss", ["fc_sem", "sem"]),
            ("SoftmaxWithLoss", ["fc_geo", "geo"]),
        ]
    ) == ("fc_sem", "sem")
    assert find_score_label([("Accuracy", ["conv_classifier", "label"])]) == ("conv_classifier", "label")
    assert find_score_label([("Softmax", ["x"])]) == ("score", "label")


def test_scores_must_be_full_resolution():
    from orchestrator.train.hooks.validation import shape_problem

    assert shape_problem((2, 5, 8, 8), (2, 1, 8, 8)) is None
    assert shape_problem((2, 5, 8, 8), (2, 8, 8)) is None
    assert "full-resolution" in shape_problem((2, 5, 4, 4), (2, 1, 8, 8))
    assert "not N x C x H x W" in shape_problem((2, 5), (2, 1, 8, 8))


VAL_NET = """
layer { name: "in" type: "Input" top: "fc_sem" top: "sem" input_param { shape { dim: 4 dim: 3 dim: 2 dim: 2 }
  shape { dim: 4 dim: 1 dim: 2 dim: 2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc_sem" bottom: "sem" top: "loss" }
"""


def test_validate_counts_exactly_the_images_asked(tmp_path):
    import caffe

    (tmp_path / "v.prototxt").write_text(VAL_NET)
    net, rng = caffe.Net(str(tmp_path / "v.prototxt"), caffe.TEST), np.random.default_rng(0)
    net.blobs["fc_sem"].data[...], net.blobs["sem"].data[...] = (
        rng.normal(size=(4, 3, 2, 2)),
        rng.integers(0, 3, (4, 1, 2, 2)),
    )
    # Input blobs keep their values across forward(): two batches of 4, of which 6 images count
    out = validate(net, math.ceil(6 / 4), 3, None, score="fc_sem", label="sem", images=6)
    assert int(np.sum(out["confusion"])) == 6 * 4


SURGERY_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 16 dim: 4 dim: 4 } } }
layer { name: "up_learned" type: "Deconvolution" bottom: "data" top: "a" param { lr_mult: 1 }
  convolution_param { num_output: 8 kernel_size: 4 stride: 2 pad: 1 bias_term: false weight_filler { type: "msra" } } }
layer { name: "up_mixing" type: "Deconvolution" bottom: "data" top: "b" param { lr_mult: 0 }
  convolution_param { num_output: 8 kernel_size: 4 stride: 2 pad: 1 bias_term: false } }
layer { name: "up_ok" type: "Deconvolution" bottom: "data" top: "c" param { lr_mult: 0 }
  convolution_param { num_output: 16 group: 16 kernel_size: 4 stride: 2 pad: 1 bias_term: false } }
layer { name: "up_loaded" type: "Deconvolution" bottom: "data" top: "d" param { lr_mult: 0 }
  convolution_param { num_output: 16 group: 16 kernel_size: 4 stride: 2 pad: 1 bias_term: false } }
"""


@pytest.fixture()
def surgery_net(tmp_path):
    """A pycaffe net with four upsampling Deconvolutions; a weights file provides `up_loaded` only."""
    import caffe

    from nets.weights import transplant

    p = tmp_path / "s.prototxt"
    p.write_text(SURGERY_NET)
    lines = SURGERY_NET.strip().splitlines()
    only = tmp_path / "only_loaded.prototxt"
    only.write_text("\n".join(lines[:1] + lines[-2:]))
    src = caffe.Net(str(only), caffe.TEST)
    src.params["up_loaded"][0].data[...] = np.random.default_rng(1).normal(size=(16, 1, 4, 4))
    w = tmp_path / "w.caffemodel"
    src.save(str(w))
    net = caffe.Net(str(p), caffe.TEST)
    transplant(net, str(w))  # as the worker does before surgery
    return net, p, w, src.params["up_loaded"][0].data.copy()


def _exp(**over) -> cfgmod.Experiment:
    return cfgmod.from_dict({"name": "t", "data": {"train": "unused"}, **over})


def test_default_surgery_skips_learned_and_loaded_and_never_raises(surgery_net):
    from nets.bilinear import is_bilinear

    net, p, w, loaded = surgery_net
    net.params["up_learned"][0].data[...] = 0.5
    found = apply_surgery(net, str(p), _exp(weights=str(w)))
    by = {(f.code, f.layer): f for f in found}
    assert by[("surgery", "up_ok")].severity == "info" and is_bilinear(net.params["up_ok"][0].data, 16)
    assert by[("surgery-skipped", "up_learned")].severity == "info"
    assert np.all(net.params["up_learned"][0].data == 0.5)  # left to its filler
    mixing = by[("surgery-skipped", "up_mixing")]
    assert mixing.severity == "warning" and "mix" in mixing.message and "constant 0" in mixing.message
    assert by[("surgery-skipped", "up_loaded")].severity == "info"
    assert np.array_equal(net.params["up_loaded"][0].data, loaded)  # the file's weights kept


def test_named_surgery_that_cannot_be_done_is_a_warning(surgery_net):
    from nets.bilinear import is_bilinear

    net, p, w, loaded = surgery_net
    found = apply_surgery(net, str(p), _exp(weights=str(w), surgery={"layers": ["up_loaded", "up_mixing", "nope"]}))
    by = {(f.code, f.layer): f for f in found}
    assert is_bilinear(net.params["up_loaded"][0].data, 16)  # named: done even over the file's weights
    assert by[("surgery-skipped", "up_mixing")].severity == "warning"
    nope = by[("surgery-skipped", "nope")]
    assert nope.severity == "warning" and "up_ok" in nope.message


def test_learned_upsampling_net_trains(synth_lmdb, tmp_path):
    net = {
        "prototxt": str(user_net(tmp_path, synth_lmdb, "train", 4, LEARNED_UP, "up")),
        "val_prototxt": str(user_net(tmp_path, synth_lmdb, "val", 4, LEARNED_UP, "up")),
    }
    run, r = run_user_net(tmp_path, synth_lmdb, net)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    skipped = [f for f in summary["findings"] if f["code"] == "surgery-skipped"]
    assert skipped and skipped[0]["layer"] == "up" and skipped[0]["severity"] == "info"
    assert (run / "val.jsonl").exists()
