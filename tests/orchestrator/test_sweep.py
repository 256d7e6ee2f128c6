"""`orchestrate sweep` on a real local Ray: trials are normal runs, a diverging trial is recorded
and does not stop the sweep, ASHA stops poor trials early, the doctor runs once before any
trial, and a killed sweep resumes without touching finished trials."""

from __future__ import annotations

import csv
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.orchestrator.conftest import experiment, orchestrate, orchestrate_bg

pytestmark = [pytest.mark.caffe, pytest.mark.ray, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ray_head(tmp_path, monkeypatch):
    """A local Ray head node started by the test (2 CPUs), stopped afterwards. Token
    authentication is off for this private test cluster (head and driver share no token file)."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    port = free_port()
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    r = subprocess.run(
        [
            *ray,
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--num-gpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    yield f"127.0.0.1:{port}"
    subprocess.run([*ray, "stop", "--force"], capture_output=True, timeout=120)


def write_sweep(tmp_path: Path, synth_lmdb: Path, space: dict, **extra: object) -> Path:
    base = experiment(
        synth_lmdb,
        solver={"type": "Adam", "base_lr": 0.002, "max_iter": 100},
        validation={"interval": 25},
        snapshot={"interval": 25},
    )
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {"name": "t", "base": str(tmp_path / "base.yaml"), "space": space, **extra}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return tmp_path / "sweep.yaml"


def tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no output)"


def summaries(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((out / "trials").glob("trial_*/summary.json"))}


def test_sweep_on_ray_records_every_trial_and_stops_poor_ones(synth_lmdb, tmp_path, ray_head):
    # trial_002 diverges; trial_003 barely learns and should be stopped at a rung
    sweep = write_sweep(
        tmp_path,
        synth_lmdb,
        {"solver.base_lr": {"grid": [0.002, 0.004, 1.0e4, 1.0e-7]}},
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
    )
    out = tmp_path / "out"
    r = orchestrate("sweep", str(sweep), "--address", ray_head, "--max-concurrent", "2", "--out", str(out), timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    s = summaries(out)
    assert sorted(s) == ["trial_000", "trial_001", "trial_002", "trial_003"]
    assert s["trial_002"]["status"] == "diverged"
    assert any(f["severity"] == "error" for f in s["trial_002"]["findings"])
    stopped = [t for t, v in s.items() if v["status"] == "early_stopped" and "stopped by the sweep" in v["stop_reason"]]
    assert stopped and all(s[t]["iterations"] < 100 for t in stopped)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 4
    best = json.loads((out / "summary.json").read_text())["best"]
    mine = s[best["trial"]]["best"]
    assert best["value"] == pytest.approx(mine["metrics"]["mean_iu"]) and best["iteration"] == mine["iteration"]
    row = next(x for x in rows if x["trial"] == best["trial"])
    assert float(row["best_miou"]) == pytest.approx(mine["metrics"]["mean_iu"])
    assert max(float(x["best_miou"]) for x in rows if x["best_miou"]) == pytest.approx(best["value"])
    assert best["trial"] in r.stdout and "diverged" in r.stdout


def test_a_broken_net_stops_the_sweep_before_any_trial(synth_lmdb, tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text((REPO / "tests" / "nets" / "data" / "seed_train_val.prototxt").read_text())
    sweep = write_sweep(tmp_path, synth_lmdb, {"solver.base_lr": {"grid": [0.001, 0.002, 0.003]}})
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["net"] = {"prototxt": str(net), "num_classes": 5, "ignore_label": 255}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    r = orchestrate("sweep", str(sweep), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "before any trial" in r.stderr and "trials trial_000, trial_001, trial_002" in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(synth_lmdb, tmp_path):
    sweep = write_sweep(tmp_path, synth_lmdb, {"solver.base_lr": {"grid": [0.002, 0.003, 0.004]}}, max_concurrent=1)
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["solver"]["max_iter"] = 300
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    out = tmp_path / "out"
    log = open(tmp_path / "sweep.log", "w")
    proc = orchestrate_bg("sweep", str(sweep), "--out", str(out), stdout=log, stderr=log, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        s = summaries(out) if (out / "trials").exists() else {}
        finished = [t for t, v in s.items() if v.get("status") == "completed"]
        running = [t for t, v in s.items() if v.get("status") == "running"]
        if finished and running and (out / "trials" / running[0] / "snapshots").exists():
            break
        assert proc.poll() is None, "the sweep ended before it could be killed:\n" + tail(tmp_path / "sweep.log")
        time.sleep(0.5)
    else:
        pytest.fail("no finished and running trial at once")
    done = out / "trials" / finished[0]
    before = {p: p.stat().st_mtime_ns for p in done.rglob("*") if p.is_file() and p.name != ".lock"}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # the trial's run gets SIGTERM from its dying Ray worker and snapshots
    r = orchestrate("sweep", "--resume", str(out), timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "finished (kept)" in r.stdout
    s = summaries(out)
    assert [v["status"] for v in s.values()] == ["completed"] * 3
    assert {p: p.stat().st_mtime_ns for p in before} == before  # the finished trial untouched


class SlowRay:
    """ray's init and shutdown as a busy machine shows them: the local node misses Ray's fixed
    30 s start-up wait `misses` times (a real Ray cannot be made that slow on demand)."""

    def __init__(self, misses: int, error: str = "The current node timed out during startup.") -> None:
        self.misses, self.error, self.inits, self.shutdowns = misses, error, 0, 0

    def init(self, **kw: object) -> None:
        self.inits += 1
        if self.inits <= self.misses:
            raise Exception(self.error)

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_ray_that_starts_too_slowly_is_tried_again_then_said(monkeypatch, capsys):
    from common.errors import UserError
    from orchestrator.sweep import driver

    monkeypatch.setattr(driver, "RAY_RETRY_PAUSE_S", 0.0)
    late = SlowRay(misses=2)
    driver._start_ray(late, "local")
    assert (late.inits, late.shutdowns) == (3, 2)
    assert "try 2 of 3" in capsys.readouterr().out
    never = SlowRay(misses=99)
    with pytest.raises(UserError) as e:
        driver._start_ray(never, "local")
    assert never.inits == 3 and "did not start in time" in str(e.value) and "--address" in e.value.fix
    other = SlowRay(misses=1, error="something else")
    with pytest.raises(Exception, match="something else"):
        driver._start_ray(other, "local")
    assert other.inits == 1
