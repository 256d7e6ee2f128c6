"""Validation: share the trained weights into the test net, run the whole val set, score it."""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from orchestrator import metrics
from orchestrator.loop import Context, Hook


def validate(test_net: Any, batches: int, num_classes: int, ignore_label: int | None) -> dict[str, Any]:
    """Confusion matrix over `batches` forward passes of the val net (blobs 'score' and 'label')."""
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for _ in range(batches):
        test_net.forward()
        pred = test_net.blobs["score"].data.argmax(axis=1)
        label = test_net.blobs["label"].data.reshape(pred.shape)
        conf += metrics.confusion(pred, label, num_classes, ignore_label)
    out = metrics.scores(conf)
    out["confusion"] = conf.tolist()
    return out


class ValidationHook(Hook):
    name = "validation"

    def __init__(self, interval: int, num_images: int, batch_size: int, num_classes: int,
                 ignore_label: int | None, monitor: str) -> None:
        self.interval = interval
        self.batches = max(1, math.ceil(num_images / batch_size))
        self.num_classes, self.ignore_label, self.monitor = num_classes, ignore_label, monitor
        self.best: dict[str, Any] | None = None
        self.last_iter = -1

    def run(self, ctx: Context) -> None:
        t0 = time.perf_counter()
        test = ctx.solver.test_nets[0]
        test.share_with(ctx.solver.net)
        m = validate(test, self.batches, self.num_classes, self.ignore_label)
        rec = {"iter": ctx.iteration, **{k: v for k, v in m.items() if k != "confusion"},
               "seconds": round(time.perf_counter() - t0, 3)}
        ctx.run.append(ctx.run.val, rec)
        ctx.val, self.last_iter = rec, ctx.iteration
        if self.best is None or rec[self.monitor] > self.best["metrics"][self.monitor]:
            self.best = {"iteration": ctx.iteration, "metrics": rec}
            ctx.extra["new_best"] = True
        ctx.extra["best"] = self.best

    def after_step(self, ctx: Context) -> None:
        if ctx.iteration % self.interval == 0 and not ctx.stopping:
            self.run(ctx)

    def after_train(self, ctx: Context) -> None:
        if ctx.status in ("completed", "early_stopped", "interrupted") and self.last_iter != ctx.iteration:
            self.run(ctx)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "last_iter": self.last_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.last_iter = state.get("best"), state.get("last_iter", -1)
