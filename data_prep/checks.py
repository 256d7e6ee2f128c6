"""Checks on a built dataset before any training: what makes metrics NaN or undefined, weights
extreme, crops impossible, resizes distorting, or val a copy of train. Pure functions: the build
gathers per-record facts into stats.json's `checks`; `data_findings` turns one or two stats.json
(train, val) and the run's crop into the doctor's Findings (`orchestrate check EXP`, the run's
pre-flight and report)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.findings import Finding

SHOW = 5  # names quoted in a message; the full lists are in stats.json
WEIGHT_SPAN = 1000.0  # median-frequency weights spanning more than this: the rare classes dominate
ASPECT_TOLERANCE = 0.02  # relative: a --resize to another aspect stretches the picture


@dataclass(frozen=True)
class RecordFacts:
    """What the checks need of one written record."""

    name: str  # the record's key
    all_ignore: bool  # no labelled pixel: per-class accuracy of this image is NaN
    source_hw: tuple[int, int]  # before --resize
    hw: tuple[int, int]  # as stored
    digest: str


def build_checks(facts: Sequence[RecordFacts], resize: tuple[int, int] | None) -> dict[str, object]:
    """stats.json's `checks` for one output dir (`resize` is (width, height))."""
    all_ignore = [f.name for f in facts if f.all_ignore]
    distorted: list[str] = []
    if resize is not None:
        target = resize[0] / resize[1]
        distorted = [f.name for f in facts if abs((f.source_hw[1] / f.source_hw[0]) / target - 1) > ASPECT_TOLERANCE]
    hs = [f.hw[0] for f in facts] or [0]
    ws = [f.hw[1] for f in facts] or [0]
    return {
        "all_ignore_images": all_ignore,
        "aspect_changed_images": distorted,
        "min_height": min(hs),
        "min_width": min(ws),
    }


def read_digests(index_file: Path) -> dict[str, str]:
    """digest -> record key, from a data dir's index.txt (4th column; older builds have none)."""
    out: dict[str, str] = {}
    if not index_file.is_file():
        return out
    for line in index_file.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        parts = line.split("\t")
        if len(parts) >= 4 and parts[3]:
            out.setdefault(parts[3], parts[0])
    return out


def _names(items: Sequence[str]) -> str:
    more = f" and {len(items) - SHOW} more" if len(items) > SHOW else ""
    return ", ".join(items[:SHOW]) + more


def _class(stats: dict, c: int) -> str:
    names = stats.get("class_names")
    return f"{c} ({names[c]})" if isinstance(names, list) and c < len(names) else str(c)


def _collector() -> tuple[list[Finding], Callable[..., None]]:
    """A findings list and its `add(severity, code, message, fix, data)` (the data stage names no layer)."""
    out: list[Finding] = []

    def add(severity: str, code: str, message: str, fix: str, data: dict) -> None:
        out.append(Finding(severity, code, None, message, fix, data))

    return out, add


def _split_findings(stats: dict, split: str, crop: tuple[int, int] | None) -> list[Finding]:
    out, add = _collector()
    checks = stats.get("checks") or {}
    empty = checks.get("all_ignore_images") or []
    if empty:
        add(
            "warning",
            "data-all-ignore",
            f"{split}: {len(empty)} image(s) have no labelled pixel (all ignore): {_names(empty)}; "
            "their per-class accuracy is NaN",
            "fix or drop their labels (the data stage lists them all in stats.json checks.all_ignore_images)",
            {"split": split, "images": empty},
        )
    absent = [c for c in stats.get("absent_classes", []) if c != stats.get("ignore_label")]
    if absent:
        what = "never learnt" if split == "train" else "its IU is undefined in validation (left out of mIoU)"
        add(
            "warning",
            "data-class-absent",
            f"{split}: class(es) {', '.join(_class(stats, c) for c in absent)} never appear: {what}",
            "add images with these classes to the split, or merge them with --label-map",
            {"split": split, "classes": absent},
        )
    weights = [w for w in stats.get("class_weights", {}).get("median_frequency", []) if w > 0]
    if split == "train" and weights and max(weights) / min(weights) > WEIGHT_SPAN:
        span = max(weights) / min(weights)
        add(
            "warning",
            "data-weight-span",
            f"median-frequency class weights span {span:.0f}x (over {WEIGHT_SPAN:.0f}x): the rarest classes' "
            "pixels dominate the loss",
            "use net.class_weighting: sqrt_median_frequency (the square root spans "
            f"{span**0.5:.0f}x), or merge rare classes with --label-map",
            {"span": span},
        )
    if crop is not None and checks:
        h, w = checks.get("min_height", 0), checks.get("min_width", 0)
        if h < crop[0] or w < crop[1]:
            add(
                "error",
                "data-smaller-than-crop",
                f"{split}: the smallest image is {w}x{h} (WxH), smaller than the crop {crop[1]}x{crop[0]}",
                "lower data.augment.crop, or build the LMDBs with a larger --resize",
                {"split": split, "min_hw": [h, w], "crop": list(crop)},
            )
    distorted = checks.get("aspect_changed_images") or []
    if distorted:
        add(
            "warning",
            "data-aspect",
            f"{split}: --resize {stats.get('resize')} changes the aspect ratio of {len(distorted)} image(s) "
            f"(e.g. {_names(distorted)}): objects are stretched",
            "resize to the images' own aspect, or crop in the data layer",
            {"split": split, "images": distorted},
        )
    return out


def data_findings(
    train: dict,
    val: dict | None = None,
    *,
    crop: tuple[int, int] | None = None,
    train_dir: Path | None = None,
    val_dir: Path | None = None,
) -> list[Finding]:
    """The checks of a train (and val) data dir's stats.json as Findings; `crop` is (h, w)."""
    out, add = _collector()
    out += _split_findings(train, "train", crop)
    if val is not None:
        out += _split_findings(val, "val", None)
    if train_dir is not None and val_dir is not None:
        # each stats.json names its own index file (data_prep.statsfile: files.index)
        tr = read_digests(Path(train_dir) / train.get("files", {}).get("index", ""))
        va = read_digests(Path(val_dir) / val.get("files", {}).get("index", "")) if val is not None else {}
        both = sorted(set(tr) & set(va))
        if both:
            pairs = [f"{va[d]} = {tr[d]}" for d in both]
            add(
                "warning",
                "data-duplicate",
                f"{len(both)} val image(s) have the same pixels as a train image ({_names(pairs)}): "
                "validation measures memory, not generalization",
                "remove them from one split",
                {"pairs": pairs},
            )
    return out


def all_ignore(bincount: np.ndarray | None, num_classes: int, ignore_label: int) -> bool:
    """True when a label image has no pixel of a real class."""
    if bincount is None:
        return False
    counts = np.asarray(bincount[:num_classes]).copy()
    if 0 <= ignore_label < num_classes:
        counts[ignore_label] = 0
    return int(counts.sum()) == 0
