"""Test-time augmentation, as mmsegmentation does it: the class probabilities (softmax of the
scores, not the raw scores) of the image, of its horizontal flip (flipped back) and of the image
resized by each scale (the probabilities resized back to the image's size, bilinearly), averaged;
the classes are their argmax. Pure: the net is a function from a batch to its scores, so that
validation (orchestrator.train.hooks.validation) and `predict` (orchestrator.predict.forward)
share one definition and tests drive it with made-up arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from common.errors import UserError
from orchestrator.contract import TTA_MAX_SCALE as MAX_SCALE


@dataclass(frozen=True)
class TTA:
    """Which views of each image are averaged: every scale, each also flipped with `flip`."""

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    @property
    def active(self) -> bool:
        return self.flip or tuple(self.scales) != (1.0,)

    @property
    def views(self) -> int:
        """Forward passes per image."""
        return len(self.scales) * (2 if self.flip else 1)

    def label(self) -> str:
        """The settings in `--tta` syntax (val.jsonl's `tta`, eval.json): flip,scales=0.75,1,1.25."""
        parts = ["flip"] if self.flip else []
        if tuple(self.scales) != (1.0,):
            parts.append("scales=" + ",".join(f"{s:g}" for s in self.scales))
        return ",".join(parts) or "off"


def parse(text: str) -> TTA:
    """`--tta flip`, `--tta scales=0.75,1,1.25`, `--tta flip,scales=0.5,1` (or `off`) as a TTA."""
    fix = "for example --tta flip or --tta flip,scales=0.75,1,1.25"
    flip, scales, in_scales = False, [], False
    for raw in text.split(","):
        item = raw.strip()
        if item == "off" and text.strip() == "off":
            return TTA()
        if item == "flip":
            flip, in_scales = True, False
            continue
        if item.startswith("scales="):
            item, in_scales = item[len("scales=") :], True
        if not in_scales:
            raise UserError(f"--tta {text!r}: unknown item {item!r} (expected flip or scales=S,S,...)", fix)
        try:
            s = float(item)
        except ValueError:
            raise UserError(f"--tta {text!r}: scale {item!r} is not a number", fix) from None
        scales.append(s)
    problem = scales_problem(scales)
    if problem:
        raise UserError(f"--tta {text!r}: {problem}", fix)
    return TTA(flip, tuple(scales) or (1.0,))


def scales_problem(scales: list[float]) -> str | None:
    """Why these scales cannot be used (None: they can); shared by --tta and validation.tta."""
    bad = [s for s in scales if not 0 < s <= MAX_SCALE]
    if bad:
        return f"scales must be > 0 and <= {MAX_SCALE:g}, got {bad[0]:g}"
    if len(set(scales)) != len(scales):
        return f"scales repeat a value ({', '.join(f'{s:g}' for s in scales)})"
    return None


def softmax(scores: np.ndarray) -> np.ndarray:
    """Class probabilities of N x C x H x W scores, over C (float64, stable)."""
    z = scores.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear weights along one axis, pixel centres aligned (align_corners=False):
    (lower index, upper index, weight of the upper)."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo


def resize_bilinear(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """N x C x H x W resized to `size` (H, W), bilinearly, in a's float type."""
    h, w = size
    if a.shape[2:] == (h, w):
        return a
    lo, hi, wy = _axis(a.shape[2], h)
    rows = a[:, :, lo, :] * (1 - wy)[:, None] + a[:, :, hi, :] * wy[:, None]
    lo, hi, wx = _axis(a.shape[3], w)
    return (rows[..., lo] * (1 - wx) + rows[..., hi] * wx).astype(a.dtype, copy=False)


def scaled_size(h: int, w: int, s: float) -> tuple[int, int]:
    return max(1, round(h * s)), max(1, round(w * s))


def probabilities(
    scores_of: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    tta: TTA,
    view_at: Callable[[float], np.ndarray] | None = None,
) -> np.ndarray:
    """The averaged class probabilities (N x C x H x W, float64) of input batch `x`
    (N x channels x H x W) over `tta`'s views; `scores_of` gives the scores of a batch at the
    batch's own size. `view_at(s)`, where given, makes the input at scale s (scaled_size of x's)
    from a larger source than x (predict's original image) instead of enlarging x itself."""
    h, w = x.shape[2:]
    total: np.ndarray | None = None
    for s in tta.scales:
        xs = x if s == 1 else view_at(s) if view_at is not None else resize_bilinear(x, scaled_size(h, w, s))
        for flipped in (False, True) if tta.flip else (False,):
            view = np.ascontiguousarray(xs[..., ::-1]) if flipped else xs
            scores = scores_of(view)
            if scores.shape[2:] != view.shape[2:]:
                raise ValueError(f"scores {scores.shape[2:]} for an input of {view.shape[2:]}: not full resolution")
            p = softmax(scores)
            p = resize_bilinear(p[..., ::-1] if flipped else p, (h, w))
            total = p if total is None else total + p
    assert total is not None, "a TTA has at least one scale"
    return total / tta.views
