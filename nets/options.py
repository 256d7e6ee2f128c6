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
