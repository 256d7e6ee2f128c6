"""SIGINT/SIGTERM: finish the current step, then stop as `interrupted` (the snapshot hook saves).
SIGTERM is a stop with a deadline (a scheduler's preemption, a shutdown: SIGKILL follows after a
grace period): no final validation, which can take minutes, delays the snapshot. Ctrl-C (SIGINT)
still validates, to say where the run stands. SIGUSR1 is a sweep's scheduler stopping the trial:
like SIGINT, but the run ends `early_stopped`."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from orchestrator.contract import Status
from orchestrator.train.loop import Context, Hook


class SignalHook(Hook):
    name = "signals"

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name

    def before_train(self, ctx: Context) -> None:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
            self._old[s] = signal.signal(s, self._handler)

    def after_step(self, ctx: Context) -> None:
        if self.received == "SIGUSR1":
            ctx.request_stop(Status.EARLY_STOPPED, "stopped by the sweep (its scheduler ended this trial)")
        elif self.received:
            ctx.request_stop(Status.INTERRUPTED, f"received {self.received}")
            ctx.prompt_stop = ctx.prompt_stop or self.received == "SIGTERM"

    def after_train(self, ctx: Context) -> None:
        for s, h in self._old.items():  # a late stop from a sweep must not kill a run that is ending
            signal.signal(s, signal.SIG_IGN if s == signal.SIGUSR1 else h)
