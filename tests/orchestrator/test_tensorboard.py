"""TensorBoard event files and the best validation's pictures, read back with TensorBoard's own
reader: every logged loss, every validation, and no duplicated step after kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from orchestrator.jsonio import read_jsonl
from orchestrator.train.hooks.tensorboard import read_scalars
from tests.orchestrator.conftest import experiment, orchestrate, write_exp
from tests.orchestrator.test_resume import start, wait_for_iter

pytestmark = pytest.mark.caffe


def test_event_files_survive_a_kill_and_resume_without_duplicates(synth_lmdb, tmp_path):
    run = tmp_path / "run"
    exp = experiment(
        synth_lmdb,
        solver={"max_iter": 200},
        snapshot={"interval": 10, "keep_last": 2},
        validation={"interval": 50},
        checks={"stats_interval": 25},
    )
    proc = start(write_exp(tmp_path, exp), run)
    wait_for_iter(run, 85, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    r = orchestrate("resume", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    loss = read_scalars(run, "train/loss")
    steps = [s for s, _ in loss]
    assert steps == list(range(1, 201))  # every logged iteration once, in order
    metrics = {m["iter"]: m["loss"] for m in read_jsonl(run / "metrics.jsonl")}
    assert all(abs(v - metrics[s]) < 1e-6 * max(1.0, abs(v)) for s, v in loss)
    val = read_scalars(run, "val/mean_iu")
    assert [s for s, _ in val] == [v["iter"] for v in read_jsonl(run / "val.jsonl")] == [50, 100, 150, 200]
    assert all(abs(a - b["mean_iu"]) < 1e-6 for (_, a), b in zip(val, read_jsonl(run / "val.jsonl"), strict=True))
    assert [s for s, _ in read_scalars(run, "params/conv1_1/0/mean_abs_data")][:2] == [1, 25]
    # the synthetic data's dataset.json names the classes: the tags say them
    assert len(read_scalars(run, "val_class_iu/background")) == 4


@pytest.fixture(scope="module")
def finished_run(synth_lmdb, tmp_path_factory) -> Path:
    """One finished 40-iteration run (validations at 20 and 40) under runs/run."""
    tmp = tmp_path_factory.mktemp("tb")
    run = tmp / "runs" / "run"
    r = orchestrate("run", str(write_exp(tmp, experiment(synth_lmdb))), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_tensorboard_serves_a_runs_scalars(finished_run):
    """The real `tensorboard --logdir runs/` of the venv starts on a loopback port and serves
    the run's loss and validation mIoU, equal to metrics.jsonl / val.jsonl."""
    port = free_port()
    exe = Path(sys.executable).parent / "tensorboard"
    cmd = [str(exe), "--logdir", str(finished_run.parent), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base, tags = f"http://127.0.0.1:{port}/data/plugin/scalars", {}
    try:
        deadline = time.monotonic() + 60
        while "run/tb" not in tags or "val/mean_iu" not in tags["run/tb"]:
            assert proc.poll() is None, f"tensorboard exited {proc.returncode}: {proc.stdout.read()[-2000:]}"
            assert time.monotonic() < deadline, f"no scalars for run/tb after 60 s: {tags}"
            time.sleep(0.3)
            try:
                tags = get_json(f"{base}/tags")
            except OSError:  # not listening yet
                continue
        assert "train/loss" in tags["run/tb"]
        q = urllib.parse.urlencode({"run": "run/tb", "tag": "val/mean_iu"})
        val = get_json(f"{base}/scalars?{q}")  # [[wall_time, step, value], ...]
        want = read_jsonl(finished_run / "val.jsonl")
        assert [int(s) for _, s, _ in val] == [v["iter"] for v in want] == [20, 40]
        assert all(abs(v - w["mean_iu"]) < 1e-6 for (_, _, v), w in zip(val, want, strict=True))
        loss = get_json(f"{base}/scalars?{urllib.parse.urlencode({'run': 'run/tb', 'tag': 'train/loss'})}")
        assert [int(s) for _, s, _ in loss] == [m["iter"] for m in read_jsonl(finished_run / "metrics.jsonl")]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_best_validation_pictures_in_the_run_dir_and_report(finished_run):
    run = finished_run
    best = json.loads((run / "summary.json").read_text())["best"]["iteration"]
    info = json.loads((run / "best" / "best.json").read_text())
    assert info["iteration"] == best and len(info["images"]) == 4
    report = (run / "report.md").read_text()
    # the names of the synthetic data's dataset.json reach net_meta.json and the report
    from data_prep.synth import CLASS_NAMES

    assert json.loads((run / "net_meta.json").read_text())["class_names"] == CLASS_NAMES
    assert "| background |" in report and "| class 0 |" not in report
    for name in info["images"]:
        # one panel per example: 4 columns of the 32x32 image scaled up 8x, titles and a legend
        w, h = Image.open(run / "best" / f"{name}_panel.png").size
        assert w >= 4 * 256 and h > 256
        assert f"best/{name}_panel.png" in report
    assert (run / "best" / "confusion.png").exists() and "best/confusion.png" in report
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert f"best/{info['images'][0]}" in acc.Tags()["images"]


def test_doctor_env_says_whether_tensorboard_starts(tmp_path):
    """doctor-env imports tensorboard's entry module: ok in this venv; MISSING, with the import
    error and the fix, where pkg_resources is gone (as with setuptools >= 82)."""
    from orchestrator.cli.envinfo import tensorboard_check

    assert tensorboard_check() == ("tensorboard starts", True, "tensorboard --logdir runs/")
    (tmp_path / "pkg_resources.py").write_text("raise ModuleNotFoundError(\"No module named 'pkg_resources'\")\n")
    what, ok, how = tensorboard_check({**os.environ, "PYTHONPATH": str(tmp_path)})
    assert not ok and "pkg_resources" in how and "make setup" in how
    r = orchestrate("doctor-env")
    assert "[ok] tensorboard starts" in r.stdout, r.stdout
