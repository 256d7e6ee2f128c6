"""`orchestrate predict` and `orchestrate runs` on real Caffe runs: the same numbers as
validation, outputs at the input's size, user nets through a derived deploy net, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.jsonio import read_jsonl
from tests.orchestrator.conftest import build_section, experiment, orchestrate, user_net, write_exp

pytestmark = pytest.mark.caffe


@pytest.fixture(scope="module")
def trained(synth_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short run with validation every 20 iterations (best snapshot kept)."""
    tmp = tmp_path_factory.mktemp("pred")
    run = tmp / "run"
    exp = experiment(synth_lmdb, solver={"max_iter": 60}, validation={"interval": 20}, snapshot={"interval": 20})
    r = orchestrate("run", str(write_exp(tmp, exp)), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    return run


def test_predict_eval_equals_the_best_validation(trained, synth_lmdb, tmp_path):
    out = tmp_path / "pred"
    r = orchestrate("predict", str(trained), "--list", str(synth_lmdb / "raw" / "val.txt"), "--out", str(out), "--eval")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((trained / "summary.json").read_text())
    best = next(v for v in read_jsonl(trained / "val.jsonl") if v["iter"] == summary["best"]["iteration"])
    result = json.loads((out / "eval.json").read_text())
    assert result["snapshot"] == f"snapshots/iter_{best['iter']}" and result["images"] == 12
    assert abs(result["mean_iu"] - best["mean_iu"]) < 1e-6
    assert abs(result["pixel_accuracy"] - best["pixel_accuracy"]) < 1e-6
    assert f"mIoU {result['mean_iu']:.4f}" in r.stdout  # the per-class table
    assert (out / "confusion.png").stat().st_size > 0
    images = [
        Path(line.split()[0]) for line in (synth_lmdb / "raw" / "val.txt").read_text().split("\n") if line.strip()
    ]
    for img in images:
        pred = Image.open(out / f"{img.stem}.png")
        assert pred.mode == "P" and pred.size == Image.open(synth_lmdb / "raw" / img).size
        assert np.asarray(pred).max() < 5
        assert Image.open(out / f"{img.stem}_overlay.png").size == pred.size
        assert (out / f"{img.stem}_error.png").exists()
        # image | ground truth | prediction | errors, the 32x32 image scaled up to 256
        assert Image.open(out / f"{img.stem}_panel.png").size[0] >= 4 * 256
    assert "12 image(s) in " in r.stdout and " images/s (the net alone: " in r.stdout
    assert not list(tmp_path.glob(".pred.partial-*"))


def test_predict_restores_the_original_size_after_the_data_stage_resize(synth_lmdb, tmp_path):
    raw = synth_lmdb / "raw"
    exp = experiment(synth_lmdb, solver={"max_iter": 10}, validation={"interval": 10}, snapshot={"interval": 10})
    exp["data"] = {
        "train": str(tmp_path / "d" / "train"),
        "val": str(tmp_path / "d" / "val"),
        "batch_size": 4,
        "build": build_section(raw, resize="24x20"),
    }
    run = tmp_path / "run"
    assert orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run)).returncode == 0
    out = tmp_path / "pred"
    r = orchestrate(
        "predict", str(run), "--images", str(raw / "images"), "--out", str(out), "--snapshot", "last", "--batch", "4"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    some = sorted((raw / "images").iterdir())[0]
    assert Image.open(out / f"{some.stem}.png").size == Image.open(some).size == (32, 32)
    assert not (out / "eval.json").exists()
    _tta_views_come_from_the_original(run, tmp_path / "d" / "train", some, tmp_path / "deploy")


def _tta_views_come_from_the_original(run: Path, train_db: Path, image: Path, folder: Path) -> None:
    """Predict's TTA takes its scale-1.25 view from the 32x32 original (resized to 30x25), not by
    enlarging the 24x20 view the data stage made (validation's way, which only has that view)."""
    import cv2

    from orchestrator.contract import WEIGHTS
    from orchestrator.predict.forward import DeployNet
    from orchestrator.predict.tta import TTA, resize_bilinear, softmax

    folder.mkdir()
    mean = json.loads((train_db / "stats.json").read_text())["mean_bgr"]
    weights = str(sorted((run / "snapshots").iterdir())[-1] / WEIGHTS)
    net = DeployNet(run, folder, (20, 24), mean, weights=weights, resize=(24, 20))
    img = cv2.imread(str(image), cv2.IMREAD_COLOR)
    x1, x125 = net.input_of(img), net.input_of(img, (30, 25))
    assert x1.shape[2:] == (20, 24) and x125.shape[2:] == (25, 30)
    want = (softmax(net.scores(x1)) + resize_bilinear(softmax(net.scores(x125)), (20, 24))) / 2
    assert not np.allclose(resize_bilinear(x1, (25, 30)), x125, atol=1)  # enlarging would feed other pixels
    fed: list[np.ndarray] = []
    scores = net.scores

    def recorded(x: np.ndarray) -> np.ndarray:
        fed.append(x)
        return scores(x)

    net.scores = recorded  # type: ignore[method-assign]
    [got] = net.classes([img], TTA(scales=(1.0, 1.25)))
    assert len(fed) == 2 and np.array_equal(fed[0], x1) and np.array_equal(fed[1], x125)
    classes = want[0].argmax(0).astype(np.uint8)
    assert np.array_equal(got, cv2.resize(classes, (32, 32), interpolation=cv2.INTER_NEAREST))


def test_predict_a_user_net_through_a_derived_deploy_net(synth_lmdb, tmp_path):
    net = tmp_path / "train_val.prototxt"
    net.write_text(user_net(synth_lmdb, 4, with_val=True, score="seg", kernel=3))  # no deploy.prototxt
    exp = experiment(
        synth_lmdb,
        net={"prototxt": str(net), "num_classes": 5, "ignore_label": 255},
        solver={"max_iter": 20, "base_lr": 0.01},
        validation={"interval": 20},
        snapshot={"interval": 20},
    )
    run = tmp_path / "run"
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (run / "deploy.prototxt").exists()
    out = tmp_path / "pred"
    r = orchestrate("predict", str(run), "--list", str(synth_lmdb / "raw" / "val.txt"), "--out", str(out), "--eval")
    assert r.returncode == 0, r.stderr[-2000:]
    val = read_jsonl(run / "val.jsonl")[-1]
    assert abs(json.loads((out / "eval.json").read_text())["mean_iu"] - val["mean_iu"]) < 1e-6


def test_predict_errors_are_clear_and_leave_nothing(trained, synth_lmdb, tmp_path):
    out = tmp_path / "pred"
    lst = synth_lmdb / "raw" / "val.txt"
    r = orchestrate("predict", str(trained), "--list", str(lst), "--out", str(out), "--snapshot", "iter_999")
    assert r.returncode == 2 and "iter_999" in r.stderr and "choose one of" in r.stderr and not out.exists()
    bad_dir = tmp_path / "raw"
    shutil.copytree(synth_lmdb / "raw", bad_dir)
    first = bad_dir / lst.read_text().split()[0]
    first.write_bytes(first.read_bytes()[:100])  # a truncated PNG
    r = orchestrate("predict", str(trained), "--list", str(bad_dir / "val.txt"), "--out", str(out))
    assert r.returncode == 2 and first.name in r.stderr and "truncated" in r.stderr, r.stderr[-1500:]
    assert not out.exists() and not list(tmp_path.glob(".pred.partial-*"))
    r = orchestrate("predict", str(trained), "--images", str(bad_dir / "images"), "--out", str(out), "--eval")
    assert r.returncode == 2 and "--eval needs labels" in r.stderr
    assert "Traceback" not in r.stderr


def test_predict_refuses_a_corrupt_jpeg(trained, synth_lmdb, tmp_path):
    """200 garbage bytes mid-stream (end marker intact): libjpeg only warns and fills grey; predict
    (its child, on Caffe) refuses the file by name instead of segmenting the grey."""
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    src = synth_lmdb / "raw" / "images" / "val_0000.png"
    jpg = cv2.imencode(".jpg", cv2.imread(str(src)))[1].tobytes()
    mid = len(jpg) // 2
    bad = images / "bad.jpg"
    bad.write_bytes(
        jpg[:mid] + np.random.default_rng(0).integers(0, 256, 200).astype(np.uint8).tobytes() + jpg[mid + 200 :]
    )
    out = tmp_path / "pred"
    r = orchestrate("predict", str(trained), "--images", str(images), "--out", str(out))
    assert r.returncode == 2 and str(bad) in r.stderr and "JPEG data is corrupt" in r.stderr, r.stderr[-1500:]
    assert not out.exists() and "Traceback" not in r.stderr


def test_a_caffe_abort_in_predict_is_reported(trained, synth_lmdb, tmp_path):
    broken = tmp_path / "run"
    shutil.copytree(trained, broken)
    # the deploy net no longer fits the weights' shapes: Caffe aborts while building it
    (broken / "deploy.prototxt").write_text(
        (broken / "deploy.prototxt").read_text().replace("num_output: 5", "num_output: 7", 1)
    )
    out = tmp_path / "pred"
    r = orchestrate("predict", str(broken), "--list", str(synth_lmdb / "raw" / "val.txt"), "--out", str(out))
    assert r.returncode == 2 and "predict failed" in r.stderr and "Caffe aborted" in r.stderr and not out.exists()
    assert "Traceback" not in r.stderr


def test_runs_table(trained, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    shutil.copytree(trained, folder / "a")
    r = orchestrate("runs", str(folder))
    assert r.returncode == 0
    best = json.loads((trained / "summary.json").read_text())["best"]
    line = next(x for x in r.stdout.splitlines() if x.startswith("a "))
    assert "completed" in line and "60/60" in line and f"{best['metrics']['mean_iu']:.4f}" in line
