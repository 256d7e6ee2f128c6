"""Label ids as a dataset stores them -> the class ids a net trains on (`data build --label-map`).

Public datasets rarely store training ids: Cityscapes' `*_labelIds.png` hold 34 ids of which 19
are trained (the rest ignored), ADE20K stores 0 for "other" and 1..150 for the classes. A label
map is applied to every label pixel before the statistics, so stats.json, the class weights and the
LMDBs all see training ids. A value the map does not cover is an error (listing the values and the
images), never a silent class.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import UserError
from data_prep.fsutil import read_utf8

IGNORE = 255
# Cityscapes labelIds -> trainIds (cityscapesScripts' helpers/labels.py); every other id 0..33 is ignored.
_CITYSCAPES_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13}
_CITYSCAPES_TRAIN.update({27: 14, 28: 15, 31: 16, 32: 17, 33: 18})
CITYSCAPES_NAMES = (
    "road sidewalk building wall fence pole traffic_light traffic_sign vegetation terrain sky person rider car "
    "truck bus train motorcycle bicycle"
).split()
VOC_NAMES = (
    "background aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike person "
    "pottedplant sheep sofa train tvmonitor"
).split()


@dataclass(frozen=True)
class LabelMap:
    """A stored value -> class id table (IGNORE allowed as a target); `source` says where it came from."""

    table: dict[int, int]
    source: str
    num_classes: int | None = None  # what the preset implies (None: from --num-classes)
    ignore_label: int | None = None
    class_names: tuple[str, ...] | None = None

    def lut(self) -> np.ndarray:
        """int16[256]: the class id of each stored value, -1 where the map says nothing."""
        lut = np.full(256, -1, np.int16)
        for src, dst in self.table.items():
            lut[src] = dst
        return lut


def _preset(name: str) -> LabelMap | None:
    if name == "cityscapes":
        table = {i: _CITYSCAPES_TRAIN.get(i, IGNORE) for i in range(34)}
        table[IGNORE] = IGNORE  # some tools write 255 for "unlabelled"
        return LabelMap(table, "preset cityscapes (labelIds -> 19 trainIds)", 19, IGNORE, tuple(CITYSCAPES_NAMES))
    if name == "ade20k":
        table = {0: IGNORE, **{k: k - 1 for k in range(1, 151)}}
        return LabelMap(table, "preset ade20k (0 -> ignore, k -> k-1)", 150, IGNORE)
    if name == "identity":
        return LabelMap({i: i for i in range(256)}, "preset identity")
    return None


PRESETS = ("cityscapes", "ade20k", "identity")


def load_label_map(spec: str | Path) -> LabelMap:
    """A preset name (cityscapes, ade20k, identity) or a file: lines `SRC DST` (`#` comments), or
    a JSON object {"SRC": DST}. DST 255 (or any value) may be the ignore label."""
    preset = _preset(str(spec))
    if preset is not None:
        return preset
    path = Path(spec)
    fix = f"give a preset ({', '.join(PRESETS)}) or a file of 'SRC DST' lines (or a JSON object)"
    if not path.is_file():
        raise UserError(f"--label-map {spec}: no such preset or file", fix)
    text = read_utf8(path, "label map")
    pairs: list[tuple[int, int, str]] = []
    if text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}", fix) from None
        for k, v in obj.items():
            if not (re.fullmatch(r"\d+", str(k)) and isinstance(v, int) and not isinstance(v, bool)):
                raise UserError(f"{path}: entry {k!r}: {v!r} is not 'integer: integer'", fix)
            pairs.append((int(k), v, f"{path} key {k!r}"))
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            body = line.split("#", 1)[0].split()
            if not body:
                continue
            if len(body) != 2 or not all(re.fullmatch(r"\d+", t) for t in body):
                raise UserError(f"{path} line {n}: expected 'SRC DST' (two integers), got {line.strip()!r}", fix)
            pairs.append((int(body[0]), int(body[1]), f"{path} line {n}"))
    table: dict[int, int] = {}
    for src, dst, where in pairs:
        if not (0 <= src <= 255 and 0 <= dst <= 255):
            raise UserError(f"{where}: {src} -> {dst} is outside 0..255 (labels are stored as uint8)", fix)
        if src in table and table[src] != dst:
            raise UserError(f"{where}: value {src} is mapped twice ({table[src]} and {dst})", "map each value once")
        table[src] = dst
    if not table:
        raise UserError(f"label map {path} has no entries", fix)
    return LabelMap(table, f"file {path}")


def apply(label: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The mapped label, and the stored values the map does not cover (empty when all are)."""
    mapped = lut[label]
    if (mapped < 0).any():
        return label, sorted(int(v) for v in np.unique(label[mapped < 0]))
    return mapped.astype(np.uint8), []


def read_class_names(path: Path) -> tuple[str, ...]:
    """Class names from a file: one name per line, or ADE20K's objectInfo150.txt (a header, then
    tab-separated `Idx Ratio Train Val Name`; the first of a name's synonyms is kept)."""
    text = read_utf8(Path(path), "class names file")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].split("\t")[0].strip().lower() == "idx":
        names = [ln.split("\t")[-1].split(",")[0].strip() for ln in lines[1:]]
    else:
        names = [ln.strip() for ln in lines if not ln.lstrip().startswith("#")]
    if not names:
        raise UserError(f"class names file {path} has no names", "write one class name per line")
    return tuple(names)
