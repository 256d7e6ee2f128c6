"""Run directories on real Caffe: `--fresh` deletes only our folders, one owner at a time, resume
honours or refuses edits, finished runs stay finished, damaged snapshots are skipped, a run dir
can move, and a failed start leaves nothing behind."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from orchestrator.jsonio import read_jsonl
from tests.orchestrator.conftest import experiment, orchestrate, orchestrate_bg, write_exp
from tests.orchestrator.test_resume import wait_for_iter

pytestmark = pytest.mark.caffe


def no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]


def trained(synth_lmdb: Path, tmp_path: Path, name: str = "run", **over: object) -> Path:
    """A completed 40-iteration run (snapshots at 10..40, validation at 20 and 40)."""
    run = tmp_path / name
    r = orchestrate("run", str(write_exp(tmp_path, experiment(synth_lmdb, **over))), "--run-dir", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    return run


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_fresh_refuses_a_folder_we_did_not_create(synth_lmdb, tmp_path):
    data = tmp_path / "dataset"
    shutil.copytree(synth_lmdb / "train", data)
    before = sorted(p.name for p in data.iterdir())
    r = orchestrate("run", str(write_exp(tmp_path, experiment(synth_lmdb))), "--run-dir", str(data), "--fresh")
    assert r.returncode == 2 and "not created by orchestrate run" in r.stderr and str(data) in r.stderr
    assert sorted(p.name for p in data.iterdir()) == before  # nothing deleted, nothing added
    no_traceback(r)


def test_fresh_replaces_our_own_run_and_rerun_after_preflight_needs_no_fresh(synth_lmdb, tmp_path):
    run = trained(synth_lmdb, tmp_path)
    r = orchestrate("run", str(write_exp(tmp_path, experiment(synth_lmdb))), "--run-dir", str(run))
    assert r.returncode == 2 and "already holds a run" in r.stderr
    r = orchestrate(
        "run",
        str(write_exp(tmp_path, experiment(synth_lmdb, solver={"max_iter": 20}))),
        "--run-dir",
        str(run),
        "--fresh",
    )
    assert r.returncode == 0 and summary(run)["iterations"] == 20
    assert [m["iter"] for m in read_jsonl(run / "metrics.jsonl")] == list(range(1, 21))


def test_a_failed_start_leaves_nothing_behind(synth_lmdb, tmp_path):
    run = tmp_path / "run"
    exp = experiment(synth_lmdb)
    exp["data"]["train"] = str(tmp_path / "missing")
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run))
    assert r.returncode == 2 and "data.train" in r.stderr and str(tmp_path / "missing") in r.stderr
    assert not run.exists()
    # a build list that is missing: nothing created either
    exp["data"].update(
        train=str(tmp_path / "d" / "train"), build={"root": str(tmp_path), "train_list": "nope.txt", "num_classes": 5}
    )
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run))
    assert r.returncode == 2 and "nope.txt" in r.stderr and not run.exists()
    no_traceback(r)


def test_one_owner_at_a_time(synth_lmdb, tmp_path):
    run = tmp_path / "run"
    exp = write_exp(tmp_path, experiment(synth_lmdb, solver={"max_iter": 2000}, snapshot={"interval": 10}))
    proc = orchestrate_bg("run", str(exp), "--run-dir", str(run))
    try:
        wait_for_iter(run, 12, proc)
        for args in (("resume", str(run)), ("run", str(exp), "--run-dir", str(run), "--fresh")):
            r = orchestrate(*args)
            assert r.returncode == 2 and f"in use by pid {proc.pid}" in r.stderr, r.stderr[-1500:]
            no_traceback(r)
        assert proc.poll() is None and (run / "snapshots").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert summary(run)["status"] == "interrupted"
    # the lock went with its owner: resume now owns the folder (and is refused nothing)
    r = orchestrate("resume", str(run), "--set", "solver.max_iter=30")
    assert r.returncode == 0, r.stderr[-1500:]


def edit_config(run: Path, **sections: dict) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    for k, v in sections.items():
        cfg[k].update(v)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


def test_resume_applies_allowed_edits_and_refuses_the_rest(synth_lmdb, tmp_path):
    run = trained(synth_lmdb, tmp_path)
    before = (run / "config.yaml").read_text()
    edit_config(run, solver={"base_lr": 0.0005, "max_iter": 60}, data={"batch_size": 2})
    r = orchestrate("resume", str(run))
    assert r.returncode == 2 and "data.batch_size: 4 -> 2" in r.stderr and "base_lr" not in r.stderr
    assert summary(run)["iterations"] == 40  # refused: nothing ran
    (run / "config.yaml").write_text(before)
    edit_config(run, solver={"base_lr": 0.0005, "max_iter": 60})
    r = orchestrate("resume", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "solver.base_lr 0.002 -> 0.0005" in r.stdout
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["iter"] for m in metrics] == list(range(1, 61))
    assert [m["lr"] for m in metrics] == pytest.approx([0.002] * 40 + [0.0005] * 20)
    s = summary(run)
    assert s["iterations"] == 60 and any(f["code"] == "resume-changes" for f in s["findings"])
    # resume --set works like run --set, and lands in config.yaml
    r = orchestrate("resume", str(run), "--set", "solver.max_iter=70")
    assert r.returncode == 0 and summary(run)["iterations"] == 70
    assert yaml.safe_load((run / "config.yaml").read_text())["solver"]["max_iter"] == 70
    r = orchestrate("resume", str(run), "--set", "seed=3")
    assert r.returncode == 2 and "seed: 0 -> 3" in r.stderr


def test_a_finished_run_stays_finished(synth_lmdb, tmp_path):
    run = trained(synth_lmdb, tmp_path)
    s0 = summary(run)
    files = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    r = orchestrate("resume", str(run))
    assert r.returncode == 0 and "nothing to do" in r.stdout and "resumed" not in r.stdout
    assert {p: p.stat().st_mtime_ns for p in files} == files and summary(run) == s0
    r = orchestrate("resume", str(run), "--set", "solver.max_iter=50")
    assert r.returncode == 0 and "resumed from iteration 40" in r.stdout
    s1 = summary(run)
    assert s1["iterations"] == 50 and s1["best"] is not None and s1["best"]["iteration"] >= s0["best"]["iteration"]
    assert not Path(s1["best"]["snapshot"]).is_absolute() and (run / s1["best"]["snapshot"]).is_dir()
    kept = {f["code"] for f in s0["findings"]}
    assert kept <= {f["code"] for f in s1["findings"]}  # earlier findings (surgery ...) survive


def test_an_early_stopped_run_stays_stopped(synth_lmdb, tmp_path):
    run = trained(
        synth_lmdb,
        tmp_path,
        solver={"max_iter": 400},
        validation={"interval": 10},
        early_stop={"enabled": True, "patience": 1, "min_delta": 0.5},
    )
    s0, val0 = summary(run), read_jsonl(run / "val.jsonl")
    assert s0["status"] == "early_stopped"
    r = orchestrate("resume", str(run))
    assert r.returncode == 0 and "stopped early" in r.stdout and summary(run) == s0
    assert read_jsonl(run / "val.jsonl") == val0  # no extra validation interval trained
    r = orchestrate(
        "resume", str(run), "--set", "early_stop.enabled=false", "--set", f"solver.max_iter={s0['iterations'] + 10}"
    )
    assert r.returncode == 0 and summary(run)["iterations"] == s0["iterations"] + 10


def test_caffe_data_layer_resumes_the_same_order(synth_lmdb, tmp_path):
    """layer: lmdb (Caffe's Data layers): 20 + resumed 20 iterations equal 40 in one go."""
    straight = trained(synth_lmdb, tmp_path, "straight", solver={"type": "SGD", "base_lr": 0.01, "max_iter": 40})
    split = trained(synth_lmdb, tmp_path, "split", solver={"type": "SGD", "base_lr": 0.01, "max_iter": 20})
    r = orchestrate("resume", str(split), "--set", "solver.max_iter=40")
    assert r.returncode == 0, r.stderr[-2000:]
    a = [m["loss"] for m in read_jsonl(straight / "metrics.jsonl")]
    b = [m["loss"] for m in read_jsonl(split / "metrics.jsonl")]
    assert len(a) == len(b) == 40
    np.testing.assert_allclose(b, a, rtol=1e-5)


@pytest.mark.parametrize("damage", ["truncate-weights", "truncate-state", "hooks-json"])
def test_a_damaged_newest_snapshot_is_skipped(synth_lmdb, tmp_path, damage):
    run = trained(
        synth_lmdb, tmp_path, solver={"max_iter": 40}, snapshot={"interval": 10, "keep_last": 2, "keep_best": False}
    )
    newest = run / "snapshots" / "iter_40"
    target = {
        "truncate-weights": "weights.caffemodel",
        "truncate-state": "state.solverstate",
        "hooks-json": "hooks.json",
    }[damage]
    data = (newest / target).read_bytes()
    (newest / target).write_bytes(data[: len(data) // 2])
    r = orchestrate("resume", str(run), "--set", "solver.max_iter=45")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipped snapshots/iter_40" in r.stderr and target in r.stderr
    assert "resumed from iteration 30" in r.stdout
    s = summary(run)
    assert s["iterations"] == 45 and any(f["code"] == "snapshot-skipped" for f in s["findings"])
    assert (run / "snapshots" / "iter_40.corrupt").is_dir()
    no_traceback(r)


def test_a_broken_config_is_named_and_no_stale_status_is_printed(synth_lmdb, tmp_path):
    run = trained(synth_lmdb, tmp_path)
    (run / "config.yaml").write_text("name: [unclosed\n")
    r = orchestrate("resume", str(run))
    assert r.returncode == 2 and "config.yaml" in r.stderr and "status:" not in r.stdout
    no_traceback(r)


def test_a_run_dir_can_be_moved_or_copied(synth_lmdb, tmp_path):
    run = trained(synth_lmdb, tmp_path, "orig", solver={"max_iter": 20})
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(run, copy)
    orig_files = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    r = orchestrate("resume", str(copy), "--set", "solver.max_iter=30")
    assert r.returncode == 0, r.stderr[-2000:]
    assert summary(copy)["iterations"] == 30 and (copy / "snapshots" / "iter_30").is_dir()
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == orig_files  # the original untouched
    assert summary(run)["iterations"] == 20
    moved = tmp_path / "moved"
    shutil.move(str(run), moved)
    r = orchestrate("resume", str(moved), "--set", "solver.max_iter=30")
    assert r.returncode == 0 and summary(moved)["iterations"] == 30 and not run.exists()


@pytest.fixture
def small_fs(tmp_path):
    """A 3 MiB tmpfs: the run fills it (skipped where mounting is not permitted)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True, timeout=60
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=60)


def test_disk_full_during_a_run(synth_lmdb, tmp_path, small_fs):
    run = small_fs / "run"
    exp = experiment(
        synth_lmdb,
        solver={"max_iter": 3000},
        checks={"stats_interval": 1},
        snapshot={"interval": 5, "keep_last": 1000},
        validation={"interval": 1000},
    )
    r = orchestrate("run", str(write_exp(tmp_path, exp)), "--run-dir", str(run), timeout=600)
    assert r.returncode == 2, r.stdout[-1500:] + r.stderr[-1500:]
    no_traceback(r)
    assert "no space left" in r.stderr.lower() or "could not write" in r.stderr.lower(), r.stderr[-1500:]
    assert not list(run.rglob("*.tmp")) and not list((run / "snapshots").glob("iter_*.tmp"))
    snaps = [p for p in (run / "snapshots").glob("iter_*") if p.name.split("_")[1].isdigit()]
    assert snaps, "complete snapshots stay"
    s = summary(run)
    assert s["status"] == "failed"
    # room again: the run continues from its newest complete snapshot
    for p in sorted(snaps)[:-1]:
        shutil.rmtree(p)
    (run / "metrics.jsonl").write_text("")  # make room (the run's own logs are the bulk)
    r = orchestrate(
        "resume",
        str(run),
        "--set",
        f"solver.max_iter={max(int(p.name[5:]) for p in snaps) + 5}",
        "--set",
        "checks.stats_interval=100",
    )
    assert r.returncode == 0, r.stderr[-1500:]
