"""Shared bits of the benchmarks: timing and the one-line result format `NAME ratio=X.XX`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of `repeats` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def result_line(name: str, ratio: float) -> str:
    """The line `make bench` ends with, one per benchmark (higher ratio is better)."""
    return f"{name} ratio={ratio:.2f}"
