"""The small training loop: step the native Caffe solver; everything else is a hook.

Hooks run between iterations in list order: before_train once, after_step after every
solver.step(1), after_train once in a `finally` (so an exception or a stop still snapshots
and writes the summary). Each hook has state_dict/load_state_dict so a resumed run continues.

Hooks talk through typed fields of the Context only. The per-step facts (this iteration's
record, statistics, validation and whether it is a new best) are reset by the loop before
every step and before after_train, so a hook sees only what a hook before it found in the
same step: the order of the list is the order of the facts (statistics before the rules,
validation before early stop and the snapshots).
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
from orchestrator.train.stats import BlobStat


@dataclass
class Context:
    """What hooks share: the solver, the experiment, the run dir and this iteration's numbers."""

    solver: Any
    exp: Experiment
    run: RunDir
    start_iter: int = 0
    iteration: int = 0
    loss: float = math.nan
    lr: float = math.nan
    step_seconds: float = 0.0
    # ---- this step's facts: reset by the loop before every step (and before after_train)
    record: dict[str, Any] = field(default_factory=dict)  # extra keys of this iteration's metrics.jsonl line
    stats: list[BlobStat] | None = None  # set on iterations where statistics were computed
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
    findings: list[Finding] = field(default_factory=list)

    def request_stop(self, status: Status, reason: str) -> None:
        """Ask the loop to stop after this iteration (the first request wins)."""
        if self.stop_reason is None:
            self.status, self.stop_reason = status, reason

    def new_step(self) -> None:
        """Forget the previous step's facts."""
        self.record, self.stats, self.val, self.new_best = {}, None, None, False
        self.confusion, self.pictures = None, None

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None


class Hook:
    """Base hook: override what you need. State must be JSON-serialisable."""

    name = "hook"

    def before_train(self, ctx: Context) -> None:
        pass

    def after_step(self, ctx: Context) -> None:
        pass

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


def train(ctx: Context, hooks: list[Hook]) -> Context:
    """Run until max_iter or a stop request; returns the context with status and reason."""
    solver = ctx.solver
    max_iter = ctx.exp.solver.max_iter
    try:
        for h in hooks:
            h.before_train(ctx)
        ctx.iteration = solver.iter
        while ctx.iteration < max_iter and not ctx.stopping:
            ctx.new_step()
            ctx.lr = float(solver.lr) if hasattr(solver, "lr") else float(solver.param.base_lr)
            t0 = time.perf_counter()
            solver.step(1)
            ctx.step_seconds = time.perf_counter() - t0
            ctx.iteration = solver.iter
            ctx.loss = read_loss(solver.net)
            for h in hooks:
                h.after_step(ctx)
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
        for h in hooks:
            h.after_train(ctx)
    return ctx
