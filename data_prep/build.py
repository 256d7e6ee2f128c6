"""Raw images + labels -> `images/` and `labels/` LMDBs, stats.json and infogain_H.binaryproto.

Everything is written into a hidden temp folder next to the output and renamed into place
only when complete, so a failed build leaves nothing that looks finished.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.datastats import STATS_FILE
from common.errors import UserError
from data_prep import decode, labelmap
from data_prep.checks import RecordFacts, all_ignore
from data_prep.datum import blobproto_bytes
from data_prep.fsutil import atomic_dir
from data_prep.layouts import PairRule, scan_pairs
from data_prep.lmdbio import LmdbWriter
from data_prep.progress import Progress
from data_prep.sources import Pair, pair_folders, palette_class_names, palette_lut, read_list, read_palette
from data_prep.stats import ClassCounter, infogain_matrix
from data_prep.statsfile import INDEX_FILE, INFOGAIN_FILE, stats_json
from data_prep.workers import decode_all


@dataclass
class BuildOptions:
    """How to build; `resize` is (width, height)."""

    num_classes: int
    ignore_label: int
    palette: Path | None = None
    resize: tuple[int, int] | None = None
    encoded: bool = False
    shuffle_seed: int | None = None
    workers: int | None = None
    skip_bad: bool = False
    quiet: bool = False
    allow_lossy_labels: bool = False
    # one name per class, in label order (stats.json's class_names, which runs, reports and
    # TensorBoard show); None: the palette's names, else dataset.json's beside the data
    class_names: list[str] | None = None
    label_map: str | None = None  # a labelmap preset name or file: stored label values -> class ids
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in stats.json as given

    def validate(self) -> None:
        """Catch impossible settings before any file is touched."""
        if not 1 <= self.num_classes <= 255:
            raise UserError(
                f"--num-classes {self.num_classes} must be 1..255 (labels are stored as uint8)",
                "pass the number of classes, e.g. --num-classes 11 for CamVid",
            )
        if not 0 <= self.ignore_label <= 255:
            raise UserError(
                f"--ignore-label {self.ignore_label} must be 0..255 (labels are stored as uint8)",
                "use 255 (VOC) or the void id (CamVid: 11)",
            )
        if self.resize is not None and min(self.resize) < 1:
            raise UserError(f"--resize {self.resize} must be positive", "write --resize WxH, e.g. 480x360")
        if self.workers is not None and self.workers < 1:
            raise UserError(f"--workers {self.workers} must be >= 1", "omit --workers to use all cores")
        n = self.class_names
        if n is not None and (len(n) != self.num_classes or not all(isinstance(x, str) and x for x in n)):
            raise UserError(
                f"class names {n} are not {self.num_classes} non-empty strings",
                "give one name per class, in label order",
            )

    def resolve_class_names(self, near: Path | None) -> list[str] | None:
        """Set class_names when not given: the palette's names, else a dataset.json beside the
        data whose class_names fit num_classes (what `data synth` writes)."""
        if self.class_names is None and self.palette is not None:
            self.class_names = palette_class_names(self.palette, self.num_classes, self.ignore_label)
        if self.class_names is None and near is not None:
            self.class_names = dataset_json_class_names(Path(near), self.num_classes)
        return self.class_names

    def decode_options(self) -> decode.DecodeOptions:
        pal = None
        if self.palette is not None:
            pal = palette_lut(read_palette(self.palette, self.num_classes, self.ignore_label))
        lut = None if self.label_map is None else labelmap.load_label_map(self.label_map).lut()
        return decode.DecodeOptions(
            self.num_classes, self.ignore_label, self.resize, self.encoded, pal, self.allow_lossy_labels, lut
        )


def dataset_json_class_names(folder: Path, num_classes: int | None) -> list[str] | None:
    """class_names of folder/dataset.json when it holds one string per class (any number of them
    when `num_classes` is None), else None."""
    try:
        names = json.loads((folder / "dataset.json").read_text(encoding="utf-8")).get("class_names")
    except (OSError, ValueError, AttributeError):
        return None
    ok = isinstance(names, list) and num_classes in (None, len(names)) and all(isinstance(x, str) and x for x in names)
    return list(names) if ok else None


def source_folder(list_file: Path | None, root: Path | None, images: Path | None) -> Path | None:
    """Where a dataset.json of the raw data sits: the root, else the list's or the images' folder."""
    if root is not None:
        return Path(root)
    return Path(list_file).parent if list_file is not None else (Path(images).parent if images else None)


def resolve_pairs(
    list_file: Path | None = None,
    root: Path | None = None,
    images: Path | None = None,
    labels: Path | None = None,
    suffixes: tuple[str, str] | None = None,
) -> list[Pair]:
    """Pairs from exactly one source: a list file (paths relative to `root`) or two folders
    (matched by stem, or with `suffixes` (image, label) recursively by relative path and suffix)."""
    if (list_file is None) == (images is None and labels is None):
        raise UserError(
            "give either --list FILE or both --images DIR and --labels DIR",
            "e.g. --list train.txt --root /data/camvid, or --images imgs/ --labels annot/",
        )
    if list_file is not None:
        return read_list(Path(list_file), None if root is None else Path(root))
    if images is None or labels is None:
        raise UserError("--images and --labels go together", "pass both folders")
    if suffixes is not None:
        return scan_pairs(PairRule(Path(images), Path(labels), *suffixes))
    return pair_folders(Path(images), Path(labels))


def record_key(index: int, pair: Pair) -> bytes:
    """`00000007_name.png`: Caffe's convert_imageset style, sorted in write order."""
    return f"{index:08d}_{pair.key_name}".encode()


