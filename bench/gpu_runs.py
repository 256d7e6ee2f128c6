"""The demo on a device, end to end, and a run killed mid-way and resumed on the same device.

    gpu_runs.py demo   --device gpu:0 --work DIR [--set key=value ...]   the demo as shipped
    gpu_runs.py resume --device gpu:0 --work DIR [--kill-at 250]        kill -9, then resume

`demo` prints the status, the val mIoU (best and last) and the wall time. `resume` starts the
demo with snapshots every --snapshot iterations and no early stop, kills the whole process group with
SIGKILL once the metrics log passes --kill-at, runs `orchestrate resume` and checks that it
continued from the newest intact snapshot and completed every iteration once. Both print one
`gpu-<step> PASS|FAIL` line and, with --out, write their numbers as JSON. Run from the folder
holding experiments/ (a checkout or an unpacked bundle).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

EXP = "experiments/demo.yaml"


def orchestrate(*args: str) -> list[str]:
    """The command line of `orchestrate ARGS` with this interpreter (the bundle's, in the check)."""
    return [sys.executable, "-m", "orchestrator.cli", *args]


def last_iteration(metrics: Path) -> int:
    """The newest iteration in metrics.jsonl (0 before the first)."""
    if not metrics.exists():
        return 0
    lines = [line for line in metrics.read_text().splitlines() if line.strip()]
    try:
        return int(json.loads(lines[-1])["iter"]) if lines else 0
    except (json.JSONDecodeError, KeyError):  # a line being written
        return int(json.loads(lines[-2])["iter"]) if len(lines) > 1 else 0


def outcome(run_dir: Path) -> dict[str, Any]:
    """status, iterations and val mIoU (best, last) from the run directory's own files."""
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    val = (
        [json.loads(line) for line in (run_dir / "val.jsonl").read_text().splitlines() if line.strip()]
        if (run_dir / "val.jsonl").exists()
        else []
    )
    best = summary.get("best") or {}
    return {
        "status": summary.get("status"),
        "stop_reason": summary.get("stop_reason"),
        "iterations": summary.get("iterations"),
        "best_iteration": best.get("iteration"),
        "best_mean_iu": (best.get("metrics") or {}).get("mean_iu"),
        "last_mean_iu": val[-1].get("mean_iu") if val else None,
        "findings": sorted({f["code"] for f in summary.get("findings", [])}),
    }


def demo(a: argparse.Namespace) -> dict[str, Any]:
    """The demo as shipped on the device: does GPU mode train, to what mIoU, how fast."""
    run_dir = a.work / "demo"
    sets = [x for kv in [f"device={a.device}", *a.set] for x in ("--set", kv)]
    t0 = time.time()
    p = subprocess.run(
        orchestrate("run", EXP, "--run-dir", str(run_dir), "--fresh", "--quiet", *sets), capture_output=True, text=True
    )
    res = {
        "step": "demo",
        "device": a.device,
        "exit": p.returncode,
        "seconds": round(time.time() - t0, 1),
        **outcome(run_dir),
    }
    res["pass"] = p.returncode == 0 and res["status"] in ("completed", "early_stopped")
    if not res["pass"]:
        res["tail"] = (p.stdout + p.stderr)[-3000:]
    return res


def resume(a: argparse.Namespace) -> dict[str, Any]:
    """kill -9 mid-run, then `orchestrate resume`: does a GPU run continue where it stood?"""
    run_dir = a.work / "killed"
    total = a.max_iter
    sets = [
        x
        for kv in [
            f"device={a.device}",
            f"solver.max_iter={total}",
            f"snapshot.interval={a.snapshot}",
            "early_stop.enabled=false",
            *a.set,
        ]
        for x in ("--set", kv)
    ]
    t0 = time.time()
    proc = subprocess.Popen(
        orchestrate("run", EXP, "--run-dir", str(run_dir), "--fresh", "--quiet", *sets),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while proc.poll() is None and last_iteration(run_dir / "metrics.jsonl") < a.kill_at:
            if time.time() - t0 > a.timeout:
                break
            time.sleep(0.05)
    finally:  # also when this script is stopped: the run has its own session, nobody else ends it
        killed_at = last_iteration(run_dir / "metrics.jsonl")
        was_running = proc.poll() is None
        if was_running:
            os.killpg(proc.pid, signal.SIGKILL)  # the parent and its training child together
        proc.wait()
    snaps = sorted(int(p.name.split("_")[1]) for p in (run_dir / "snapshots").glob("iter_*") if p.name[5:].isdigit())
    p = subprocess.run(
        orchestrate("resume", str(run_dir), "--set", "progress.quiet=true"), capture_output=True, text=True
    )
    resumed = next((int(s.split()[-1]) for s in p.stdout.splitlines() if s.startswith("resumed from iteration")), None)
    metrics = run_dir / "metrics.jsonl"
    iters = [json.loads(s)["iter"] for s in metrics.read_text().splitlines() if s.strip()] if metrics.exists() else []
    res = {
        "step": "resume",
        "device": a.device,
        "killed_at_iteration": killed_at,
        "killed_while_running": was_running,
        "snapshots_at_kill": snaps,
        "resumed_from": resumed,
        "resume_exit": p.returncode,
        "seconds": round(time.time() - t0, 1),
        "iterations_logged_once": iters == list(range(1, total + 1)),
        **outcome(run_dir),
    }
    res["pass"] = (
        was_running
        and p.returncode == 0
        and res["status"] == "completed"
        and res["iterations"] == total
        and resumed == (snaps[-1] if snaps else None)
        and res["iterations_logged_once"]
    )
    if not res["pass"]:
        res["tail"] = (p.stdout + p.stderr)[-3000:]
    return res


def main() -> int:
    """One step; its verdict line; exit 1 when it failed."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=("demo", "resume"))
    ap.add_argument("--device", default="gpu:0")
    ap.add_argument("--work", type=Path, required=True, help="folder for the run directories")
    ap.add_argument("--set", action="append", default=[], help="extra overrides for the demo (key=value)")
    ap.add_argument("--max-iter", type=int, default=400, help="resume: iterations of the killed run (default 400)")
    ap.add_argument("--snapshot", type=int, default=100, help="resume: snapshot interval (default 100)")
    ap.add_argument("--kill-at", type=int, default=250, help="resume: kill once this iteration is logged (default 250)")
    ap.add_argument("--timeout", type=float, default=240, help="resume: kill at the latest after this many seconds")
    ap.add_argument("--out", type=Path, help="write the numbers as JSON")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a time limit ends us through `finally`
    res = demo(a) if a.step == "demo" else resume(a)
    print(json.dumps({k: v for k, v in res.items() if k != "tail"}))
    if "tail" in res:
        print(res["tail"], file=sys.stderr)
    print(f"gpu-{a.step} {'PASS' if res['pass'] else 'FAIL'}", flush=True)
    if a.out:
        a.out.write_text(json.dumps(res, indent=1))
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
