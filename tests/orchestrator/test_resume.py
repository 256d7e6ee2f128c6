"""Snapshots, SIGINT, SIGKILL + resume on real Caffe: no duplicated or missing iterations."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from nets import bilinear
from orchestrator.jsonio import read_jsonl
from tests.orchestrator.conftest import experiment, orchestrate, orchestrate_bg, write_exp

pytestmark = pytest.mark.caffe


def start(exp_path: Path, run: Path) -> subprocess.Popen[str]:
    return orchestrate_bg("run", str(exp_path), "--run-dir", str(run))


def wait_for_iter(run: Path, it: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        recs = read_jsonl(run / "metrics.jsonl")
        if recs and recs[-1]["iter"] >= it:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"iteration {it} not reached")


def long_exp(synth_lmdb: Path) -> dict:
    return experiment(
        synth_lmdb, solver={"max_iter": 300}, snapshot={"interval": 10, "keep_last": 2}, validation={"interval": 50}
    )


def test_sigkill_then_resume_completes_with_consistent_logs(synth_lmdb, tmp_path):
    run = tmp_path / "run"
    proc = start(write_exp(tmp_path, long_exp(synth_lmdb)), run)
    wait_for_iter(run, 75, proc)
    proc.send_signal(signal.SIGKILL)  # the worker child dies with its parent (PDEATHSIG)
    proc.wait()
    time.sleep(0.5)
    killed_at = read_jsonl(run / "metrics.jsonl")[-1]["iter"]
    snaps = sorted(int(p.name.split("_")[1]) for p in (run / "snapshots").glob("iter_*") if "." not in p.name)
    assert snaps and max(snaps) <= killed_at and len(snaps) <= 3  # keep_last 2 (+ the best)
    r = orchestrate("resume", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resumed from iteration {max(snaps)}" in r.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["iterations"] == 300
    assert [m["iter"] for m in read_jsonl(run / "metrics.jsonl")] == list(range(1, 301))
    assert [v["iter"] for v in read_jsonl(run / "val.jsonl")] == [50, 100, 150, 200, 250, 300]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_snapshots_and_reports_interrupted(synth_lmdb, tmp_path, sig):
    """Both snapshot at the step they stop; Ctrl-C also validates there, SIGTERM (a stop with a
    deadline: SIGKILL follows a scheduler's grace period) does not, so the snapshot comes first."""
    run = tmp_path / "run"
    proc = start(write_exp(tmp_path, long_exp(synth_lmdb)), run)
    wait_for_iter(run, 23, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and sig.name in summary["stop_reason"]
    it = summary["iterations"]
    assert 23 <= it < 300 and (run / "snapshots" / f"iter_{it}" / "state.solverstate").exists()
    validated = [v["iter"] for v in read_jsonl(run / "val.jsonl")]
    assert (it in validated) == (sig == signal.SIGINT or it % 50 == 0), (it, validated)
    # the snapshot resumes: the run finishes from there
    r = orchestrate("resume", str(run))
    assert r.returncode == 0 and f"resumed from iteration {it}" in r.stdout


def test_snapshot_holds_the_bilinear_upsampling(synth_lmdb, tmp_path):
    import caffe

    run = tmp_path / "run"
    assert orchestrate("run", str(write_exp(tmp_path, experiment(synth_lmdb))), "--run-dir", str(run)).returncode == 0
    net = caffe.Net(str(run / "deploy.prototxt"), str(run / "snapshots" / "iter_40" / "weights.caffemodel"), caffe.TEST)
    w = net.params["upscore"][0].data
    assert w.shape == (5, 1, 8, 8) and bilinear.is_bilinear(w, group=5)
    assert np.allclose(w[2, 0], bilinear.bilinear_kernel(8))


def test_resume_refuses_a_caffemodel(tmp_path):
    f = tmp_path / "x.caffemodel"
    f.write_bytes(b"")
    r = orchestrate("resume", str(f))
    assert r.returncode == 2 and "needs the run directory" in r.stderr
    r = orchestrate("resume", str(tmp_path))
    assert r.returncode == 2 and "not a run directory" in r.stderr


def test_run_refuses_solverstate_as_weights(synth_lmdb, tmp_path):
    s = tmp_path / "a.solverstate"
    s.write_bytes(b"")
    r = orchestrate(
        "run", str(write_exp(tmp_path, experiment(synth_lmdb, weights=str(s)))), "--run-dir", str(tmp_path / "r")
    )
    assert r.returncode == 2 and "is a solver state" in r.stderr
