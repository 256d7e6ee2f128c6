"""Divergence rules and the diagnosis: numbers in, findings out (no Caffe, no files).

Each rule returns Findings; severity "error" means stop the run (status `diverged`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from common.findings import Finding
from nets import lossnorm
from orchestrator.config.checks import Thresholds

if TYPE_CHECKING:
    from orchestrator.train.stats import BlobStat


def check_loss(iteration: int, loss: float, history: Sequence[float], t: Thresholds) -> list[Finding]:
    """Rules on the loss alone (every iteration): non-finite, saturated softmax, explosion."""
    if not math.isfinite(loss):
        return [
            Finding(
                "error",
                "non-finite-loss",
                None,
                f"iteration {iteration}: the loss is {loss}",
                "lower solver.base_lr (try 10x smaller), keep the loss normalized (VALID), "
                "or set solver.clip_gradients",
                {"iteration": iteration, "loss": loss},
            )
        ]
    if abs(loss - t.saturation_loss) < 1e-3 * t.saturation_loss:
        return [
            Finding(
                "error",
                "loss-saturated",
                None,
                f"iteration {iteration}: loss per valid pixel is {loss:.4f}, Caffe's clamp -log(FLT_MIN) "
                "for a softmax that gives the true class probability 0: the scores have exploded",
                "lower solver.base_lr, normalize the loss (VALID), and check the weight fillers",
                {"iteration": iteration, "loss": loss},
            )
        ]
    recent = [h for h in history[-t.loss_window :] if math.isfinite(h)]
    if iteration >= t.warmup and len(recent) >= min(5, t.loss_window):
        med = statistics.median(recent)
        if med > 0 and loss > t.loss_factor * med:
            return [
                Finding(
                    "error",
                    "loss-explosion",
                    None,
                    f"iteration {iteration}: loss {loss:.4g} is {loss / med:.1f}x the running median "
                    f"{med:.4g} of the last {len(recent)} iterations",
                    "lower solver.base_lr or set solver.clip_gradients",
                    {"iteration": iteration, "loss": loss, "median": med},
                )
            ]
    return []


def check_stats(
    iteration: int, stats: Sequence[BlobStat], t: Thresholds, exempt: Collection[str] = ()
) -> list[Finding]:
    """Rules on blob statistics: non-finite values, all-zero parameters or tops, update/weight ratio.

    `exempt` names blobs that may legitimately be all zero (data/label tops, BatchNorm's blobs).
    """
    out: list[Finding] = []
    bad = [s for s in stats if not s.finite]
    if bad:
        first = bad[0]
        out.append(
            Finding(
                "error",
                "non-finite",
                first.layer,
                f"iteration {iteration}: non-finite values in {len(bad)} blob(s), first {first.kind} "
                f"'{first.name}' of layer {first.layer} (mean|data| {first.mean_abs_data:.3g}, "
                f"mean|diff| {first.mean_abs_diff:.3g})",
                "lower solver.base_lr, normalize the loss, or set solver.clip_gradients",
                {"iteration": iteration, "blobs": [s.name for s in bad[:10]]},
            )
        )
        return out
    if t.zero_blobs and iteration >= t.warmup:
        for s in stats:
            if s.count and s.asum_data == 0.0 and s.name not in exempt:
                what = "parameter" if s.kind == "param" else "top blob"
                out.append(
                    Finding(
                        "error",
                        "zero-param" if s.kind == "param" else "dead-top",
                        s.layer,
                        f"iteration {iteration}: {what} '{s.name}' is entirely zero"
                        + (
                            " (no weight_filler: Caffe fills with 0)"
                            if s.kind == "param"
                            else " (a dead layer: nothing flows through it)"
                        ),
                        "add a weight_filler (msra/xavier) to the layer, or run bilinear surgery on Deconvolutions"
                        if s.kind == "param"
                        else "check the layer's inputs and weights; lower base_lr if ReLUs died",
                        {"iteration": iteration, "blob": s.name},
                    )
                )
    for s in stats:
        if s.kind != "param" or s.sumsq_diff == 0.0:
            continue
        r = s.update_ratio
        if r > t.update_ratio_max or r < t.update_ratio_min:
            out.append(
                Finding(
                    "warning",
                    "update-ratio",
                    s.layer,
                    f"iteration {iteration}: update/weight ratio of '{s.name}' is {r:.3g} "
                    f"(normal is about 1e-3; limits {t.update_ratio_min:g}..{t.update_ratio_max:g})",
                    "lower solver.base_lr" if r > t.update_ratio_max else "raise solver.base_lr",
                    {"iteration": iteration, "ratio": r},
                )
            )
    return out


def diagnose(
    iteration: int,
    trigger: Finding,
    last_stats: Sequence[BlobStat],
    lr: float,
    normalization: str | None,
    pixels: int | None = None,
    batch: int | None = None,
    momentum: float = 0.9,
) -> Finding:
    """One plain-words diagnosis of a divergence: when, which layers, their numbers, cause and
    fix. A loss summed over `pixels` (x `batch`) says what base_lr equals per pixel and
    proposes a per-pixel one: "10x lower" of a summed step can still diverge."""
    params = [s for s in last_stats if s.kind == "param" and s.finite and s.sumsq_diff > 0]
    worst = sorted(params, key=lambda s: s.update_ratio, reverse=True)[:3]
    layers = ", ".join(f"{s.layer} (update/weight {s.update_ratio:.3g}, mean|w| {s.mean_abs_data:.3g})" for s in worst)
    cause = f"the learning rate {lr:g} is too high for this net"
    fix = f"lower solver.base_lr to {lr / 10:g} or less"
    data: dict[str, Any] = {"iteration": iteration, "trigger": trigger.code, "lr": lr}
    mode = "BATCH_SIZE" if normalization == "false" else normalization
    if mode in lossnorm.SUMMED and pixels:
        eq = lossnorm.equivalent_lr(lr, mode, pixels, batch or 1)
        per = lossnorm.per_pixel_default(momentum)
        over = f"{pixels} pixels" + (f" x {batch} images" if mode == "NONE" and batch else "")
        cause += (
            f" with a loss summed over pixels (normalization {mode}): base_lr {lr:g} summed over {over} "
            f"acts like {eq:.2g} per pixel"
        )
        fix = (
            f"normalize the loss (net.normalization: VALID, or loss_param {{ normalization: VALID }} in your "
            f"prototxt) with a per-pixel base_lr {per:g}; or keep normalization {mode} with base_lr "
            f"{per * lr / eq:.2g} (the same per-pixel step; 10x lower, {lr / 10:g}, would still act like "
            f"{eq / 10:.2g} per pixel)"
        )
        data.update(normalization=mode, pixels=pixels, equivalent_lr=eq, suggested_lr=per)
    elif mode in lossnorm.SUMMED:
        cause += f" with an unnormalized loss ({mode}: the gradient grows with the number of pixels)"
        fix += ", or set net.normalization: VALID so the lr does not depend on the image size"
    fix += "; set solver.clip_gradients to bound a single bad step"
    msg = f"diverged at iteration {iteration}: {trigger.message}."
    if layers:
        msg += f" Largest updates at the last statistics: {layers}."
    msg += f" Likely cause: {cause}."
    return Finding("error", "diverged", trigger.layer or (worst[0].layer if worst else None), msg, fix, data)
