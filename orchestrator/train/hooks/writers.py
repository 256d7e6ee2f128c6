"""metrics.jsonl (one record per logged iteration) and, at the end, summary.json + report."""

from __future__ import annotations

import time
from typing import Any

from common.findings import Finding
from orchestrator.jsonio import JsonlLog
from orchestrator.train.loop import Context, Hook


class MetricsWriter(Hook):
    """One metrics.jsonl line per logged step (ctx.step), and on the last step of a stop."""

    name = "metrics"
    after = ("signals", "stats", "divergence", "validation")  # the statistics and any stop request

    def __init__(self, log_interval: int) -> None:
        self.log_interval = log_interval
        self.log: JsonlLog | None = None

    def before_train(self, ctx: Context) -> None:
        self.log = JsonlLog(ctx.run.metrics)  # kept open: one flushed line per record

    def after_step(self, ctx: Context) -> None:
        if ctx.iteration % self.log_interval == 0 or ctx.step.stats is not None or ctx.stopping:
            assert self.log is not None, "before_train opens the log"
            self.log.write(ctx.step.metrics_line(ctx.iteration))

    def after_train(self, ctx: Context) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None


class SummaryWriter(Hook):
    """Last hook: the run's verdict in summary.json, then report.md and curves.png."""

    name = "summary"
    last = True

    def __init__(self, preflight: list[dict[str, Any]]) -> None:
        self.preflight = preflight
        self.t0 = time.perf_counter()
        self.seconds_before = 0.0
        self.findings: list[Finding] = []  # the run's findings: restored ones first, then this session's

    def before_train(self, ctx: Context) -> None:
        ctx.findings[:0] = self.findings  # a resumed run keeps what it found before the snapshot
        self.findings = ctx.findings

    def after_train(self, ctx: Context) -> None:
        from orchestrator import report

        best = ctx.best
        if best is not None and ctx.best_snapshot is not None:
            best = {**best, "snapshot": ctx.best_snapshot}  # relative: the run dir stays relocatable
        ctx.run.write_summary(
            status=ctx.status,
            stop_reason=ctx.stop_reason,
            iterations=ctx.iteration,
            max_iter=ctx.exp.solver.max_iter,
            best=best,
            train_seconds=round(self.seconds_before + time.perf_counter() - self.t0, 1),
            findings=self.preflight + [f.to_dict() for f in ctx.findings],
        )
        report.write_all(ctx.run)

    def state_dict(self) -> dict[str, Any]:
        return {
            "train_seconds": self.seconds_before + time.perf_counter() - self.t0,
            "findings": [f.to_dict() for f in self.findings],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seconds_before = float(state.get("train_seconds", 0.0))
        self.findings = [Finding.from_dict(d) for d in state.get("findings", [])]
