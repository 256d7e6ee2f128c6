"""The deploy net derived from a user's val net follows the data flow (issue 21, case 1): a net
that crops its label inside (a U-Net with valid convolutions) trains, validates, draws its
best-validation pictures and predicts; pictures that cannot be made never stop a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nets.prototxt import parse_net
from orchestrator.jsonio import read_jsonl
from orchestrator.predict import deploy as dep
from tests.conftest import REPO
from tests.orchestrator.conftest import experiment, orchestrate, unet, user_net, write_exp

pytestmark = pytest.mark.caffe


def test_derived_deploy_drops_what_depends_on_the_label_and_keeps_what_the_score_needs():
    net = parse_net(unet("/nowhere", 2))
    deploy = dep.derive_deploy(net, 32, 32)
    names = [x.name for x in deploy.layer]
    assert "crop_mask" not in names and "loss" not in names and "accuracy" not in names
    assert names[0] == "data" and deploy.layer[0].type == "Input" and names[-1] == "score"
    assert "skip" in names  # the skip's Crop reads the net's own blobs: the score needs it
    assert dep.check_deploy(deploy) == []
    assert dep.label_offset(net) == (5, 5)
    assert dep.preprocess_of(net, None).mean_bgr == (110.0, 112.0, 111.0)  # the image layer's, not the mask's
    # a plain FCN-style user net: everything but data, loss and accuracy
    plain = dep.derive_deploy(parse_net(user_net("/nowhere", 2, with_val=True)), 32, 32)
    assert [x.name for x in plain.layer] == ["data", "conv1", "relu1", "score"]
    assert dep.label_offset(parse_net(user_net("/nowhere", 2, with_val=True))) is None


def test_a_deploy_net_that_needs_the_label_is_refused_in_words():
    text = unet("/nowhere", 2).replace('bottom: "c4" top: "score"', 'bottom: "c4" top: "pre"')
    text = text.replace(
        'layer { name: "crop_mask"',
        'layer { name: "mix" type: "Eltwise" bottom: "pre" bottom: "cheat" top: "score" }\nlayer { name: "crop_mask"',
    )
    text = text.replace(
        'layer { name: "mix"',
        'layer { name: "cheat" type: "Crop" bottom: "mask" bottom: "pre" top: "cheat"\n'
        "  crop_param { axis: 2 offset: 5 } }\n"
        'layer { name: "mix"',
    )
    with pytest.raises(ValueError, match="depend on the label input"):
        dep.derive_deploy(parse_net(text), 32, 32)
    broken = dep.derive_deploy(parse_net(unet("/nowhere", 2)), 32, 32)
    del broken.layer[1]  # c1 gone: c1_relu reads what nobody makes
    assert any("'c1_relu' reads 'c1'" in p for p in dep.check_deploy(broken))


def train_user_net(data: Path, tmp_path: Path, text: str, iterations: int, val_every: int) -> tuple[Path, Any]:
    """`orchestrate run` of a user's train_val net for `iterations`, validating every `val_every`;
    (run dir, summary) of a run that completed them all."""
    net = tmp_path / "net.prototxt"
    net.write_text(text)
    exp = experiment(
        data,
        net={"prototxt": str(net), "num_classes": 5, "ignore_label": 255},
        solver={"max_iter": iterations, "base_lr": 0.002},
        validation={"interval": val_every},
        snapshot={"interval": 10},
    )
    run = tmp_path / "run"
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["iterations"] == iterations
    return run, summary


def test_unet_with_label_crop_trains_validates_draws_and_predicts(synth_lmdb, tmp_path):
    """Before: the run died at its first best-validation pictures (Unknown bottom blob 'mask')."""
    run, summary = train_user_net(synth_lmdb, tmp_path, unet(synth_lmdb, 4), 20, 10)
    assert (run / "best" / "best.json").exists() and list((run / "best").glob("val_*.png"))
    assert not any(f["code"] == "pictures-failed" for f in summary.get("findings", []))
    out = tmp_path / "pred"
    r = orchestrate("predict", str(run), "--list", str(synth_lmdb / "raw" / "val.txt"), "--out", str(out), "--eval")
    assert r.returncode == 0 and (out / "eval.json").exists(), r.stderr[-3000:]
    best = next(v for v in read_jsonl(run / "val.jsonl") if v["iter"] == summary["best"]["iteration"])
    assert abs(json.loads((out / "eval.json").read_text())["mean_iu"] - best["mean_iu"]) < 1e-6


def test_pictures_that_cannot_be_made_are_a_warning_not_an_abort(synth_lmdb, tmp_path):
    """A run's deploy.prototxt that Caffe would abort on: no pictures, a reason, no abort (in a
    child, so that a regression fails this test, not the whole session)."""
    from google.protobuf import text_format

    run = tmp_path / "run"
    run.mkdir()
    (run / "val.prototxt").write_text(user_net(synth_lmdb, 1, with_val=True))
    deploy = dep.derive_deploy(parse_net((run / "val.prototxt").read_text()), 32, 32)
    deploy.layer[2].bottom[0] = "nothing"  # relu1 reads a blob no layer makes: Caffe would abort
    (run / "deploy.prototxt").write_text(text_format.MessageToString(deploy))
    code = (
        "from pathlib import Path\n"
        "from orchestrator.predict.pictures import BestPictures\n"
        f"pics = BestPictures(Path({str(run)!r}), Path({str(synth_lmdb / 'val')!r}), 2, 5, 255, None, None)\n"
        "assert pics.render(object(), 10, None) == [] and pics.render(object(), 20, None) == []\n"
        "print('failed:', pics.failed)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "failed:" in r.stdout and "'relu1' reads 'nothing'" in r.stdout


def test_a_run_whose_pictures_cannot_be_made_completes_with_a_warning(synth_lmdb, tmp_path):
    """Scores that read the label (a fixed, near-zero 1x1 convolution of it, summed in): training and
    validation work, no deploy net can exist; the run completes, the pictures are a warning,
    and predict says why (exit 2)."""
    text = user_net(synth_lmdb, 4, with_val=True).replace('top: "score"', 'top: "pre"', 1)
    text = text.replace(
        'layer { name: "loss"',
        'layer { name: "cheat" type: "Convolution" bottom: "label" top: "cheat" param { lr_mult: 0 }\n'
        "  convolution_param { num_output: 5 kernel_size: 1 bias_term: false\n"
        '    weight_filler { type: "gaussian" std: 0.001 } } }\n'
        'layer { name: "mix" type: "Eltwise" bottom: "pre" bottom: "cheat" top: "score" }\n'
        'layer { name: "loss"',
    )
    run, summary = train_user_net(synth_lmdb, tmp_path, text, 10, 5)
    assert [v["iter"] for v in read_jsonl(run / "val.jsonl")] == [5, 10]
    [warning] = [f for f in summary["findings"] if f["code"] == "pictures-failed"]
    assert warning["severity"] == "warning" and "depend on the label input" in warning["message"]
    r = orchestrate("predict", str(run), "--list", str(synth_lmdb / "raw" / "val.txt"), "--out", str(tmp_path / "p"))
    assert r.returncode == 2 and "depend on the label input" in r.stderr and "Traceback" not in r.stderr
