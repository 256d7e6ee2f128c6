"""The training's progress bar on stdout (data_prep.progress, the data build's bar): iteration,
it/s, ETA, loss, lr and the newest val mIoU; a validation and the last step always show."""

from __future__ import annotations

import sys
from typing import TextIO

from data_prep.progress import Progress
from orchestrator.metrics import validation_line
from orchestrator.train.loop import Context, Hook


class ProgressHook(Hook):
    name = "progress"
    after = ("signals", "divergence", "validation")  # a validation and a stop always show

    def __init__(self, quiet: bool, stream: TextIO | None = None, class_names: list[str] | None = None) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self.class_names = class_names
        self.bar: Progress | None = None

    def before_train(self, ctx: Context) -> None:
        self.bar = Progress(
            ctx.exp.solver.max_iter, "train", unit="it", quiet=self.quiet, stream=self.stream, done=ctx.solver.iter
        )

    def after_step(self, ctx: Context) -> None:
        assert self.bar is not None, "before_train makes the bar"
        detail = f"loss {ctx.step.loss:.4f} lr {ctx.step.lr:.3g}"
        if ctx.val is not None:
            detail += f" val mIoU {ctx.val['mean_iu']:.3f}"
        if ctx.val is not None:  # a line of its own that the bar does not overwrite
            self.bar.note(validation_line(ctx.val, self.class_names))
        self.bar.set(ctx.iteration, detail=detail, force=ctx.val is not None or ctx.stopping)

    def after_train(self, ctx: Context) -> None:
        if self.bar is not None:
            self.bar.close()
