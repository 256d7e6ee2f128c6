"""TensorBoard event files in RUN_DIR/tb/ (tensorboardX: no TensorFlow): the training loss, lr
and step time at every logged iteration, each validation metric and per-class IU, the
per-layer statistics at each statistics interval, and the best validation's overlays.

A resumed run opens a new event file that starts with a SessionLog START at the first
iteration it trains (TensorBoard's purge): TensorBoard then drops what the interrupted run had
logged from that step on, so the stream continues without duplicated steps
(`tensorboard --logdir runs/`)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.contract import METRIC_NAMES, RUN_FILES, class_labels
from orchestrator.train.loop import Context, Hook

TB_DIR = RUN_FILES["tb"]


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


class EventWriter:
    """A synchronous event file (tensorboardX's record writer and summaries, without its
    background thread, whose flush() can leave queued events unwritten): what `flush()` has
    written is on disk before the snapshot of that iteration is committed."""

    def __init__(self, folder: Path, start_iter: int) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto import event_pb2

        folder.mkdir(parents=True, exist_ok=True)
        # files sort by name = by time; a resume within the same second sorts after by its start
        self._w = EventsWriter(str(folder / "events"), f".from{start_iter:010d}")
        self._pb = event_pb2
        if start_iter > 0:  # TensorBoard drops what an earlier file logged from this step on
            self._w.write_event(
                event_pb2.Event(
                    wall_time=time.time(),
                    step=start_iter + 1,
                    session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START),
                )
            )

    def _add(self, summary: Any, step: int) -> None:
        self._w.write_event(self._pb.Event(wall_time=time.time(), step=step, summary=summary))

    def scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboardX import summary

        self._add(summary.scalar(tag, float(value)), step)

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        from tensorboardX import summary

        self._add(summary.image(tag, rgb, dataformats="HWC"), step)

    def flush(self) -> None:
        self._w.flush()

    def close(self) -> None:
        self._w.close()


class TensorBoardHook(Hook):
    name = "tensorboard"
    # the step's statistics and stop; the best validation's pictures (drawn in after_validation)
    after = ("signals", "stats", "divergence", "validation", "best_pictures")

    def __init__(self, log_interval: int, snapshot_interval: int, class_names: list[str] | None = None) -> None:
        self.log_interval, self.snapshot_interval = log_interval, snapshot_interval
        self.class_names = class_names or []
        self.writer: EventWriter | None = None

    def before_train(self, ctx: Context) -> None:
        self.writer = EventWriter(ctx.run.root / TB_DIR, ctx.start_iter)

    def after_step(self, ctx: Context) -> None:
        w, it = self.writer, ctx.iteration
        assert w is not None, "before_train opens the event file"
        step = ctx.step
        if it % self.log_interval == 0 or step.stats is not None or ctx.stopping:
            if _finite(step.loss):
                w.scalar("train/loss", step.loss, it)
            w.scalar("train/lr", step.lr, it)
            w.scalar("train/step_seconds", step.seconds, it)
        if step.stats is not None:
            for s in step.stats:
                tag = f"{'params' if s.kind == 'param' else 'blobs'}/{s.name}"
                for key, value in (("mean_abs_data", s.mean_abs_data), ("mean_abs_diff", s.mean_abs_diff)):
                    if _finite(value):
                        w.scalar(f"{tag}/{key}", value, it)
                if s.kind == "param" and _finite(s.update_ratio):
                    w.scalar(f"{tag}/update_ratio", s.update_ratio, it)
        if it % self.snapshot_interval == 0 or ctx.new_best:
            # on disk before the snapshot hook (after this one) commits this iteration: a resume
            # from it finds every step up to it, and purges only what came later
            w.flush()

    def after_validation(self, ctx: Context) -> None:
        """The validation's metrics and per-class IU, and the pictures of a new best."""
        if ctx.val is None or self.writer is None:
            return
        val, it = ctx.val, ctx.iteration
        for key in METRIC_NAMES:
            if _finite(val.get(key)):
                self.writer.scalar(f"val/{key}", val[key], it)
        per_class = val.get("per_class_iu") or []
        for name, iu in zip(class_labels(self.class_names, len(per_class)), per_class, strict=True):
            if _finite(iu):  # TensorBoard writes a space in a tag as `_` (class_3)
                self.writer.scalar(f"val_class_iu/{name}", iu, it)
        for tag, rgb in ctx.pictures or []:
            self.writer.image(f"best/{tag}", np.asarray(rgb), it)

    def after_train(self, ctx: Context) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one tag as TensorBoard shows it (its own reader, purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(Path(run_dir) / TB_DIR), size_guidance={"scalars": 0}, purge_orphaned_data=True)
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []
