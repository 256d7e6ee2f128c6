"""Class statistics and loss weights for imbalanced segmentation data (pure numpy).

Median-frequency balancing (Eigen & Fergus 2015, as SegNet uses it):
    freq(c)   = pixels of class c / total non-ignored pixels of the images in which c appears
    weight(c) = median(freq over classes that appear) / freq(c)
A class that never appears gets weight 0 (and the caller warns). Ignored pixels count nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ClassCounter:
    """Accumulates per-class counts image by image, so the workers only send bincounts."""

    num_classes: int
    ignore_label: int
    pixel_counts: np.ndarray = field(init=False)
    image_counts: np.ndarray = field(init=False)
    appear_pixels: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.pixel_counts = np.zeros(self.num_classes, np.int64)
        self.image_counts = np.zeros(self.num_classes, np.int64)
        self.appear_pixels = np.zeros(self.num_classes, np.int64)

    def add(self, bincount: np.ndarray) -> None:
        """Add one label image, given as its bincount over pixel values (any length >= num_classes)."""
        counts = np.asarray(bincount, np.int64)[: self.num_classes].copy()
        if 0 <= self.ignore_label < self.num_classes:
            counts[self.ignore_label] = 0
        present = counts > 0
        self.pixel_counts += counts
        self.image_counts += present
        self.appear_pixels[present] += int(counts.sum())


def frequencies(pixel_counts: np.ndarray, appear_pixels: np.ndarray) -> np.ndarray:
    """freq(c) = pixel_counts[c] / appear_pixels[c]; 0 where the class never appears."""
    pc = np.asarray(pixel_counts, np.float64)
    ap = np.asarray(appear_pixels, np.float64)
    return np.divide(pc, ap, out=np.zeros_like(pc), where=ap > 0)


def median_frequency_weights(pixel_counts: np.ndarray, appear_pixels: np.ndarray) -> np.ndarray:
    """Eigen & Fergus weights: median(freq of present classes) / freq(c); 0 for absent classes."""
    freq = frequencies(pixel_counts, appear_pixels)
    present = freq > 0
    if not present.any():
        return np.zeros_like(freq)
    med = float(np.median(freq[present]))
    return np.divide(med, freq, out=np.zeros_like(freq), where=present)


def inverse_frequency_weights(pixel_counts: np.ndarray) -> np.ndarray:
    """'Balanced' weights: total / (present classes * pixels of c), so a pixel weighs 1 on average
    when the classes are equally frequent; 0 for absent classes."""
    pc = np.asarray(pixel_counts, np.float64)
    present = pc > 0
    if not present.any():
        return np.zeros_like(pc)
    return np.divide(pc.sum() / present.sum(), pc, out=np.zeros_like(pc), where=present)


def infogain_matrix(weights: np.ndarray) -> np.ndarray:
    """InfogainLoss H: diag(weights) as a 1 x 1 x K x K float32 array."""
    w = np.asarray(weights, np.float32)
    return np.diag(w)[None, None]


def absent_classes(pixel_counts: np.ndarray, ignore_label: int) -> list[int]:
    """Class ids that never appear (not counting an ignore label that is also a class id)."""
    return [c for c, n in enumerate(np.asarray(pixel_counts)) if n == 0 and c != ignore_label]


def class_stats(counter: ClassCounter) -> dict[str, Any]:
    """The class part of stats.json, JSON-ready."""
    pc = counter.pixel_counts
    total = int(pc.sum())
    share = pc / total if total else np.zeros(len(pc))
    return {
        "class_pixel_counts": pc.tolist(),
        "class_image_counts": counter.image_counts.tolist(),
        "class_appear_pixels": counter.appear_pixels.tolist(),
        "class_frequencies": frequencies(pc, counter.appear_pixels).tolist(),
        "class_pixel_share": np.asarray(share, np.float64).tolist(),
        "class_weights": {
            "median_frequency": median_frequency_weights(pc, counter.appear_pixels).tolist(),
            "inverse_frequency": inverse_frequency_weights(pc).tolist(),
        },
        "absent_classes": absent_classes(pc, counter.ignore_label),
    }
