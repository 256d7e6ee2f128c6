"""A progress bar on stdout: iteration, loss, lr, it/s and ETA (one line per 10 % when not a TTY)."""
from __future__ import annotations

import sys
import time
from typing import TextIO

from orchestrator.loop import Context, Hook


def format_eta(seconds: float) -> str:
    """'1:02:03' / '4:05' style remaining time."""
    s = int(max(seconds, 0))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressHook(Hook):
    name = "progress"

    def __init__(self, quiet: bool, stream: TextIO | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.t0 = 0.0
        self.it0 = 0
        self.next_line = 0

    def before_train(self, ctx: Context) -> None:
        self.t0, self.it0 = time.perf_counter(), ctx.solver.iter
        self.next_line = self.it0

    def after_step(self, ctx: Context) -> None:
        if self.quiet:
            return
        total = ctx.exp.solver.max_iter
        done = ctx.iteration - self.it0
        rate = done / max(time.perf_counter() - self.t0, 1e-9)
        eta = (total - ctx.iteration) / rate if rate > 0 else 0.0
        frac = ctx.iteration / total
        line = (f"[{'#' * int(frac * 30):<30}] it {ctx.iteration}/{total} loss {ctx.loss:.4f} "
                f"lr {ctx.lr:.3g} {rate:.2f} it/s ETA {format_eta(eta)}")
        if ctx.val is not None:
            line += f" val mIoU {ctx.val['mean_iu']:.3f}"
        if self.tty:
            self.stream.write("\r" + line.ljust(110))
            self.stream.flush()
        elif ctx.iteration >= self.next_line or ctx.val is not None:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.next_line = ctx.iteration + max(1, total // 10)

    def after_train(self, ctx: Context) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
