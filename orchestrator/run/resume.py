"""The parent side of `orchestrate resume`: lock the run, pick the newest intact snapshot,
read the (possibly edited) config.yaml with `--set` on top, apply what may change, refuse
what may not, and leave a finished run alone unless a change asks it to go on."""

from __future__ import annotations

import json
import sys
from typing import Any, NamedTuple

from common.errors import UserError
from common.findings import Finding
from orchestrator.config import experiment as cfgmod
from orchestrator.config import yamlio
from orchestrator.config.schema import to_dict
from orchestrator.contract import HOOKS, Status
from orchestrator.run import resume_policy as policy
from orchestrator.rundir import RunDir, require_run_dir
from orchestrator.snapcheck import relink_snapshot


def read_run_config(run: RunDir, overrides: list[str]) -> cfgmod.Experiment:
    """config.yaml as the user left it, plus overrides; UserError naming the file when broken."""
    raw = yamlio.load_mapping(  # bounded like any experiment file: the user may have edited it
        run.config, "run's config.yaml", "fix the file (it is the run's resolved experiment) and resume again"
    )
    return cfgmod.absolutize(cfgmod.from_dict(raw, overrides, str(run.config)))


def _saved_config(snapshot: Any) -> dict[str, Any] | None:
    """The config the snapshot was trained with (None for snapshots made before it was kept)."""
    saved = json.loads((snapshot / HOOKS).read_text())
    return saved.get("config")


class ResumePlan(NamedTuple):
    """What a resume does: the run, its experiment (with the edits), the snapshot iteration, notes
    for the run's findings, and whether the user set a new solver.base_lr (it wins over one that
    lr-on-plateau had reduced: WorkerArgs.keep_solver_lr)."""

    run: RunDir
    exp: cfgmod.Experiment
    iteration: int
    notes: list[Finding]
    keep_solver_lr: bool = False


def plan_resume(path: str, overrides: list[str]) -> ResumePlan | None:
    """The resume's plan, or None when the run is finished and nothing asks it to continue (the
    reason is printed)."""
    run = require_run_dir(path)
    run.acquire_lock()
    notes = _stale_status(run)
    run.remove_temp_files()
    exp = read_run_config(run, overrides)
    # every snapshot, not only the newest: relinking and pruning touch the older ones too
    (snap, damaged) = run.intact_snapshot(check_older=True)
    notes += [_damaged_note(line, snap is None or it > snap[0]) for it, line in damaged]
    if snap is None:
        why = ("; ".join(line for _, line in damaged) + ". ") if damaged else ""
        raise UserError(
            f"{run.root}: no intact snapshot to resume from. {why}".strip(),
            f"start again with orchestrate run EXP --run-dir {run.root} --fresh",
        )
    iteration, folder = snap
    saved = _saved_config(folder)
    changes = policy.config_changes(saved, to_dict(exp)) if saved is not None else {}
    allowed, refused = policy.split_changes(changes)
    if refused:
        lines = "\n  - ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise UserError(
            f"{run.root}: resume cannot change what was trained (data, net, seed, weights, surgery, "
            f"solver.type); these differ from snapshot iter_{iteration}:\n  - {lines}",
            "undo these edits in config.yaml (or drop those --set), or start a new run with orchestrate run",
        )
    summary = run.summary_data()
    reason = policy.continue_decision(summary.get("status"), summary.get("iterations"), exp.solver.max_iter, allowed)
    if reason is not None:
        print(reason)
        return None
    if allowed:
        text = policy.describe(allowed)
        print(f"resume applies: {text}")
        notes.append(
            Finding(
                "info",
                "resume-changes",
                None,
                f"resumed at iteration {iteration} with changed settings: {text}",
                "none needed",
                {k: [old, new] for k, (old, new) in allowed.items()},
            )
        )
    for _, p in run.snapshot_dirs():  # a moved or copied run: Caffe's own tools find the weights
        relink_snapshot(p)
    return ResumePlan(run, exp, iteration, notes, keep_solver_lr=policy.keeps_solver_lr(allowed))


def _damaged_note(line: str, skipped: bool) -> Finding:
    """A damaged snapshot as a warning (printed now, kept in the run's findings)."""
    what = "skipped" if skipped else "damaged older snapshot"
    print(f"warning: {what} {line}", file=sys.stderr)
    return Finding(
        "warning",
        "snapshot-skipped" if skipped else "snapshot-damaged",
        None,
        f"{line}" + ("; resumed from an older snapshot" if skipped else ""),
        "none needed: the damaged snapshot was renamed to iter_N.corrupt for inspection",
    )


def _stale_status(run: RunDir) -> list[Finding]:
    """summary.json saying `running` while we hold the lock: the process that wrote it was killed
    (kill -9, a crash, the machine went down). Said, and the logs tell how far it got."""
    summary = run.summary_data()
    if summary.get("status") != Status.RUNNING:
        return []
    done = run.trained_iterations()
    msg = (
        f"summary.json said running, but no process owned {run.root}: the last run or resume was killed "
        f"(it trained to iteration {done} by metrics.jsonl)"
    )
    print(f"note: {msg}", file=sys.stderr)
    return [
        Finding("warning", "stale-running", None, msg, "none needed: resume continues from the newest intact snapshot")
    ]
