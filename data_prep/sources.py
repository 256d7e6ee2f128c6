"""Where the pairs come from: a CamVid-style list file, two folders matched by stem, and the
palette file for colour-coded labels. Every problem is a UserError naming file and line."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from data_prep.fsutil import read_utf8

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp"}


@dataclass(frozen=True)
class Pair:
    """One image and its label (None when building an image-only LMDB), with where it was listed."""

    image: Path
    label: Path | None
    where: str  # "train.txt line 7" or "images/a.png": for error messages

    @property
    def key_name(self) -> str:
        """The part of the LMDB key after the index (the image's name)."""
        return self.image.name


def read_list(list_file: Path, root: Path | None = None, *, labels: bool = True) -> list[Pair]:
    """Pairs from a list file of `image label` lines, paths relative to `root`
    (default: the list file's folder). Blank lines and `#` comments are skipped."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise UserError(f"list file {list_file} does not exist", "check the path given to --list")
    root = Path(root) if root is not None else list_file.parent
    if not root.is_dir():
        raise UserError(
            f"root folder {root} does not exist", "pass --root DIR, the folder the list's paths are relative to"
        )
    pairs: list[Pair] = []
    for n, line in enumerate(read_utf8(list_file, "list file").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        want = 2 if labels else 1
        if len(parts) < want or (labels and len(parts) != 2):
            raise UserError(
                f"{list_file} line {n}: expected 'image label', got {text!r}",
                "write one 'image_path label_path' pair per line, paths relative to --root",
            )
        pairs.append(Pair(root / parts[0], root / parts[1] if labels else None, f"{list_file} line {n}"))
    if not pairs:
        raise UserError(f"list file {list_file} has no entries", "add 'image label' lines to the list")
    check_duplicates(pairs)
    return pairs


def pair_folders(images: Path, labels: Path) -> list[Pair]:
    """Pairs from two folders, matched by file stem (a.jpg <-> a.png); unmatched files are errors."""
    for d, flag in ((images, "--images"), (labels, "--labels")):
        if not Path(d).is_dir():
            raise UserError(f"folder {d} does not exist", f"check the path given to {flag}")

    def by_stem(d: Path) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for p in sorted(Path(d).iterdir()):
            if p.suffix.lower() not in IMAGE_EXTS:
                continue
            try:
                p.name.encode()
            except UnicodeEncodeError:
                raise UserError(
                    f"file name {str(os.fsencode(p.name))[2:-1]} in {d} is not valid UTF-8 (it becomes the LMDB key)",
                    "rename it to UTF-8, e.g. convmv -f latin1 -t utf-8 --notest FILE",
                ) from None
            if p.stem in found:
                raise UserError(
                    f"{p} and {found[p.stem]} have the same stem {p.stem!r}", "keep one file per stem in each folder"
                )
            found[p.stem] = p
        return found

    imgs, lbls = by_stem(images), by_stem(labels)
    if not imgs:
        raise UserError(f"folder {images} has no images", f"put images ({', '.join(sorted(IMAGE_EXTS))}) in it")
    missing = sorted(set(imgs) - set(lbls))
    if missing:
        raise UserError(
            f"no label in {labels} for image {imgs[missing[0]]} ({len(missing)} unmatched)",
            "give each image a label file with the same stem, or remove the image",
        )
    extra = sorted(set(lbls) - set(imgs))
    if extra:
        raise UserError(
            f"label {lbls[extra[0]]} has no image in {images} ({len(extra)} unmatched)",
            "remove the stray label or add its image",
        )
    return [Pair(imgs[s], lbls[s], str(imgs[s])) for s in sorted(imgs)]


def check_duplicates(pairs: list[Pair]) -> None:
    """The same image (or label) twice would leak between records and double its statistics."""
    seen: dict[Path, str] = {}
    for p in pairs:
        for path in (p.image, p.label):
            if path is None:
                continue
            key = Path(path).resolve() if Path(path).exists() else Path(path)
            if key in seen:
                raise UserError(
                    f"{p.where}: duplicate entry {path} (already at {seen[key]})", "list each image and label once"
                )
            seen[key] = p.where


_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def read_palette(path: Path, num_classes: int, ignore_label: int) -> dict[tuple[int, int, int], int]:
    """Colour (R, G, B) -> class id from a palette file.

    One class per line: `name id R G B` or `name id #rrggbb`, separated by spaces or commas;
    lines starting with `#` are comments. Ids must be < num_classes or the ignore label."""
    return _read_palette(path, num_classes, ignore_label)[0]


def palette_class_names(path: Path, num_classes: int, ignore_label: int) -> list[str] | None:
    """The palette's name of each class 0..num_classes-1 (the first line of an id names it);
    None unless every class has a line."""
    names = _read_palette(path, num_classes, ignore_label)[1]
    return [names[i] for i in range(num_classes)] if all(i in names for i in range(num_classes)) else None


def _read_palette(
    path: Path, num_classes: int, ignore_label: int
) -> tuple[dict[tuple[int, int, int], int], dict[int, str]]:
    """(colour -> class id, class id -> its first name) of a palette file, checked."""
    names: dict[int, str] = {}
    path = Path(path)
    if not path.is_file():
        raise UserError(f"palette file {path} does not exist", "check the path given to --palette")
    table: dict[tuple[int, int, int], int] = {}
    for n, line in enumerate(read_utf8(path, "palette file").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = [t for t in re.split(r"[\s,]+", text) if t]
        fix = "write 'name id R G B' (or 'name id #rrggbb') per line"
        try:
            if len(parts) == 3 and (hex_match := _HEX.match(parts[2])):
                hx = hex_match.group(1)
                rgb = (int(hx[0:2], 16), int(hx[2:4], 16), int(hx[4:6], 16))
            elif len(parts) == 5:
                rgb = (int(parts[2]), int(parts[3]), int(parts[4]))
            else:
                raise ValueError
            cid = int(parts[1])
        except ValueError:
            raise UserError(f"{path} line {n}: cannot read {line.strip()!r}", fix) from None
        if not all(0 <= v <= 255 for v in rgb):
            raise UserError(f"{path} line {n}: colour {rgb} is outside 0..255", fix)
        if not (0 <= cid < num_classes or cid == ignore_label):
            raise UserError(
                f"{path} line {n}: class id {cid} is not < --num-classes {num_classes} "
                f"nor the ignore label {ignore_label}",
                "fix the id or --num-classes",
            )
        if rgb in table and table[rgb] != cid:
            raise UserError(
                f"{path} line {n}: colour {rgb} already maps to class {table[rgb]}", "give each colour one class"
            )
        table[rgb] = cid
        names.setdefault(cid, parts[0])
    if not table:
        raise UserError(f"palette file {path} has no entries", "add 'name id R G B' lines")
    return table, names


def palette_lut(table: dict[tuple[int, int, int], int]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted packed colours (R<<16|G<<8|B) and their class ids, for np.searchsorted lookups."""
    packed = np.array([(r << 16) | (g << 8) | b for r, g, b in table], np.int64)
    ids = np.array(list(table.values()), np.uint8)
    order = np.argsort(packed)
    return packed[order], ids[order]
