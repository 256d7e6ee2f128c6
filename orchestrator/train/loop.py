"""The small training loop: step the native Caffe solver; everything else is a hook.

Hooks run between iterations in list order: before_train once, after_step after every
solver.step(1), after_train once in a `finally` (so an exception or a stop still snapshots
and writes the summary). Each hook has state_dict/load_state_dict so a resumed run continues.

Validation is an event of its own: right after the hook that validated (it set ctx.val, in its
after_step or after_train), every hook's after_validation runs, before the remaining hooks'
after_step/after_train; lr-on-plateau, early stop, the pictures and TensorBoard react there.

Hooks talk through typed fields of the Context only: `step` (this step's StepRecord, which
the metrics, TensorBoard and progress writers all read) and the validation's facts are reset
by the loop before every step and before after_train. What order remains (statistics before
the rules, validation before the writers and snapshots, the summary last) each hook declares
(`Hook.after`, `Hook.last`) and check_order asserts before anything runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from common.findings import Finding
from orchestrator.config.experiment import Experiment
from orchestrator.contract import Status
from orchestrator.rundir import RunDir
from orchestrator.train.stats import BlobStat, records


@dataclass
class StepRecord:
    """One training step as every writer sees it (metrics.jsonl, TensorBoard, the progress bar):
    set by the loop after solver.step, the statistics added by the statistics hook."""

    loss: float = math.nan
    lr: float = math.nan
    seconds: float = 0.0
    stats: list[BlobStat] | None = None  # set on iterations where statistics were computed

    def metrics_line(self, iteration: int) -> dict[str, Any]:
        """This step's metrics.jsonl record."""
        line = {"iter": iteration, "loss": self.loss, "lr": self.lr, "seconds": round(self.seconds, 5)}
        return line | ({"stats": records(self.stats)} if self.stats is not None else {})


@dataclass
class Context:
    """What hooks share: the solver, the experiment, the run dir and this iteration's numbers."""

    solver: Any
    exp: Experiment
    run: RunDir
    start_iter: int = 0
    iteration: int = 0
    step: StepRecord = field(default_factory=StepRecord)  # loss, lr and time kept until the next step
    # ---- this step's facts: reset by the loop before every step (and before after_train)
    val: dict[str, Any] | None = None  # set on iterations where validation ran (its val.jsonl record)
    new_best: bool = False  # `val` is the best validation so far
    confusion: list[list[int]] | None = None  # the confusion matrix of `val`
    pictures: list[tuple[str, Any]] | None = None  # (tag, RGB array) of the best validation's overlays
    # ---- the run's facts: kept across steps, each written by one hook
    last_stats: list[BlobStat] = field(default_factory=list)  # StatsHook: the newest statistics
    best: dict[str, Any] | None = None  # ValidationHook: {"iteration", "metrics"} of the best validation
    best_snapshot: str | None = None  # SnapshotHook: the snapshot holding the best weights (run-relative)
    status: Status = Status.RUNNING
    stop_reason: str | None = None
    prompt_stop: bool = False  # SIGTERM (a scheduler's preemption, with a grace period): snapshot, no final validation
    findings: list[Finding] = field(default_factory=list)

    def request_stop(self, status: Status, reason: str) -> None:
        """Ask the loop to stop after this iteration (the first request wins)."""
        if self.stop_reason is None:
            self.status, self.stop_reason = status, reason

    def new_step(self) -> None:
        """Forget the previous step's facts."""
        self.step.stats, self.val, self.new_best = None, None, False
        self.confusion, self.pictures = None, None

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None


class Hook:
    """Base hook: override what you need. State must be JSON-serialisable. `after` names the
    hooks that must come before this one in the list when present (it reads what they set in
    the same step); `last`: nothing may follow it."""

    name = "hook"
    after: tuple[str, ...] = ()
    last = False

    def before_train(self, ctx: Context) -> None:
        pass

    def after_step(self, ctx: Context) -> None:
        pass

    def after_validation(self, ctx: Context) -> None:
        """ctx.val (and new_best, confusion) were just set by the validating hook."""

    def after_train(self, ctx: Context) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def read_loss(net: Any) -> float:
    """The training loss of the last forward pass: blob 'loss', else the sum of scalar outputs."""
    if "loss" in net.blobs:
        return float(net.blobs["loss"].data.ravel()[0])
    return float(sum(net.blobs[o].data.ravel()[0] for o in net.outputs if net.blobs[o].count == 1))


