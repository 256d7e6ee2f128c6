"""Validation: share the trained weights into the test net, run the whole val set, score it.

Which blobs hold the class scores and the labels is read from the val net itself: the first
and second bottom of its loss or Accuracy layer (a user's net may call them `conv_classifier`
and `sem`), else the generated nets' `score` and `label`. The scores must be full resolution,
N x C x H x W over the label's H x W; a net that cannot be scored says so in a finding and the
run trains on without validation."""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common.findings import Finding
from orchestrator import metrics
from orchestrator.predict.tta import TTA, probabilities, scaled_size
from orchestrator.train.loop import Context, Hook

# layers whose first bottom is the class scores and second the label
SCORING = ("SoftmaxWithLoss", "InfogainLoss", "MultinomialLogisticLoss", "Accuracy")


def find_score_label(layers: list[tuple[str, list[str]]]) -> tuple[str, str]:
    """(scores blob, label blob) from the net's (type, bottoms) in order: the first loss or
    Accuracy layer's first two bottoms; ('score', 'label') when there is none."""
    for kind, bottoms in layers:
        if kind in SCORING and len(bottoms) >= 2:
            return bottoms[0], bottoms[1]
    return "score", "label"


def shape_problem(score: tuple[int, ...], label: tuple[int, ...]) -> str | None:
    """Why per-pixel scores of this shape cannot be compared with these labels, or None."""
    if len(score) != 4:
        return f"the scores are {len(score)}-D {score}, not N x C x H x W"
    n, _, h, w = score
    if not label or label[0] != n or tuple(label[-2:]) != (h, w) or int(np.prod(label)) != n * h * w:
        return (
            f"the scores are {n} x {score[1]} x {h} x {w} but the labels {' x '.join(map(str, label))}: "
            "validation needs full-resolution scores, one per label pixel"
        )
    return None


def validate(
    test_net: Any,
    batches: int,
    num_classes: int,
    ignore_label: int | None,
    *,
    score: str = "score",
    label: str = "label",
    images: int | None = None,
    classes: Callable[[Any], np.ndarray] | None = None,
    end: str | None = None,
) -> dict[str, Any]:
    """Confusion matrix over `batches` forward passes of the val net. With `images`, exactly
    that many images count: the data layers read on cyclically, so the window of `images`
    consecutive records covers each val image once, wherever the previous pass stopped.
    With `classes` (test-time augmentation), the val net runs only up to its layer `end` (the
    data) and `classes(test_net)` gives the class ids of its batch."""
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    left = images
    for _ in range(batches):
        if classes is None:
            test_net.forward()
            pred = test_net.blobs[score].data.argmax(axis=1)
        else:
            test_net.forward(end=end)
            pred = classes(test_net)
        lab = test_net.blobs[label].data.reshape(pred.shape)
        if left is not None:
            pred, lab, left = pred[:left], lab[:left], left - min(left, len(pred))
        conf += metrics.confusion(pred, lab, num_classes, ignore_label)
    out = metrics.scores(conf)
    out["confusion"] = conf.tolist()
    return out


