"""Snapshots every N iterations, on a new best validation and at the end; keep the last K and the best."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.config.schema import to_dict
from orchestrator.contract import Status, snapshot_relpath
from orchestrator.train.loop import Context, Hook


class SnapshotHook(Hook):
    """Snapshots after the hooks whose state it saves, after TensorBoard (flushed first) and the
    divergence rules (a diverged step is never saved)."""

    name = "snapshot"
    after = (
        *("data_state", "stats", "divergence", "validation", "best_pictures", "lr_on_plateau", "early_stop"),
        *("metrics", "tensorboard"),  # this step's line and events are on disk before its snapshot
    )

    def __init__(
        self, interval: int, keep_last: int, keep_best: bool, hook_states: Callable[[], dict[str, Any]]
    ) -> None:
        self.interval, self.keep_last, self.keep_best = interval, keep_last, keep_best
        self.hook_states = hook_states
        self.best_iter: int | None = None
        self.last_iter: int | None = None

    def snap(self, ctx: Context) -> None:
        if self.last_iter == ctx.iteration:
            return
        ctx.solver.snapshot()
        caffemodel, solverstate = ctx.run.caffe_snapshot(ctx.iteration)
        self.last_iter = ctx.iteration
        ctx.run.commit_snapshot(ctx.iteration, caffemodel, solverstate, self.hook_states(), to_dict(ctx.exp))
        ctx.run.prune_snapshots(self.keep_last, {self.best_iter} if self.best_iter is not None else set())

    def after_validation(self, ctx: Context) -> None:
        """A new best is kept (keep_best) and snapshotted at the end of its step."""
        if ctx.new_best and self.keep_best:
            self.best_iter = ctx.iteration

    def before_train(self, ctx: Context) -> None:
        self._publish(ctx)

    def after_step(self, ctx: Context) -> None:
        new_best = ctx.new_best and self.keep_best
        if (ctx.iteration % self.interval == 0 or new_best) and ctx.status is not Status.DIVERGED:
            self.snap(ctx)
        self._publish(ctx)

    def after_train(self, ctx: Context) -> None:
        # a diverged state is not worth keeping: the last good snapshot stays the newest
        if ctx.status.weights_sound:
            self.snap(ctx)
        self._publish(ctx)

    def _publish(self, ctx: Context) -> None:
        ctx.best_snapshot = snapshot_relpath(self.best_iter) if self.best_iter is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {"best_iter": self.best_iter, "last_iter": self.last_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_iter, self.last_iter = state.get("best_iter"), state.get("last_iter")