def check_order(hooks: list[Hook]) -> None:
    """ValueError naming the hooks when the list breaks what a hook declares (`after`, `last`)
    or names a hook twice: the order is checked, not trusted."""
    where = {}
    for i, h in enumerate(hooks):
        if h.name in where:
            raise ValueError(f"hook order: '{h.name}' is in the list twice")
        where[h.name] = i
    for i, h in enumerate(hooks):
        late = [a for a in h.after if where.get(a, -1) > i]
        if late:
            raise ValueError(f"hook order: '{h.name}' must come after {', '.join(map(repr, late))}")
        if h.last and i != len(hooks) - 1:
            raise ValueError(f"hook order: '{h.name}' must be the last hook, not followed by '{hooks[-1].name}'")


def _dispatch(hooks: list[Hook], event: str, ctx: Context) -> None:
    """`event` on every hook in order; right after the hook that validates (sets ctx.val),
    after_validation on every hook, then the rest of `event`."""
    validated = ctx.val is not None
    for h in hooks:
        getattr(h, event)(ctx)
        if not validated and ctx.val is not None:
            validated = True
            for g in hooks:
                g.after_validation(ctx)


def train(ctx: Context, hooks: list[Hook]) -> Context:
    """Run until max_iter or a stop request; returns the context with status and reason."""
    check_order(hooks)
    solver = ctx.solver
    max_iter = ctx.exp.solver.max_iter
    try:
        for h in hooks:
            h.before_train(ctx)
        ctx.iteration = solver.iter
        while ctx.iteration < max_iter and not ctx.stopping:
            ctx.new_step()
            ctx.step.lr = float(solver.lr) if hasattr(solver, "lr") else float(solver.param.base_lr)
            t0 = time.perf_counter()
            solver.step(1)
            ctx.step.seconds = time.perf_counter() - t0
            ctx.iteration = solver.iter
            ctx.step.loss = read_loss(solver.net)
            _dispatch(hooks, "after_step", ctx)
        if not ctx.stopping:
            ctx.request_stop(Status.COMPLETED, f"reached max_iter {max_iter}")
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            ctx.request_stop(Status.INTERRUPTED, "KeyboardInterrupt")
        else:
            ctx.request_stop(Status.FAILED, f"{type(e).__name__}: {e}")
        raise
    finally:
        ctx.new_step()
        _dispatch(hooks, "after_train", ctx)
    return ctx


def restore_hooks(hooks: list[Hook], saved: dict[str, Any]) -> list[Finding]:
    """Give each hook its state from a snapshot's hooks.json ({name: state}, the format every
    snapshot so far has). What cannot be matched is a warning, never skipped silently: a saved
    state no hook takes (the hook was switched off), a hook with state but none saved (switched
    on: it starts afresh), a state its hook refuses."""
    found = []

    def warn(name: str, what: str) -> None:
        found.append(
            Finding(
                "warning",
                "hook-state-skipped",
                None,
                f"resume: the '{name}' hook's state {what}",
                "none needed if you changed the config on purpose; otherwise resume with the settings the run had",
            )
        )

    names = {h.name for h in hooks}
    for name in sorted(set(saved) - names):
        if saved[name]:
            warn(name, "in the snapshot was not restored: no such hook in this run (switched off?)")
    for h in hooks:
        if h.name not in saved:
            if h.state_dict():
                warn(h.name, "is not in the snapshot: the hook starts afresh (switched on since?)")
            continue
        try:
            h.load_state_dict(saved[h.name])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            warn(h.name, f"in the snapshot could not be read ({type(e).__name__}: {e}): the hook starts afresh")
    for f in found:
        print(f"warning: {f.message}", flush=True)
    return found
