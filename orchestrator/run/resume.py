"""The parent side of `orchestrate resume`: lock the run, pick the newest intact snapshot,
read the (possibly edited) config.yaml with `--set` on top, apply what may change, refuse
what may not, and leave a finished run alone unless a change asks it to go on."""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from common.errors import UserError
from common.findings import Finding
from orchestrator.config import experiment as cfgmod
from orchestrator.config.schema import to_dict
from orchestrator.contract import HOOKS
from orchestrator.run import resume_policy as policy
from orchestrator.rundir import RunDir, relink_snapshot, require_run_dir


def read_run_config(run: RunDir, overrides: list[str]) -> cfgmod.Experiment:
    """config.yaml as the user left it, plus overrides; UserError naming the file when broken."""
    try:
        raw = yaml.safe_load(run.config.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(
            f"{run.config}: not valid YAML: {e}", "fix the file (it is the run's resolved experiment) and resume again"
        ) from None
    if not isinstance(raw, dict):
        raise UserError(f"{run.config}: must be a YAML mapping", "restore the run's config.yaml")
    return cfgmod.absolutize(cfgmod.from_dict(raw, overrides, str(run.config)))


def _saved_config(snapshot: Any) -> dict[str, Any] | None:
    """The config the snapshot was trained with (None for snapshots made before it was kept)."""
    saved = json.loads((snapshot / HOOKS).read_text())
    return saved.get("config")


def plan_resume(path: str, overrides: list[str]) -> tuple[RunDir, cfgmod.Experiment, int, list[Finding]] | None:
    """(run, experiment, snapshot iteration, notes for the run's findings), or None when the
    run is finished and nothing asks it to continue (the reason is printed)."""
    run = require_run_dir(path)
    run.acquire_lock()
    run.remove_temp_files()
    exp = read_run_config(run, overrides)
    (snap, skipped) = run.intact_snapshot()
    notes = [
        Finding(
            "warning",
            "snapshot-skipped",
            None,
            f"{line}; resumed from an older snapshot",
            "none needed: the damaged snapshot was renamed to iter_N.corrupt for inspection",
        )
        for line in skipped
    ]
    for n in notes:
        print(f"warning: skipped {n.message}", file=sys.stderr)
    if snap is None:
        why = ("; ".join(skipped) + ". ") if skipped else ""
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
    run.config.write_text(cfgmod.to_yaml(exp))
    for _, p in run.snapshot_dirs():  # a moved or copied run: Caffe's own tools find the weights
        relink_snapshot(p)
    return run, exp, iteration, notes
