"""Validation on a real Caffe net, early stop and lr-on-plateau in a real run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator import metrics
from orchestrator.jsonio import read_jsonl
from orchestrator.train.hooks.validation import validate
from tests.orchestrator.conftest import experiment, orchestrate, write_exp

pytestmark = pytest.mark.caffe

NET = """
layer { name: "score" type: "Input" top: "score" input_param { shape { dim: 2 dim: 3 dim: 2 dim: 3 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 dim: 1 dim: 2 dim: 3 } } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
"""


def test_validate_on_a_real_net_matches_hand_confusion(tmp_path):
    import caffe

    p = tmp_path / "v.prototxt"
    p.write_text(NET)
    net = caffe.Net(str(p), caffe.TEST)
    rng = np.random.default_rng(3)
    net.blobs["score"].data[...] = rng.normal(size=(2, 3, 2, 3))
    label = rng.integers(0, 3, size=(2, 1, 2, 3)).astype(np.float32)
    label[0, 0, 0, 0] = 255
    net.blobs["label"].data[...] = label
    pred = net.blobs["score"].data.argmax(1)
    hand = np.zeros((3, 3), int)
    for t, q in zip(label.reshape(-1), pred.reshape(-1), strict=True):
        if t != 255:
            hand[int(t), int(q)] += 1
    out = validate(net, 1, 3, 255)
    assert out["confusion"] == hand.tolist()
    assert out["mean_iu"] == metrics.scores(hand)["mean_iu"]


def test_early_stop_and_lr_on_plateau(synth_lmdb, tmp_path):
    exp = experiment(
        synth_lmdb,
        solver={"max_iter": 200},
        validation={"interval": 10},
        early_stop={"enabled": True, "patience": 3, "min_delta": 1.0},
        lr_on_plateau={"enabled": True, "patience": 1, "min_delta": 1.0, "factor": 0.5},
    )
    run = tmp_path / "run"
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-1500:]
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "early_stopped" and s["iterations"] == 40  # best at 10, 3 validations without gain
    lrs = {m["iter"]: m["lr"] for m in read_jsonl(run / "metrics.jsonl")}
    assert lrs[10] == np.float32(0.002) and lrs[21] == np.float32(0.001) and lrs[31] == np.float32(0.0005)
    assert sum(f["code"] == "lr-reduced" for f in s["findings"]) == 3
