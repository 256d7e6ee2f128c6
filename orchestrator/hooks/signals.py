"""SIGINT/SIGTERM: finish the current step, then stop as `interrupted` (the snapshot hook saves)."""
from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from orchestrator.loop import Context, Hook


class SignalHook(Hook):
    name = "signals"

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name

    def before_train(self, ctx: Context) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handler)

    def after_step(self, ctx: Context) -> None:
        if self.received:
            ctx.request_stop("interrupted", f"received {self.received}")

    def after_train(self, ctx: Context) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
