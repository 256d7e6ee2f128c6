"""Readers of a run directory that a live process owns: `orchestrate runs`, the snapshot listing
and checks, and `predict` race its writer, which renames iter_N.tmp into place, prunes old
snapshots and replaces its JSON files. Whatever vanishes between a listing and a read is
skipped or said, never a FileNotFoundError (CI once failed on `runs` meeting iter_60.tmp)."""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from orchestrator.contract import LOCK, MANIFEST
from orchestrator.rundir import RunDir
from orchestrator.runs_table import find_runs, run_row, runs_table
from orchestrator.snapcheck import verify_snapshot
from tests.orchestrator.conftest import experiment, orchestrate, write_exp
from tests.orchestrator.test_resume import start as start_run
from tests.orchestrator.test_resume import wait_for_iter

pytestmark = pytest.mark.caffe


@pytest.fixture(scope="module")
def finished(synth_lmdb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed 10-iteration run: one real snapshot to copy around."""
    tmp = tmp_path_factory.mktemp("live")
    exp = experiment(synth_lmdb, solver={"max_iter": 10}, validation={"interval": 10}, snapshot={"interval": 10})
    r = orchestrate("run", str(write_exp(tmp, exp)), "--run-dir", str(tmp / "run"))
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp / "run"


def churn(run: Path, template: Path, stop: threading.Event) -> None:
    """What a live run does to its folder, as fast as it can: stage iter_N.tmp file by file,
    rename it into place, prune all but the newest, replace summary.json through a .tmp."""
    snaps, n = run / "snapshots", 20
    while not stop.is_set():
        tmp = snaps / f"iter_{n}.tmp"
        tmp.mkdir()
        for f in template.iterdir():
            shutil.copyfile(f, tmp / f.name)
        os.replace(tmp, snaps / f"iter_{n}")
        for old in snaps.glob("iter_*"):
            if old.name != f"iter_{n}" and not old.name.endswith(".tmp"):
                shutil.rmtree(old)
        summary = run / "summary.json"
        (run / "summary.json.tmp").write_text(summary.read_text())
        os.replace(run / "summary.json.tmp", summary)
        n += 10


def test_every_reader_of_a_live_run_skips_what_vanishes(finished, tmp_path):
    root = tmp_path / "runs"
    run = root / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns(LOCK))
    template = tmp_path / "template"
    shutil.copytree(run / "snapshots" / "iter_10", template)
    fd = os.open(run / LOCK, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the owner's lock: readers must not rename what they find damaged
    stop = threading.Event()
    writer = threading.Thread(target=churn, args=(run, template, stop))
    writer.start()
    readers = {
        "runs table": lambda: runs_table(str(root)),
        "find_runs": lambda: find_runs(root),
        "run_row": lambda: run_row(run),
        "snapshot_dirs": lambda: RunDir(run).snapshot_dirs(),
        "trained_iterations": lambda: RunDir(run).trained_iterations(),
        "intact_snapshot": lambda: RunDir(run).intact_snapshot(check_older=True, rename=False),
        "verify_snapshot": lambda: [verify_snapshot(p) for _, p in RunDir(run).snapshot_dirs()],
    }
    calls, seen = dict.fromkeys(readers, 0), []
    try:
        end = time.monotonic() + 6
        while time.monotonic() < end:
            for name, read in readers.items():
                out = read()  # raises on the race this test is about
                calls[name] += 1
                if name == "runs table":
                    seen.append(out)
    finally:
        stop.set()
        writer.join()
        os.close(fd)
    assert min(calls.values()) >= 20, calls
    assert all("run " in t and "running" not in t.split("\n", 1)[0] for t in seen)
    assert all(t.splitlines()[1].startswith("run ") for t in seen), seen[-1]
    assert not list((run / "snapshots").glob("*.corrupt")), "a reader renamed a live run's snapshot"


def test_vanished_snapshot_files_are_said_not_raised(finished, tmp_path):
    """verify_snapshot on a folder pruned under it: each file, and the whole folder (without its
    manifest a snapshot is checked by parsing its files, by design: it stays whole)."""
    snap = finished / "snapshots" / "iter_10"
    for name in [p.name for p in snap.iterdir() if p.name != MANIFEST] + [None]:
        copy = tmp_path / f"gone-{name}" / "iter_10"
        shutil.copytree(snap, copy)
        if name is None:
            shutil.rmtree(copy)
        else:
            (copy / name).unlink()
        problem = verify_snapshot(copy)
        assert problem and (name is None or name in problem), (name, problem)


def test_runs_and_predict_while_the_run_prunes_every_snapshot(synth_lmdb, tmp_path):
    """The real thing: a run snapshotting every 5 iterations and keeping one; `runs` and
    `predict --snapshot last` (whose snapshot is gone moments later) succeed meanwhile."""
    run = tmp_path / "run"
    exp = experiment(
        synth_lmdb, solver={"max_iter": 3000}, validation={"interval": 1000}, snapshot={"interval": 5, "keep_last": 1}
    )
    proc = start_run(write_exp(tmp_path, exp), run)
    try:
        wait_for_iter(run, 10, proc)
        for k in range(3):
            table = orchestrate("runs", str(tmp_path))
            assert table.returncode == 0 and "running" in table.stdout, table.stdout + table.stderr
            out = tmp_path / f"pred{k}"
            images = synth_lmdb / "raw" / "images"
            r = orchestrate("predict", str(run), "--images", str(images), "--out", str(out), "--snapshot", "last")
            assert r.returncode == 0, r.stderr[-2000:]
            assert not [p.name for p in out.iterdir() if p.name.startswith(".pinned-")]
            assert all((out / f"{p.stem}.png").is_file() for p in images.iterdir())
        assert proc.poll() is None, "the run ended before the readers were done: the race was not run"
    finally:
        proc.kill()
        proc.communicate(timeout=60)
