"""The architecture knobs the generators share (kept apart so compact and fcn need not
import the top-level generator)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchOptions:
    """What shapes the body of a net, independent of its data and loss."""

    num_classes: int
    width: int = 32
    depth: int = 3
    batch_norm: bool = False
    filler: str = "msra"
    learn_upsample: bool = False
    skips: int = 0  # compact only: score layers fused from the last `skips` pooling stages (FCN-16s/8s style)
    # compact only: "scale" multiplies the mean-subtracted input by a constant; "mvn" brings each
    # channel of each image to mean 0, variance 1 (MVN), so a darker or tinted drive looks alike
    input_norm: str = "scale"