class ValidationHook(Hook):
    name = "validation"
    after = ("signals", "divergence")  # no validation on a step that stops

    def __init__(
        self,
        interval: int,
        num_images: int,
        batch_size: int,
        num_classes: int | None,
        ignore_label: int | None,
        monitor: str,
        tta: TTA | None = None,
    ) -> None:
        self.tta = tta if tta is not None and tta.active else None
        self.deploy: Any = None  # the deploy net test-time augmentation runs (sharing the weights)
        self.end: str | None = None  # the val net's last data layer
        self.interval, self.num_images = interval, num_images
        self.batches = max(1, math.ceil(num_images / batch_size))
        self.num_classes, self.ignore_label, self.monitor = num_classes, ignore_label, monitor
        self.score, self.label = "score", "label"
        self.enabled = True
        self.best: dict[str, Any] | None = None
        self.last_iter = -1

    def before_train(self, ctx: Context) -> None:
        """Find the scores and labels in the val net and check they can be compared."""
        ctx.best = self.best  # a resumed run's best so far
        tests = ctx.solver.test_nets
        if not tests:
            return self._disable(ctx, None, "the solver has no val net")
        net = tests[0]
        layers = [
            (layer.type, list(net.bottom_names[name])) for name, layer in zip(net._layer_names, net.layers, strict=True)
        ]
        self.score, self.label = find_score_label(layers)
        missing = [b for b in (self.score, self.label) if b not in net.blobs]
        if missing:
            return self._disable(
                ctx,
                None,
                f"the val net has no blob {' or '.join(map(repr, missing))} and no loss or "
                "Accuracy layer naming its scores and labels",
            )
        s, lab = tuple(net.blobs[self.score].data.shape), tuple(net.blobs[self.label].data.shape)
        problem = shape_problem(s, lab)
        if problem:
            return self._disable(ctx, self.score, f"blob '{self.score}' vs '{self.label}': {problem}")
        self.batches = max(1, math.ceil(self.num_images / s[0]))
        if self.num_classes not in (None, s[1]):
            ctx.findings.append(
                Finding(
                    "warning",
                    "val-classes",
                    self.score,
                    f"the val net scores {s[1]} classes ('{self.score}'), the run was configured with "
                    f"{self.num_classes}: validation scores the net's {s[1]} classes",
                    "make the score layers' num_output equal to the data's num_classes",
                )
            )
        self.num_classes = s[1]
        if self.tta is not None:
            self._tta_setup(ctx, net)

    def _tta_setup(self, ctx: Context, net: Any) -> None:
        """The run's deploy net (sharing the training weights) that test-time augmentation feeds
        with the val net's input blob; if it cannot be built, a finding and plain validation."""
        from orchestrator.predict.forward import DeployNet

        assert self.tta is not None
        names = list(net._layer_names)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                # Caffe would abort the training process on a deploy net that does not fit together
                size = tuple(int(v) for v in net.blobs[self.label].data.shape[-2:])
                deploy = DeployNet(ctx.run.root, Path(tmp), size, None, check=True)  # type: ignore[arg-type]
                self._try_scales(deploy, net, Path(tmp))
            if deploy.info.input_blob not in net.blobs:
                raise ValueError(f"the val net has no data blob '{deploy.info.input_blob}' (the deploy net's input)")
            refusal = deploy.tta_refusal()
            if refusal is not None:
                raise refusal
        except Exception as e:  # validation without TTA is better than no run
            ctx.findings.append(
                Finding(
                    "warning",
                    "no-tta",
                    None,
                    f"validation runs without test-time augmentation ({self.tta.label()}): "
                    f"{getattr(e, 'message', None) or e}",
                    "give the run a deploy net with full-resolution scores, or set validation.tta off",
                )
            )
            self.tta = None
            return
        # the val net runs up to the last layer writing the image or the label (its Split copies)
        wanted = {deploy.info.input_blob, self.label}
        self.deploy, self.end = deploy, max((n for n in names if wanted & set(net.top_names[n])), key=names.index)

    def _try_scales(self, deploy: Any, net: Any, tmp: Path) -> None:
        """ValueError when the deploy net refuses a scaled input (tried in a child: an abort here
        would end the run); a fixed-size net sees only tiles of its own size."""
        from orchestrator.predict.forward import shapes_problem

        assert self.tta is not None
        if tuple(self.tta.scales) == (1.0,) or not deploy.info.fully_convolutional:
            return
        n, c, h, w = net.blobs[deploy.info.input_blob].data.shape
        shapes = [(n, c, *scaled_size(h, w, s)) for s in self.tta.scales]
        problem = shapes_problem(deploy.prototxt, deploy.info.input_blob, shapes, tmp / "trial.log")
        if problem:
            sizes = ", ".join(f"{s[3]}x{s[2]}" for s in shapes)
            raise ValueError(f"the net does not take every scaled input ({sizes}, W x H): {problem}")

    def _tta_classes(self, test: Any) -> np.ndarray:
        """Class ids of the val net's current batch: the argmax of the averaged probabilities."""
        assert self.tta is not None and self.deploy is not None
        x = np.array(test.blobs[self.deploy.info.input_blob].data)
        return probabilities(self.deploy.scores, x, self.tta).argmax(axis=1)

    def _disable(self, ctx: Context, layer: str | None, why: str) -> None:
        self.enabled = False
        ctx.findings.append(
            Finding(
                "warning",
                "no-validation",
                layer,
                f"the run trains without validation: {why}.",
                "feed full-resolution class scores (N x C x H x W, cropped to the label) and the label "
                "to the val net's loss or Accuracy layer, as first and second bottom",
            )
        )

    def run(self, ctx: Context) -> None:
        t0 = time.perf_counter()
        test = ctx.solver.test_nets[0]
        test.share_with(ctx.solver.net)
        if self.deploy is not None:
            self.deploy.net.share_with(ctx.solver.net)
        assert self.num_classes is not None, "before_train read the classes from the val net"
        m = validate(
            test,
            self.batches,
            self.num_classes,
            self.ignore_label,
            score=self.score,
            label=self.label,
            images=self.num_images,
            classes=self._tta_classes if self.deploy is not None else None,
            end=self.end,
        )
        rec = {
            "iter": ctx.iteration,
            **{k: v for k, v in m.items() if k != "confusion"},
            "images": self.num_images,
            "seconds": round(time.perf_counter() - t0, 3),
            **({"tta": self.tta.label()} if self.deploy is not None and self.tta is not None else {}),
        }
        ctx.run.append(ctx.run.val, rec)
        ctx.val, ctx.confusion, self.last_iter = rec, m["confusion"], ctx.iteration
        if self.best is None or rec[self.monitor] > self.best["metrics"][self.monitor]:
            self.best = {"iteration": ctx.iteration, "metrics": rec}
            ctx.best, ctx.new_best = self.best, True

    def after_step(self, ctx: Context) -> None:
        if self.enabled and ctx.iteration % self.interval == 0 and not ctx.stopping:
            self.run(ctx)

    def after_train(self, ctx: Context) -> None:
        if self.enabled and ctx.status.weights_sound and self.last_iter != ctx.iteration and not ctx.prompt_stop:
            self.run(ctx)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "last_iter": self.last_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.last_iter = state.get("best"), state.get("last_iter", -1)
