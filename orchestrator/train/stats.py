"""Blob statistics: the readable form of Caffe's debug_info.

Per top blob and per parameter blob: mean |data|, mean |diff| and sums of squares, read
through the `Blob.asum_*` / `sumsq_*` bindings (computed by Caffe's BLAS, on the GPU in GPU
mode) instead of copying every blob into numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BlobStat:
    """Statistics of one blob. `name` is the blob (top) or 'layer/index' (parameter)."""

    name: str
    kind: str  # "top" or "param"
    layer: str
    count: int
    asum_data: float
    asum_diff: float
    sumsq_data: float
    sumsq_diff: float

    @property
    def mean_abs_data(self) -> float:
        return self.asum_data / self.count if self.count else 0.0

    @property
    def mean_abs_diff(self) -> float:
        return self.asum_diff / self.count if self.count else 0.0

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.asum_data, self.asum_diff, self.sumsq_data, self.sumsq_diff))

    @property
    def update_ratio(self) -> float:
        """||update|| / ||weights|| for a parameter after solver.step (Caffe leaves the update in diff)."""
        if self.sumsq_data <= 0:
            return math.inf if self.sumsq_diff > 0 else 0.0
        return math.sqrt(self.sumsq_diff / self.sumsq_data)

    def record(self) -> dict[str, Any]:
        """Compact JSON record for metrics.jsonl (None for a non-finite number)."""

        def num(x: float) -> float | None:
            return float(x) if math.isfinite(x) else None

        return {
            "mean_abs_data": num(self.mean_abs_data),
            "mean_abs_diff": num(self.mean_abs_diff),
            "sumsq_data": num(self.sumsq_data),
            "sumsq_diff": num(self.sumsq_diff),
        }


def layer_of_top(net: Any) -> dict[str, str]:
    """Top blob name -> the last layer that writes it (in-place layers overwrite the same blob)."""
    owner: dict[str, str] = {}
    for name in net._layer_names:
        for top in net.top_names[name]:
            owner[top] = name
    return owner


def _stat(name: str, kind: str, layer: str, b: Any) -> BlobStat:
    # both passes over data, then both over diff: the second pass finds the blob in cache
    ad, sd = float(b.asum_data()), float(b.sumsq_data())
    ag, sg = float(b.asum_diff()), float(b.sumsq_diff())
    return BlobStat(name, kind, layer, b.count, ad, ag, sd, sg)


def collect(net: Any) -> list[BlobStat]:
    """Statistics of every top blob and parameter blob of a pycaffe Net, via the C++ bindings."""
    owner = layer_of_top(net)
    out = [_stat(n, "top", owner.get(n, n), b) for n, b in net.blobs.items()]
    for layer, blobs in net.params.items():
        out.extend(_stat(f"{layer}/{i}", "param", layer, b) for i, b in enumerate(blobs))
    return out


def records(stats: list[BlobStat]) -> dict[str, dict[str, dict[str, float | None]]]:
    """{'top': {name: rec}, 'param': {name: rec}} for one metrics.jsonl line."""
    out: dict[str, dict[str, dict[str, float | None]]] = {"top": {}, "param": {}}
    for s in stats:
        out[s.kind][s.name] = s.record()
    return out
