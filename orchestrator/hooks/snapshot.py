"""Snapshots every N iterations, on a new best validation and at the end; keep the last K and the best."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orchestrator.loop import Context, Hook
from orchestrator.schema import to_dict


class SnapshotHook(Hook):
    name = "snapshot"

    def __init__(self, interval: int, keep_last: int, keep_best: bool,
                 hook_states: Callable[[], dict[str, Any]]) -> None:
        self.interval, self.keep_last, self.keep_best = interval, keep_last, keep_best
        self.hook_states = hook_states
        self.best_iter: int | None = None
        self.last_iter: int | None = None

    def snap(self, ctx: Context) -> None:
        if self.last_iter == ctx.iteration:
            return
        ctx.solver.snapshot()
        prefix = ctx.run.partial / f"snap_iter_{ctx.iteration}"
        self.last_iter = ctx.iteration
        ctx.run.commit_snapshot(ctx.iteration, prefix.with_suffix(".caffemodel"),
                                prefix.with_suffix(".solverstate"), self.hook_states(), to_dict(ctx.exp))
        ctx.run.prune_snapshots(self.keep_last, {self.best_iter} if self.best_iter is not None else set())

    def after_step(self, ctx: Context) -> None:
        new_best = ctx.extra.pop("new_best", False) and self.keep_best
        if new_best:
            self.best_iter = ctx.iteration
        if (ctx.iteration % self.interval == 0 or new_best) and ctx.status != "diverged":
            self.snap(ctx)

    def after_train(self, ctx: Context) -> None:
        if ctx.extra.pop("new_best", False) and self.keep_best:
            self.best_iter = ctx.iteration
        # a diverged state is not worth keeping: the last good snapshot stays the newest
        if ctx.status in ("completed", "early_stopped", "interrupted"):
            self.snap(ctx)
        if self.best_iter is not None and ctx.extra.get("best"):
            # relative to the run dir, which stays relocatable
            ctx.extra["best"]["snapshot"] = f"snapshots/iter_{self.best_iter}"

    def state_dict(self) -> dict[str, Any]:
        return {"best_iter": self.best_iter, "last_iter": self.last_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_iter, self.last_iter = state.get("best_iter"), state.get("last_iter")
