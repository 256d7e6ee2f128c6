"""What `orchestrate resume` may change in a run, and whether a finished run continues.

Pure: two resolved configs (plain dicts) and the run's summary in, decisions out. The solver's
hyper-parameters and the controller's own settings can change between two snapshots without
invalidating the weights, the solver history or the data position; the data, the net, the
seed, the weights file and the surgery define what was trained and cannot.
"""

from __future__ import annotations

from typing import Any

from orchestrator.contract import Status

# dotted-key prefixes a resume may change (everything else is refused)
RESUMABLE = (
    "solver.",
    "validation.",
    "snapshot.",
    "early_stop.",
    "lr_on_plateau.",
    "progress.",
    "checks.",
    "name",
    "device",
)
# ...except these, which the saved state depends on (Adam's history is not SGD's)
FIXED = ("solver.type",)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'solver': {'base_lr': 1}} -> {'solver.base_lr': 1}; lists stay leaves."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every dotted key whose value differs: key -> (old, new)."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _resumable(key: str) -> bool:
    if any(key == f or key.startswith(f + ".") for f in FIXED):
        return False
    return any(key == p or key.startswith(p) for p in RESUMABLE)


def split_changes(changes: dict[str, tuple[Any, Any]]) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
    """(allowed, refused) by key."""
    allowed = {k: v for k, v in changes.items() if _resumable(k)}
    return allowed, {k: v for k, v in changes.items() if k not in allowed}


def keeps_solver_lr(allowed: dict[str, tuple[Any, Any]]) -> bool:
    """A solver.base_lr set on resume wins over the one lr-on-plateau had reduced to (the child
    hears it as WorkerArgs.keep_solver_lr); otherwise the reduced lr is restored."""
    return "solver.base_lr" in allowed


def describe(changes: dict[str, tuple[Any, Any]]) -> str:
    """'solver.base_lr 0.002 -> 0.5, solver.max_iter 40 -> 60'."""
    return ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items())


def continue_decision(
    status: str | None, iterations: int | None, max_iter: int, allowed: dict[str, tuple[Any, Any]]
) -> str | None:
    """None when the run should train on; otherwise the sentence that says why not.

    A completed run continues only when max_iter now lies beyond it; an early-stopped one
    also needs its early-stop settings changed (else it would stop again at once)."""
    if status not in {s.value for s in Status if s.finished}:
        return None
    done = int(iterations or 0)
    raise_it = f"raise solver.max_iter above {done} (orchestrate resume RUN_DIR --set solver.max_iter=N)"
    if max_iter <= done:
        return f"the run is {status.replace('_', '-')} at iteration {done}: nothing to do. To train on, {raise_it}"
    if status == Status.EARLY_STOPPED and not any(k.startswith("early_stop.") for k in allowed):
        return (
            f"the run stopped early at iteration {done} and would stop again at the next validation: "
            "nothing to do. To train on, change early_stop (e.g. --set early_stop.enabled=false or a "
            "larger early_stop.patience)"
        )
    return None
