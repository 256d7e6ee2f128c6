"""`orchestrate predict --ensemble RUN_DIR[:SNAPSHOT]` on real Caffe runs: the class probabilities
of snapshots of different runs (each with its own data stage: here one resized, one not) averaged,
one snapshot twice gives the single prediction, TTA combines, and clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.orchestrator.conftest import build_section, experiment, orchestrate, write_exp

pytestmark = pytest.mark.caffe


@pytest.fixture(scope="module")
def two_runs(synth_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Run `a` on the 32x32 LMDBs (seed 0); run `b` on a data stage that resized to 24x20 (seed 1)."""
    tmp = tmp_path_factory.mktemp("ens")
    a = experiment(synth_lmdb, validation={"interval": 20}, snapshot={"interval": 20, "keep_last": 2})
    assert orchestrate("run", str(write_exp(tmp, a)), "--run-dir", str(tmp / "a")).returncode == 0
    b = dict(a, seed=1)
    b["data"] = {
        "train": str(tmp / "d" / "train"),
        "val": str(tmp / "d" / "val"),
        "batch_size": 4,
        "build": build_section(synth_lmdb / "raw", resize="24x20"),
    }
    r = orchestrate("run", str(write_exp(tmp, b)), "--run-dir", str(tmp / "b"))
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp / "a", tmp / "b"


def _predict(run: Path, out: Path, lst: Path, *more: str) -> dict:
    r = orchestrate("predict", str(run), "--list", str(lst), "--out", str(out), "--eval", "--snapshot", "last", *more)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads((out / "eval.json").read_text())


def _probabilities(run: Path, snapshot: str, folder: Path, image: np.ndarray) -> np.ndarray:
    """The snapshot's softmax for the image at its net's input size, as the run's data stage sizes it."""
    import yaml

    from orchestrator.contract import WEIGHTS
    from orchestrator.predict.forward import DeployNet

    train = Path(yaml.safe_load((run / "config.yaml").read_text())["data"]["train"])
    stats = json.loads((train / "stats.json").read_text())
    folder.mkdir()
    net = DeployNet(
        run, folder, (stats["height"], stats["width"]), stats["mean_bgr"], weights=str(run / snapshot / WEIGHTS),
        resize=tuple(stats["resize"]) if stats.get("resize") else None,
    )  # fmt: skip
    return net.probabilities(image)


def test_ensemble_averages_the_probabilities_of_two_runs(two_runs, synth_lmdb, tmp_path):
    import cv2

    from orchestrator.predict.tta import resize_bilinear

    a, b = two_runs
    lst = synth_lmdb / "raw" / "val.txt"
    result = _predict(a, tmp_path / "ens", lst, "--ensemble", f"{b}:last")
    assert result["ensemble"] == [f"{b}/snapshots/iter_40"] and result["images"] == 12
    single = _predict(a, tmp_path / "one", lst)
    assert single["ensemble"] == [] and 0 <= result["mean_iu"] <= 1
    first = (synth_lmdb / "raw" / lst.read_text().split()[0]).resolve()
    image = cv2.imread(str(first), cv2.IMREAD_COLOR)
    pa = _probabilities(a, "snapshots/iter_40", tmp_path / "da", image)
    pb = _probabilities(b, "snapshots/iter_40", tmp_path / "db", image)
    assert pa.shape[2:] == (32, 32) and pb.shape[2:] == (20, 24)  # each net sees the image as its data stage made it
    want = ((pa + resize_bilinear(pb, (32, 32))) / 2)[0].argmax(0)
    got = np.asarray(Image.open(tmp_path / "ens" / f"{first.stem}.png"))
    assert np.array_equal(got, want)
    alone = np.asarray(Image.open(tmp_path / "one" / f"{first.stem}.png"))
    assert np.array_equal(alone, pa[0].argmax(0))


def test_one_snapshot_twice_is_the_single_prediction_and_tta_combines(two_runs, synth_lmdb, tmp_path):
    a, _ = two_runs
    lst = synth_lmdb / "raw" / "val.txt"
    single = _predict(a, tmp_path / "one", lst)
    twice = _predict(a, tmp_path / "twice", lst, "--ensemble", f"{a}:last")
    assert twice["confusion"] == single["confusion"] and twice["mean_iu"] == single["mean_iu"]
    tta = _predict(a, tmp_path / "tta", lst, "--ensemble", str(a), "--tta", "flip")  # a's best with its last
    best = json.loads((a / "summary.json").read_text())["best"]["iteration"]
    assert tta["tta"] == "flip" and tta["ensemble"] == [f"{a}/snapshots/iter_{best}"]
    assert tta["confusion"] != single["confusion"]  # flip and a second snapshot change some pixels


def test_ensemble_refusals_name_the_run_and_leave_nothing(two_runs, synth_lmdb, tmp_path):
    a, b = two_runs
    lst = synth_lmdb / "raw" / "val.txt"
    out = tmp_path / "pred"

    def refused(*more: str) -> str:
        r = orchestrate("predict", str(a), "--list", str(lst), "--out", str(out), *more)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert not out.exists() and not list(tmp_path.glob(".pred.partial-*"))
        return r.stderr

    text = refused("--ensemble", f"{b}:iter_999")
    assert "iter_999" in text and "choose one of" in text
    for choice in ("iter_abc", "", "bset", "iter_"):  # every malformed choice after RUN: is named as written
        text = refused("--ensemble", f"{b}:{choice}")
        assert f"--ensemble {b}:{choice}:" in text and "--snapshot" not in text and f"{b}:iter_" in text, text
    assert str(tmp_path / "nowhere") in refused("--ensemble", str(tmp_path / "nowhere"))
    other = tmp_path / "other"
    shutil.copytree(b, other)
    meta = json.loads((other / "net_meta.json").read_text())
    (other / "net_meta.json").write_text(json.dumps({**meta, "num_classes": 4, "class_names": None}))
    text = refused("--ensemble", str(other))
    assert "4 classes" in text and "5" in text and "same classes" in text
