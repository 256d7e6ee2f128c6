"""Public datasets' folder layouts -> (image, label) pairs (`data build --layout` and the pairing
rule under it).

One general mechanism: walk an image folder recursively, keep the files whose names end in an
image suffix, and find each one's label under the label folder at the same relative path with the
suffix swapped (Cityscapes: `leftImg8bit/train/aachen/X_leftImg8bit.png` <->
`gtFine/train/aachen/X_gtFine_labelIds.png`). The layouts fill it in, and say which label map,
class count and names the dataset uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError
from data_prep.fsutil import read_utf8
from data_prep.labelmap import VOC_NAMES, read_class_names
from data_prep.sources import Pair, check_duplicates


@dataclass(frozen=True)
class PairRule:
    """Images under `images` ending in `image_suffix`; labels under `labels`, same relative
    folder, the name's suffix replaced by `label_suffix`."""

    images: Path
    labels: Path
    image_suffix: str
    label_suffix: str


def scan_pairs(rule: PairRule) -> list[Pair]:
    """Every image of the rule with its label, in sorted path order; an image without a label, or a
    label (with the label suffix) without an image, is an error naming both counts and one file."""
    for d, what in ((rule.images, "image"), (rule.labels, "label")):
        if not d.is_dir():
            raise UserError(f"{what} folder {d} does not exist", "check --root / --images / --labels and --split")
    images = sorted(p for p in rule.images.rglob(f"*{rule.image_suffix}") if p.is_file())
    if not images:
        raise UserError(
            f"no files ending in {rule.image_suffix!r} under {rule.images}",
            "check the folder, or set --image-suffix to how your image names end",
        )
    pairs, missing = [], []
    wanted: set[Path] = set()
    for img in images:
        rel = img.relative_to(rule.images)
        label = rule.labels / rel.parent / (img.name[: -len(rule.image_suffix)] + rule.label_suffix)
        wanted.add(label)
        if label.is_file():
            pairs.append(Pair(img, label, str(rel)))
        else:
            missing.append(label)
    if missing:
        raise UserError(
            f"{len(missing)} of {len(images)} images under {rule.images} have no label, e.g. {missing[0]} is missing",
            f"labels are looked for at the image's relative path with {rule.image_suffix!r} -> {rule.label_suffix!r}; "
            "set --label-suffix to how your label names end",
        )
    stray = sorted(p for p in rule.labels.rglob(f"*{rule.label_suffix}") if p.is_file() and p not in wanted)
    if stray:
        raise UserError(
            f"{len(stray)} label(s) under {rule.labels} have no image, e.g. {stray[0]}",
            "remove the stray labels or add their images",
        )
    check_duplicates(pairs)
    return pairs


@dataclass(frozen=True)
class Layout:
    """What a dataset's layout implies for a build of one split."""

    pairs: list[Pair]
    label_map: str | None  # a labelmap preset name, or None (labels are training ids already)
    num_classes: int
    ignore_label: int
    class_names: tuple[str, ...] | None
    source: dict[str, str]


LAYOUTS = ("cityscapes", "ade20k", "voc")
_ADE_SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


def _voc_pairs(root: Path, split: str) -> list[Pair]:
    """VOC: ImageSets/Segmentation/SPLIT.txt names JPEGImages/ID.jpg and SegmentationClass/ID.png."""
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise UserError(
            f"VOC split list {listing} does not exist",
            "pass --root VOCdevkit/VOC2012 (the folder holding ImageSets/, JPEGImages/, SegmentationClass/) "
            "and --split train|val|trainval",
        )
    pairs = []
    for n, line in enumerate(read_utf8(listing, "VOC split list").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        img, lbl = root / "JPEGImages" / f"{name}.jpg", root / "SegmentationClass" / f"{name}.png"
        for path in (img, lbl):
            if not path.is_file():
                raise UserError(f"{listing} line {n}: {path} does not exist", "check the VOC folder is complete")
        pairs.append(Pair(img, lbl, f"{listing} line {n}"))
    if not pairs:
        raise UserError(f"VOC split list {listing} is empty", "use a split with entries")
    return pairs


def resolve_layout(name: str, root: Path, split: str) -> Layout:
    """The pairs of one split of a dataset in its published layout, with its label ids' meaning."""
    root = Path(root)
    if name == "cityscapes":
        rule = PairRule(
            root / "leftImg8bit" / split, root / "gtFine" / split, "_leftImg8bit.png", "_gtFine_labelIds.png"
        )
        from data_prep.labelmap import CITYSCAPES_NAMES

        return Layout(scan_pairs(rule), "cityscapes", 19, 255, tuple(CITYSCAPES_NAMES), _src(name, root, split))
    if name == "ade20k":
        sub = _ADE_SPLITS.get(split)
        if sub is None:
            raise UserError(f"ADE20K has no split {split!r}", "use --split train (training) or val (validation)")
        rule = PairRule(root / "images" / sub, root / "annotations" / sub, ".jpg", ".png")
        info = root / "objectInfo150.txt"
        names = read_class_names(info) if info.is_file() else None
        return Layout(scan_pairs(rule), "ade20k", 150, 255, names, _src(name, root, split))
    if name == "voc":
        return Layout(_voc_pairs(root, split), None, 21, 255, tuple(VOC_NAMES), _src(name, root, split))
    raise UserError(f"unknown --layout {name!r}", f"use one of {', '.join(LAYOUTS)}")


def _src(name: str, root: Path, split: str) -> dict[str, str]:
    return {"layout": name, "root": str(root.resolve()), "split": split}
