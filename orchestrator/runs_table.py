"""`orchestrate runs [DIR]`: one line per run directory under a folder, to compare experiments."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from common.errors import UserError
from orchestrator.contract import MARKER, RUN_FILES, Status
from orchestrator.rundir import RunDir

STALE = "stale"  # summary.json says running, but no process owns the run: it was killed


def _max_iter(run: RunDir) -> int | None:
    """solver.max_iter of the run's config.yaml (summaries written before training lack it)."""
    try:
        cfg = yaml.safe_load(run.config.read_text())
        return int(cfg["solver"]["max_iter"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def run_row(folder: Path) -> dict[str, Any]:
    """name, status, iterations, best mIoU and where, training time, of one run directory.
    A run whose training process died tells its iterations by its logs, and a `running` that
    no process holds is shown as stale."""
    run = RunDir(folder)
    try:
        s = json.loads(run.summary.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        s = {}
    s = s if isinstance(s, dict) else {}
    best = s.get("best") or {}
    status = s.get("status", "?")
    if status == Status.RUNNING and not run.lock_is_held():
        status = STALE
    iterations = s.get("iterations")
    if status in (STALE, Status.RUNNING, Status.FAILED) or not iterations:
        iterations = max(iterations or 0, run.trained_iterations())
    return {
        "name": folder.name,
        "status": status,
        "iterations": iterations,
        "max_iter": s.get("max_iter") or _max_iter(run),
        "best_miou": (best.get("metrics") or {}).get("mean_iu"),
        "best_iter": best.get("iteration"),
        "seconds": s.get("train_seconds"),
    }


def find_runs(folder: Path) -> list[Path]:
    """Run directories at any depth below `folder` (a sweep keeps its trials one level down).
    A live run renames and deletes its snapshot folders while we look: os.walk skips what
    vanished (pathlib's rglob raised FileNotFoundError), and a run's snapshots are not entered."""
    found = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        if MARKER in files or (RUN_FILES["summary"] in files and RUN_FILES["config"] in files):
            found.append(here)
            dirs[:] = [d for d in dirs if d != RUN_FILES["snapshots"]]
    return sorted(found)


def _fmt_time(sec: float | None) -> str:
    if sec is None:
        return "-"
    m, s = divmod(int(sec), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def runs_table(folder: str) -> str:
    """The table as text, best mIoU first (runs without a validation last)."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{folder} is not a folder", "give the folder that holds run directories, e.g. runs")
    rows = [run_row(p) | {"name": str(p.relative_to(root)) if p != root else p.name} for p in find_runs(root)]
    if not rows:
        return f"no run directories under {folder}"
    rows.sort(key=lambda r: (r["best_miou"] is None, -(r["best_miou"] or 0.0), r["name"]))
    width = max(len("run"), *(len(r["name"]) for r in rows))
    lines = [f"{'run':<{width}}  {'status':<13} {'iter':>11}  {'best mIoU':>9} {'at':>6}  {'time':>8}"]
    for r in rows:
        it = f"{r['iterations'] or 0}/{r['max_iter'] or '?'}"
        miou = "-" if r["best_miou"] is None else f"{r['best_miou']:.4f}"
        lines.append(
            f"{r['name']:<{width}}  {r['status']:<13} {it:>11}  {miou:>9} {r['best_iter'] or '-':>6}  "
            f"{_fmt_time(r['seconds']):>8}"
        )
    if any(r["status"] == STALE for r in rows):
        lines.append(
            f"\n{STALE}: summary.json says running, but no process owns the run (it was killed); "
            "continue it with orchestrate resume RUN_DIR"
        )
    return "\n".join(lines)
