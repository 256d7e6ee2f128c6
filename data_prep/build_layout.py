"""`data build --layout cityscapes|ade20k|voc --root DIR --split S [--val-split S]`: a public
dataset in its own layout, its label ids mapped to training ids, its class names in stats.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_prep.build import BuildOptions, write_dir, write_splits
from data_prep.fsutil import atomic_dir
from data_prep.layouts import resolve_layout


def build_layout(
    out_dir: Path,
    *,
    layout: str,
    root: Path,
    split: str = "train",
    val_split: str | None = None,
    num_classes: int | None = None,
    ignore_label: int | None = None,
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Build one split into `out_dir` (returns its stats), or with `val_split` both into
    `out_dir/train` and `out_dir/val` (returns {"train": stats, "val": stats}). The layout's label
    map, class count, ignore label and names apply unless given (`label_map`, `class_names` in
    `options`)."""
    train = resolve_layout(layout, Path(root), split)
    val = resolve_layout(layout, Path(root), val_split) if val_split is not None else None
    if options.get("label_map") is None:
        options["label_map"] = train.label_map
    if options.get("class_names") is None and train.class_names is not None:
        options["class_names"] = list(train.class_names)
    opts = BuildOptions(
        train.num_classes if num_classes is None else num_classes,
        train.ignore_label if ignore_label is None else ignore_label,
        **options,
    )
    opts.validate()
    if val is None:
        opts.decode_options()  # a bad label map fails before anything is written
        with atomic_dir(Path(out_dir), overwrite) as tmp:
            return write_dir(tmp, train.pairs, opts, train.source, "build")
    parts = {"train": (train.pairs, train.source), "val": (val.pairs, val.source)}
    return write_splits(Path(out_dir), parts, opts, overwrite)
