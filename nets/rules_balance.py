"""Class imbalance, from the data stage's stats.json: when the median-frequency weights of the
classes that appear span more than IMBALANCE_SPAN, an unweighted SoftmaxWithLoss is dominated by
the common classes and the rare ones are learnt last or never. Pure: NetParameter and Context in."""

from __future__ import annotations

from typing import Any

from common.findings import Finding
from nets.graph import Context, in_phase

# rarest / commonest weight above which an unweighted loss is worth a warning (CamVid: ~100)
IMBALANCE_SPAN = 10.0


def weight_span(weights: tuple[float, ...] | list[float]) -> tuple[float, int, int] | None:
    """(max / min over the classes that appear, rarest class, commonest class), or None when
    fewer than two classes have a weight."""
    present = [(w, c) for c, w in enumerate(weights) if w > 0]
    if len(present) < 2:
        return None
    (lo, common), (hi, rare) = min(present), max(present)
    return hi / lo, rare, common


def check_class_balance(net: Any, ctx: Context) -> list[Finding]:
    """An unweighted SoftmaxWithLoss over classes whose weights span more than IMBALANCE_SPAN."""
    span = weight_span(ctx.class_weights)
    if span is None or span[0] <= IMBALANCE_SPAN:
        return []
    ratio, rare, common = span

    def name(c: int) -> str:
        return f"class {c} ({ctx.class_names[c]})" if c < len(ctx.class_names) else f"class {c}"

    return [
        Finding(
            "warning",
            "class-imbalance",
            layer.name,
            f"the data's classes are imbalanced (stats.json: median-frequency weight of {name(rare)} is "
            f"{ratio:.0f}x that of {name(common)}) and '{layer.name}' weighs every pixel alike: the common "
            "classes dominate the loss, and the rare ones are learnt last or not at all.",
            "weigh the classes: InfogainLoss with the data stage's H (infogain_loss_param { source: "
            '"DATA/infogain_H.binaryproto" }, median frequency, or its square root for a softer '
            "balance; generated nets: net.loss: infogain with net.class_weighting), or `orchestrate fix`",
            {"span": round(ratio, 2), "rarest": rare, "commonest": common},
        )
        for layer in in_phase(net, "TRAIN")
        if layer.type == "SoftmaxWithLoss"
    ]
