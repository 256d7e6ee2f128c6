"""Bring your own net on real data: a BVLC port of SegNet-Basic and FCN's voc-fcn-alexnet, both
public net definitions (tests/orchestrator/data, headers name their source), train 50
iterations on CamVid at 120x90 through `net: prototxt:` + `val_prototxt:`, without --force,
and validate over the whole val set (101 images). Skipped when CamVid is absent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator.jsonio import read_jsonl
from tests.conftest import build_splits
from tests.orchestrator.conftest import orchestrate, write_exp

pytestmark = [pytest.mark.caffe, pytest.mark.slow]

DATA = Path(__file__).parent / "data"
PREFIX = "camvid-120x90/"  # the nets' sources, relative to where a user runs them


@pytest.fixture(scope="module")
def camvid120(camvid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data stage's output for CamVid at 120x90: train (92) and val (101) LMDBs."""
    out = tmp_path_factory.mktemp("byon") / "camvid-120x90"
    return build_splits(out, camvid, num_classes=11, ignore_label=11, root=camvid, resize=(120, 90))


def render(name: str, data: Path, out: Path, split: str) -> Path:
    """The net with its data layers reading `data`/<split> (the val net: same layers, val LMDBs)."""
    from bench.camvid_v3.segnet import render as render_text

    p = out / f"{split}_{name}"
    p.write_text(render_text(data, split, DATA / name))
    return p


def backbone_weights(net: Path, out: Path) -> Path:
    """Random (MSRA-scaled) weights for AlexNet's conv1..fc7, the layers FCN takes from the
    pretrained model; score_fr and upscore are not in the file, as with the real one."""
    import caffe

    text = net.read_text()
    body = text[text.index('layer {\n  name: "conv1"') : text.index('layer {\n  name: "score_fr"')]
    p = out / "backbone.prototxt"
    p.write_text(
        'layer { name: "data" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 3 dim: 90 dim: 120 } } }\n" + body
    )
    backbone, rng = caffe.Net(str(p), caffe.TEST), np.random.default_rng(0)
    for blobs in backbone.params.values():
        w = blobs[0].data
        w[...] = rng.normal(0, np.sqrt(2.0 / np.prod(w.shape[1:])), w.shape)
        blobs[1].data[...] = 0
    weights = out / "alexnet_backbone.caffemodel"
    backbone.save(str(weights))
    return weights


def train(tmp_path: Path, data: Path, name: str, solver: dict, **over) -> tuple[Path, dict]:
    """`orchestrate run` of the public net for 50 iterations, one validation at the end."""
    exp = {
        "name": name.split(".")[0],
        "seed": 0,
        "data": {"train": str(data / "train"), "val": str(data / "val")},
        "net": {
            "prototxt": str(render(name, data, tmp_path, "train")),
            "val_prototxt": str(render(name, data, tmp_path, "val")),
        },
        "solver": {**solver, "max_iter": 50},
        "validation": {"interval": 50},
        "snapshot": {"interval": 50},
        "progress": {"quiet": True},
        **over,
    }
    run = tmp_path / "run"
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run), timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["iterations"] == 50
    assert not [f for f in summary["findings"] if f["severity"] == "error"]
    val = read_jsonl(run / "val.jsonl")
    assert [v["iter"] for v in val] == [50] and val[0]["images"] == 101
    assert 0 < val[0]["pixel_accuracy"] <= 1 and len(val[0]["per_class_iu"]) == 11
    secs = [m["seconds"] for m in read_jsonl(run / "metrics.jsonl")][5:]
    print(f"{name}: {np.mean(secs):.3f} s/iteration at 120x90 (median {np.median(secs):.3f})")
    return run, summary


def test_segnet_basic_bvlc_port_trains_and_validates(camvid120, tmp_path):
    # SegNet-Tutorial's segnet_basic_solver: SGD, base_lr 0.1, momentum 0.9, weight decay 5e-4
    run, summary = train(
        tmp_path,
        camvid120,
        "segnet_basic_bvlc.prototxt",
        {"type": "SGD", "base_lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005},
    )
    done = {f["layer"] for f in summary["findings"] if f["code"] == "surgery"}
    assert done == {"upsample1", "upsample2", "upsample3", "upsample4"}
    losses = [m["loss"] for m in read_jsonl(run / "metrics.jsonl")]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_fcn_alexnet_on_camvid_trains_and_validates(camvid120, tmp_path):
    weights = backbone_weights(DATA / "fcn_alexnet_camvid.prototxt", tmp_path)
    # voc-fcn-alexnet's solver: SGD, base_lr 1e-4 (normalized softmax), momentum 0.9
    run, summary = train(
        tmp_path,
        camvid120,
        "fcn_alexnet_camvid.prototxt",
        {"type": "SGD", "base_lr": 1e-4, "momentum": 0.9, "weight_decay": 0.0005},
        weights=str(weights),
    )
    surgery = [f for f in summary["findings"] if f["code"] == "surgery"]
    assert [f["layer"] for f in surgery] == ["upscore"] and "63x63 set on 11 channels" in surgery[0]["message"]


def test_segnet_basic_beside_recipe_v3_renders_a_valid_experiment(camvid120, tmp_path):
    """bench/camvid_v3/segnet.py (README, "CamVid recipe v3": SegNet-Basic on the recipe's data and
    minutes): the port on any data stage's LMDBs, both solvers, accepted by `orchestrate validate`."""
    import subprocess
    import sys

    import yaml

    from tests.conftest import REPO

    def segnet(data: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "bench/camvid_v3/segnet.py", "--data", str(data), "--out", str(out), *args]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)

    for solver, kind in (("segnet", "SGD"), ("recipe", "Adam")):
        out = tmp_path / solver
        r = segnet(camvid120, out, "--solver", solver, "--max-iter", "40", "--interval", "20")
        assert r.returncode == 0, r.stderr
        exp = yaml.safe_load((out / "experiment.yaml").read_text())
        assert exp["solver"]["type"] == kind and exp["solver"]["max_iter"] == 40
        assert exp["snapshot"]["interval"] == exp["validation"]["interval"] == 20  # test scores per validation
        for split in ("train", "val"):
            net = (out / f"{split}.prototxt").read_text()
            assert (
                f'"{PREFIX}' not in net
                and f"{camvid120}/{split}/images" in net
                and f"{camvid120}/{split}/labels" in net
            )
            assert f"{camvid120}/train/infogain_H.binaryproto" in net  # the loss weighs classes as in training
        v = orchestrate("validate", str(out / "experiment.yaml"))
        assert v.returncode == 0, v.stdout + v.stderr
    r = segnet(tmp_path / "none", tmp_path / "x", "--max-iter", "1", "--interval", "1")
    assert r.returncode == 2 and "orchestrate data build" in r.stderr and not (tmp_path / "x").exists()