def _bad_error(bad: decode.Bad) -> UserError:
    return UserError(
        f"{bad.where}: {bad.file}: {bad.reason}",
        bad.fix
        or "fix or replace the file (or its --num-classes/--ignore-label settings), remove "
        "the pair from the list, or pass --skip-bad to leave such pairs out",
    )


def _unmapped_error(bad: list[decode.Bad], label_map: str | None) -> UserError:
    values = sorted({v for b in bad for v in b.unmapped})
    files = ", ".join(b.file for b in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return UserError(
        f"label values {values} are not covered by --label-map {label_map}, in {len(bad)} label file(s): {files}",
        "add a 'SRC DST' line for each value to the map (DST may be the ignore label)",
    )


def write_lmdbs(
    pairs: list[Pair], image_db: Path, label_db: Path | None, opts: BuildOptions, label: str = "build"
) -> dict[str, Any]:
    """Write the image LMDB (and the label LMDB, same keys); return counts, sizes, skipped pairs.

    Stops with a UserError at the first bad pair unless `opts.skip_bad`."""
    dopts = opts.decode_options()
    workers = opts.workers or os.cpu_count() or 1
    dbs: list[LmdbWriter] = []
    counter = ClassCounter(opts.num_classes, opts.ignore_label)
    bar = Progress(len(pairs), label, quiet=opts.quiet)
    bgr, sizes, skipped, nbytes, pixels = np.zeros(3), set(), [], 0, 0
    index: list[tuple[str, Pair]] = []
    facts: list[RecordFacts] = []
    unmapped: list[decode.Bad] = []  # label values --label-map does not cover: all reported together
    lossy: Counter[str] = Counter()
    lossy_first = ""
    committed = False
    try:
        img_db = LmdbWriter(image_db)
        dbs.append(img_db)
        lbl_db = None
        if label_db is not None:
            lbl_db = LmdbWriter(label_db)
            dbs.append(lbl_db)
        for pair, rec in zip(pairs, decode_all(pairs, dopts, workers), strict=True):
            bar.update()
            if isinstance(rec, decode.Bad):
                if rec.unmapped:
                    unmapped.append(rec)
                    continue
                if not opts.skip_bad:
                    raise _bad_error(rec)
                skipped.append(rec.to_dict())
                continue
            key = record_key(len(index), pair)
            img_db.put(key, rec.image_datum)
            nbytes += len(rec.image_datum)
            if lbl_db is not None and rec.label_datum is not None:
                lbl_db.put(key, rec.label_datum)
                counter.add(rec.bincount)  # type: ignore[arg-type]
            if rec.lossy_label:
                lossy[rec.lossy_label] += 1
                lossy_first = lossy_first or str(pair.label)
            bgr += rec.bgr_sum
            sizes.add((rec.height, rec.width))
            pixels += rec.height * rec.width
            index.append((key.decode(), pair))
            empty = all_ignore(rec.bincount, opts.num_classes, opts.ignore_label)
            facts.append(RecordFacts(key.decode(), empty, rec.source_hw, (rec.height, rec.width), rec.digest))
        if unmapped:
            raise _unmapped_error(unmapped, opts.label_map)
        for db in dbs:
            db.close()
        committed = True
    finally:
        bar.close()
        if not committed:
            for db in dbs:
                db.abort()  # also on those already committed: harmless
    seconds = bar.elapsed()  # including the last commit
    if not index:
        raise UserError(
            f"no usable pairs: all {len(pairs)} were bad (first: {skipped[0]['where']}: {skipped[0]['reason']})",
            "fix the inputs; see the reasons above",
        )
    return {
        "index": index,
        "facts": facts,
        "counter": counter,
        "skipped": skipped,
        "sizes": sizes,
        "mean_bgr": bgr / pixels,
        "pixels": pixels,
        "seconds": seconds,
        "bytes": nbytes,
        "lossy_labels": (dict(lossy), lossy_first),
    }


def write_dir(out: Path, pairs: list[Pair], opts: BuildOptions, source: dict[str, Any], label: str) -> dict[str, Any]:
    """Everything of the output contract into `out` (a fresh temp folder)."""
    if opts.shuffle_seed is not None:
        perm = np.random.default_rng(opts.shuffle_seed).permutation(len(pairs))
        pairs = [pairs[i] for i in perm]
    res = write_lmdbs(pairs, out / "images", out / "labels", opts, label)
    stats = stats_json(res, opts, source)
    weights = np.array(stats["class_weights"]["median_frequency"])
    (out / INFOGAIN_FILE).write_bytes(blobproto_bytes(infogain_matrix(weights)))
    with open(out / INDEX_FILE, "w", encoding="utf-8", errors="surrogateescape") as f:  # paths as on disk
        # key, image, label, sha1 of the decoded pixels (data_prep.checks: duplicates across splits)
        rows = zip(res["index"], res["facts"], strict=True)
        f.writelines(f"{key}\t{p.image}\t{p.label}\t{fact.digest}\n" for (key, p), fact in rows)
    (out / STATS_FILE).write_text(json.dumps(stats, indent=1) + "\n")
    return stats


def _source(list_file: Path | None, root: Path | None, images: Path | None, labels: Path | None) -> dict[str, Any]:
    if list_file is not None:
        return {
            "list": str(Path(list_file).resolve()),
            "root": str(Path(root if root is not None else Path(list_file).parent).resolve()),
        }
    return {"images": str(Path(images).resolve()), "labels": str(Path(labels).resolve())}  # type: ignore[arg-type]


def _prepare(
    num_classes: int, ignore_label: int, suffixes: tuple[str, str] | None = None, **inputs: Any
) -> tuple[BuildOptions, list[Pair], dict[str, Any]]:
    """Checked options, the pairs of the one source (list_file + root, or images + labels) and its
    provenance; `inputs` also carries BuildOptions fields."""
    where = {k: inputs.pop(k, None) for k in ("list_file", "root", "images", "labels")}
    opts = BuildOptions(num_classes, ignore_label, **inputs)
    opts.validate()
    pairs = resolve_pairs(**where, suffixes=suffixes)
    opts.resolve_class_names(source_folder(where["list_file"], where["root"], where["images"]))
    return opts, pairs, _source(**where)


def build_dataset(out_dir: Path, *, overwrite: bool = False, **inputs: Any) -> dict[str, Any]:
    """Build one output dir (DESIGN.md contract) from a list file or two folders; returns stats.json.

    `inputs`: num_classes, ignore_label, list_file (+ root) or images + labels (+ suffixes), and
    BuildOptions fields (palette, resize, encoded, shuffle_seed, workers, skip_bad, quiet,
    allow_lossy_labels, class_names, label_map)."""
    opts, pairs, source = _prepare(**inputs)
    opts.decode_options()  # a bad palette or label map fails before anything is written
    with atomic_dir(Path(out_dir), overwrite) as tmp:
        return write_dir(tmp, pairs, opts, source, "build")


def split_pairs(pairs: list[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Random train/val split (both keep list order); at least one pair on each side."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction {val_fraction} must be between 0 and 1", "e.g. --val-fraction 0.2")
    if len(pairs) < 2:
        raise UserError(f"cannot split {len(pairs)} pair into train and val", "list at least two pairs")
    n_val = min(len(pairs) - 1, max(1, round(val_fraction * len(pairs))))
    val_idx = set(np.random.default_rng(seed).permutation(len(pairs))[:n_val].tolist())
    return ([p for i, p in enumerate(pairs) if i not in val_idx], [p for i, p in enumerate(pairs) if i in val_idx])


def build_split(
    out_dir: Path,
    *,
    val_list: Path | None = None,
    val_fraction: float | None = None,
    split_seed: int = 0,
    overwrite: bool = False,
    **inputs: Any,
) -> dict[str, dict[str, Any]]:
    """Build `out_dir/train` and `out_dir/val`, each a full output dir; returns their stats.

    The val pairs come from `val_list` (relative to the same root) or, with one source, from a
    seeded random `val_fraction` of it. `inputs` as for build_dataset."""
    opts, train, source = _prepare(**inputs)
    if val_list is not None:
        if val_fraction is not None:
            raise UserError("--val-list and --val-fraction both given", "use one: a second list, or a split of one")
        root = inputs.get("root")
        val = read_list(Path(val_list), None if root is None else Path(root))
        split: dict[str, Any] = {"val_list": str(Path(val_list).resolve())}
    elif val_fraction is not None:
        train, val = split_pairs(train, val_fraction, split_seed)
        split = {"val_fraction": val_fraction, "split_seed": split_seed}
    else:
        raise UserError("build_split needs --val-list or --val-fraction", "give one of them")
    overlap = {p.image.resolve() for p in train} & {p.image.resolve() for p in val}
    if overlap:
        raise UserError(
            f"{len(overlap)} image(s) are in both train and val, e.g. {sorted(overlap)[0]}",
            "remove them from one of the lists",
        )
    parts = {name: (pairs, dict(source, split=name, **split)) for name, pairs in (("train", train), ("val", val))}
    return write_splits(Path(out_dir), parts, opts, overwrite)


def write_splits(
    out_dir: Path, parts: dict[str, tuple[list[Pair], dict[str, Any]]], opts: BuildOptions, overwrite: bool
) -> dict[str, dict[str, Any]]:
    """`out_dir/NAME` for each part (its pairs and provenance), all or nothing; returns their stats."""
    opts.decode_options()  # a bad palette or label map fails before anything is written
    out: dict[str, dict[str, Any]] = {}
    with atomic_dir(out_dir, overwrite) as tmp:
        for name, (pairs, source) in parts.items():
            (tmp / name).mkdir()
            out[name] = write_dir(tmp / name, pairs, opts, source, name)
    return out
