"""Collect blob statistics every `checks.stats_interval` iterations (through the C++ bindings)."""

from __future__ import annotations

from orchestrator.train import stats
from orchestrator.train.loop import Context, Hook


class StatsHook(Hook):
    name = "stats"

    def __init__(self, interval: int) -> None:
        self.interval = interval

    def after_step(self, ctx: Context) -> None:
        if ctx.iteration % self.interval == 0 or ctx.iteration == ctx.start_iter + 1:
            ctx.step.stats = ctx.last_stats = stats.collect(ctx.solver.net)
