"""What `orchestrate run/resume` tells a person on the console, besides the progress bar: a few
lines at the start (where, on what, with which data and net, the doctor's verdict) and, at the
end, the command that comes next (resume after Ctrl-C, predict after a finished run)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from common.datastats import STATS_FILE, read_stats
from common.findings import Finding
from orchestrator.config import experiment as cfgmod
from orchestrator.contract import RunMeta, Status, class_labels
from orchestrator.rundir import RunDir


def shown_path(p: Path) -> str:
    """A path as a person would type it: relative to the current folder when inside it."""
    try:
        rel = p.resolve().relative_to(Path.cwd().resolve())
        return shlex.quote(str(rel) or ".")
    except ValueError:
        return shlex.quote(str(p))


def blas_threads() -> str:
    """The BLAS threads the Caffe child will use (OpenBLAS/OpenMP take every core unless told)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            return f"{os.environ[var]} ({var})"
    return f"{len(os.sched_getaffinity(0))} (all cores; set OPENBLAS_NUM_THREADS to change)"


def _images(d: str | None) -> int | None:
    stats = read_stats(d, required=False) if d else {}
    n = stats.get("num_records")
    return int(n) if n is not None else None


def net_line(exp: cfgmod.Experiment, meta: RunMeta) -> str:
    """The net in a few words: generated (arch, size, loss) or the user's prototxt; its classes."""
    n = exp.net
    if n.prototxt:
        what = f"your prototxt {n.prototxt}"
    else:
        what = f"generated {n.arch} (width {n.width}, depth {n.depth}), loss {n.loss} {n.normalization}"
    names = class_labels(meta.class_names, meta.num_classes or 0)
    if names:
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        what += f"; {len(names)} classes: {shown}"
    return what


def verdict_line(findings: list[Finding], forced: bool) -> str:
    """The doctor's verdict: ok, or how many errors and warnings and which."""
    errors = [f.code for f in findings if f.severity == "error"]
    warnings = [f.code for f in findings if f.severity == "warning"]
    if not errors and not warnings:
        return "ok, no findings"
    parts = []
    if errors:
        parts.append(f"{len(errors)} error(s) ({', '.join(sorted(set(errors)))})")
    if warnings:
        parts.append(f"{len(warnings)} warning(s) ({', '.join(sorted(set(warnings)))})")
    tail = "; training anyway (--force)" if errors and forced else "; details above"
    return ", ".join(parts) + tail


def start_lines(exp: cfgmod.Experiment, run: RunDir, findings: list[Finding], forced: bool = False) -> list[str]:
    """The few lines printed before training starts."""
    meta = RunMeta.read(run.meta)
    train, val = _images(exp.data.train), _images(exp.data.val)
    data = f"{train if train is not None else '?'} train images"
    if exp.data.val:
        data += f", {meta.val_images} val images each validation"
        if val is not None and meta.val_images < val:
            data += f" (of {val})"
    else:
        data += ", no validation (data.val not set)"
    device = exp.device if exp.gpu_id is not None else f"cpu, BLAS threads {blas_threads()}"
    return [
        f"run dir:  {shown_path(run.root)}",
        f"device:   {device}",
        f"data:     {data}",
        f"net:      {net_line(exp, meta)}",
        f"doctor:   {verdict_line(findings, forced)}",
    ]


def resume_lines(exp: cfgmod.Experiment, run: RunDir, iteration: int) -> list[str]:
    """The start lines of a resume: from which iteration, and the run's own pre-flight verdict."""
    import json

    try:
        findings = [Finding.from_dict(d) for d in json.loads(run.findings.read_text())]
    except (OSError, ValueError, KeyError, TypeError):
        findings = []
    lines = start_lines(exp, run, findings)
    return [f"resuming: from the snapshot at iteration {iteration} to {exp.solver.max_iter}"] + lines


def next_step(run: RunDir, summary: dict[str, Any]) -> str | None:
    """The command that comes next for a run that ended with `summary`."""
    where = shown_path(run.root)
    status = summary.get("status")
    if status == Status.INTERRUPTED and run.snapshot_dirs():
        return f"continue with: orchestrate resume {where}"
    best = (summary.get("best") or {}).get("snapshot")
    if status in (Status.COMPLETED, Status.EARLY_STOPPED) and best:
        return (
            f"segment images with the best snapshot ({best}): "
            f"orchestrate predict {where} --images YOUR_IMAGES/ --out {shown_path(run.root / 'pred')}"
        )
    return None


def path_notes(exp: cfgmod.Experiment) -> list[str]:
    """What `validate` notes (never an error: a valid file may name data not built yet): the
    experiment's paths that do not exist now, and what will make them."""
    notes = []
    b = exp.data.build
    for key, d, lst in (
        ("data.train", exp.data.train, b and b.train_list),
        ("data.val", exp.data.val, b and b.val_list),
    ):
        if not d or (Path(d) / STATS_FILE).exists():
            continue
        source = Path(b.root) / lst if b and lst else None
        if source is not None and source.exists():
            notes.append(f"{key} {d} does not exist yet: `orchestrate run` builds it from {source}")
        elif source is not None:
            notes.append(
                f"{key} {d} does not exist yet, nor its source data.build list {source}: make the raw data first"
            )
        else:
            notes.append(f"{key} {d} does not exist yet: build it with `orchestrate data build ... --out {d}`")
    for key, f in (
        ("net.prototxt", exp.net.prototxt),
        ("solver.prototxt", exp.solver.prototxt),
        ("weights", exp.weights),
    ):
        if f and not Path(f).exists():
            notes.append(f"{key} {f} does not exist")
    return notes
