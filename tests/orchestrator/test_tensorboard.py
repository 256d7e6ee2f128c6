"""TensorBoard event files and the best validation's pictures, read back with TensorBoard's own
reader: every logged loss, every validation, and no duplicated step after kill -9 and resume."""

from __future__ import annotations

import json
import signal
import time

import pytest

from orchestrator.rundir import read_jsonl
from orchestrator.train.hooks.tensorboard import read_scalars
from tests.orchestrator.conftest import experiment, orchestrate, write_exp
from tests.orchestrator.test_resume import start, wait_for_iter

pytest.importorskip("tensorboard")


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
    assert len(read_scalars(run, "val_class_iu/class_0")) == 4


def test_best_validation_pictures_in_the_run_dir_and_report(synth_lmdb, tmp_path):
    run = tmp_path / "run"
    r = orchestrate("run", str(write_exp(tmp_path, experiment(synth_lmdb))), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    best = json.loads((run / "summary.json").read_text())["best"]["iteration"]
    info = json.loads((run / "best" / "best.json").read_text())
    assert info["iteration"] == best and len(info["images"]) == 4
    report = (run / "report.md").read_text()
    for name in info["images"]:
        assert (run / "best" / f"{name}_overlay.png").stat().st_size > 0
        assert f"best/{name}_overlay.png" in report
    assert (run / "best" / "confusion.png").exists() and "best/confusion.png" in report
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert f"best/{info['images'][0]}_overlay" in acc.Tags()["images"]
