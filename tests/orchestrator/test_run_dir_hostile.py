"""Run directories against what a hostile (or unlucky) user does: a marker copied along with
other files, killed processes, and values Caffe cannot hold (issue 22)."""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.config import experiment as cfgmod
from orchestrator.contract import MARKER
from orchestrator.jsonio import read_jsonl
from orchestrator.rundir import RunDir
from orchestrator.runs_table import run_row
from tests.orchestrator.conftest import experiment, orchestrate, write_exp
from tests.orchestrator.test_resume import start as start_run
from tests.orchestrator.test_resume import wait_for_iter

pytestmark = pytest.mark.caffe


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_run(synth_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed 10-iteration run (one snapshot)."""
    tmp = tmp_path_factory.mktemp("hostile")
    exp = experiment(synth_lmdb, solver={"max_iter": 10}, validation={"interval": 10}, snapshot={"interval": 10})
    run = tmp / "run"
    r = orchestrate("run", str(write_exp(tmp, exp)), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    return run


def a_copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


# ------------------------------------------------------------------ 1. only --fresh deletes, only what a run wrote
@pytest.mark.parametrize("fresh", [False, True])
def test_a_marker_copied_with_a_dataset_deletes_nothing(synth_lmdb, tmp_path, fresh):
    data = tmp_path / "dataset"
    shutil.copytree(synth_lmdb / "train", data)
    (data / MARKER).write_text("{}\n")  # copied along with the dataset, or left by a pre-flight stop
    before = files_of(data)
    args = ["run", str(write_exp(tmp_path, experiment(synth_lmdb))), "--run-dir", str(data)]
    r = orchestrate(*args, *(["--fresh"] if fresh else []))
    no_traceback(r)
    assert r.returncode == 2 and "a run does not write" in r.stderr and "images" in r.stderr, r.stderr[-1500:]
    assert files_of(data) == before  # nothing deleted, nothing added (not even a lock)


def test_fresh_says_what_it_removed_and_keeps_foreign_files(small_run, synth_lmdb, tmp_path):
    run = a_copy(small_run, tmp_path)
    (run / "my_notes.txt").write_text("mine\n")
    exp = write_exp(tmp_path, experiment(synth_lmdb, solver={"max_iter": 5}, validation={"interval": 5}))
    r = orchestrate("run", str(exp), "--run-dir", str(run), "--fresh")
    no_traceback(r)
    assert r.returncode == 2 and "my_notes.txt" in r.stderr
    assert (run / "my_notes.txt").read_text() == "mine\n" and (run / "snapshots" / "iter_10").is_dir()
    (run / "my_notes.txt").unlink()
    r = orchestrate("run", str(exp), "--run-dir", str(run), "--fresh")
    assert r.returncode == 0, r.stderr[-1500:]
    removed = next(x for x in r.stderr.splitlines() if "removed from" in x)
    assert "--fresh" in removed and "snapshots/" in removed and "metrics.jsonl" in removed
    assert json.loads((run / "summary.json").read_text())["iterations"] == 5


# ------------------------------------------------------------------ 5. killed processes
def child_of(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert children, "the worker child is not running"
    return int(children[0])


def test_kill_9_of_the_training_child_keeps_the_iterations(synth_lmdb, tmp_path):
    run = tmp_path / "run"
    exp = write_exp(tmp_path, experiment(synth_lmdb, solver={"max_iter": 3000}, validation={"interval": 1000}))
    proc = start_run(exp, run)
    wait_for_iter(run, 25, proc)
    os.kill(child_of(proc.pid), signal.SIGKILL)
    proc.communicate(timeout=120)
    trained = read_jsonl(run / "metrics.jsonl")[-1]["iter"]
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "failed" and s["iterations"] == trained >= 25 and s["max_iter"] == 3000
    row = run_row(run)
    assert (row["iterations"], row["max_iter"]) == (trained, 3000)
    assert f"{trained}/3000" in orchestrate("runs", str(tmp_path)).stdout


def lock_held(lock: Path) -> bool:
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_kill_9_of_the_parent_is_told_from_a_live_run(synth_lmdb, tmp_path):
    run = tmp_path / "run"
    exp = write_exp(tmp_path, experiment(synth_lmdb, solver={"max_iter": 3000}, validation={"interval": 1000}))
    proc = start_run(exp, run)
    try:
        wait_for_iter(run, 12, proc)
        live = orchestrate("runs", str(tmp_path))
        assert "running" in live.stdout and "stale" not in live.stdout, live.stdout
    finally:
        proc.kill()  # the parent: the worker child dies with it (PDEATHSIG) and the lock goes with both
        proc.communicate(timeout=60)
    end = time.monotonic() + 60
    while lock_held(run / ".lock") and time.monotonic() < end:
        time.sleep(0.1)
    assert json.loads((run / "summary.json").read_text())["status"] == "running"  # what the killed run left
    trained = read_jsonl(run / "metrics.jsonl")[-1]["iter"]
    table = orchestrate("runs", str(tmp_path)).stdout
    assert "stale" in table and f"{trained}/3000" in table and "orchestrate resume" in table, table
    r = orchestrate("resume", str(run), "--set", f"solver.max_iter={trained + 5}")
    no_traceback(r)
    assert r.returncode == 0, r.stderr[-1500:]
    assert "said running, but no process owned" in r.stderr and f"iteration {trained}" in r.stderr
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "completed" and any(f["code"] == "stale-running" for f in s["findings"])


def test_the_runs_table_probe_never_refuses_the_owner(tmp_path):
    """`orchestrate runs` holds a shared lock for an instant: a run starting then still gets it."""
    (tmp_path / ".lock").touch()
    probe = os.open(tmp_path / ".lock", os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH)
    threading.Timer(0.08, os.close, [probe]).start()
    os.close(RunDir(tmp_path).acquire_lock())


def test_a_lock_that_is_a_folder_is_named(small_run, tmp_path):
    run = a_copy(small_run, tmp_path)
    (run / ".lock").mkdir()
    r = orchestrate("resume", str(run), "--set", "solver.max_iter=12")
    no_traceback(r)
    assert r.returncode == 2 and ".lock" in r.stderr


# ------------------------------------------------------------------ 6. limits Caffe cannot take
def test_max_iter_at_int32_max_makes_a_solver_caffe_can_read(small_run, tmp_path):
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    from orchestrator.run.runner import solver_text

    raw = yaml.safe_load((small_run / "config.yaml").read_text())
    exp = cfgmod.from_dict(raw, ["solver.max_iter=2147483647"])
    text = solver_text(exp, RunDir(a_copy(small_run, tmp_path)), has_val=True)
    p = text_format.Parse(text, caffe_pb2.SolverParameter())
    assert p.max_iter == 2**31 - 1 and p.test_interval == 2**31 - 1  # never reached: the hooks validate


@pytest.mark.parametrize(
    "net, says", [({"width": 2**31 - 1}, "net.width: is too large"), ({"depth": 40}, "net.depth: must be")]
)
def test_net_sizes_that_overflow_caffe_are_refused_by_validate(synth_lmdb, tmp_path, net, says):
    r = orchestrate("validate", str(write_exp(tmp_path, experiment(synth_lmdb, net=net))))
    no_traceback(r)
    assert r.returncode == 2 and says in r.stdout + r.stderr


@pytest.mark.parametrize("value", ["1e308", "1e-50"])
def test_solver_floats_must_survive_float32(synth_lmdb, small_run, tmp_path, value):
    exp = write_exp(tmp_path, experiment(synth_lmdb, solver={"base_lr": float(value)}))
    r = orchestrate("validate", str(exp))
    no_traceback(r)
    assert r.returncode == 2 and "solver.base_lr" in r.stdout + r.stderr and "32-bit" in r.stdout + r.stderr
    run = a_copy(small_run, tmp_path)
    before = files_of(run)
    r = orchestrate("resume", str(run), "--set", f"solver.base_lr={value}", "--set", "solver.max_iter=20")
    no_traceback(r)
    assert r.returncode == 2 and "solver.base_lr" in r.stderr
    assert (run / "config.yaml").read_bytes() == before["config.yaml"]


def release_lock(run: Path) -> None:
    """Close this process's descriptors of RUN/.lock."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(run / ".lock"):
                os.close(int(fd))
        except OSError:
            pass


def test_a_failed_resume_leaves_config_and_solver_as_they_were(small_run, tmp_path, monkeypatch, capsys):
    from common.errors import UserError
    from orchestrator.run import runner

    run = a_copy(small_run, tmp_path)
    before = {n: (run / n).read_bytes() for n in ("config.yaml", "solver.prototxt")}

    def refuse(*a: object, **k: object) -> str:
        raise UserError("the solver cannot be made", "-")

    monkeypatch.setattr(runner, "solver_text", refuse)
    with pytest.raises(UserError):
        runner.resume_run(str(run), ["solver.max_iter=20", "solver.base_lr=0.001"])
    assert {n: (run / n).read_bytes() for n in before} == before
    monkeypatch.undo()
    release_lock(run)  # in a CLI process the lock goes with the process
    # the child fails before its first step: both files are put back
    monkeypatch.setattr(runner, "supervise", lambda *a, **k: 2)
    assert runner.resume_run(str(run), ["solver.max_iter=20", "solver.base_lr=0.001"]) == 2
    assert {n: (run / n).read_bytes() for n in before} == before
    assert "as they were before this resume" in capsys.readouterr().err


# ------------------------------------------------------------------ the run's own files damaged
@pytest.mark.parametrize(
    "name, rc",
    [  # logs and summaries are the run's notes: it goes on without them; its net and meta it needs
        ("summary.json", 0),
        ("findings.json", 0),
        ("metrics.jsonl", 0),
        ("val.jsonl", 0),
        ("net_meta.json", 2),
        ("solver.prototxt", 2),
    ],
)
def test_a_damaged_run_file_is_no_traceback(small_run, tmp_path, name, rc):
    run = a_copy(small_run, tmp_path)
    (run / name).write_bytes(random.Random(name).randbytes(300))
    r = orchestrate("resume", str(run), "--set", "solver.max_iter=12")
    no_traceback(r)
    assert r.returncode == rc, r.stderr[-1500:]
    if rc == 2:
        assert name in r.stderr, r.stderr[-1500:]
    else:
        assert json.loads((run / "summary.json").read_text())["iterations"] == 12
