"""`orchestrate data build|synth`: argument parsing and printing only; the work is in build/synth."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from common.errors import EXIT_BAD_INPUT, EXIT_OK, UserError
from data_prep import sizes
from data_prep.labelmap import PRESETS, load_label_map
from data_prep.layouts import LAYOUTS

BUILD_HELP = """Build Caffe LMDBs from raw images and per-pixel labels.

Output (--out DIR): DIR/images/ and DIR/labels/ (LMDBs of Caffe Datum, same keys in the same
order), DIR/stats.json (class counts, frequencies, median-frequency and inverse-frequency
weights, mean_bgr, size, source, options), DIR/infogain_H.binaryproto (diag of the
median-frequency weights, for InfogainLoss) and DIR/index.txt (key, image, label and a digest of
the pixels per record). With --val-list, --val-fraction or --val-split the same layout is written
twice: DIR/train/ and DIR/val/. Public datasets in their own layout: --layout cityscapes|ade20k|voc
--root DIR (their label ids mapped to training ids). Before training, the data checks are printed:
images all ignore, absent classes, extreme class weights, aspect changed by --resize, train/val
duplicates.

Refused unless asked for: lossy label files (JPEG, lossy WebP, told by content, not by name),
because compression invents class ids along edges (--allow-lossy-labels accepts them, with a
warning in stats.json). Warned: an --ignore-label inside 0..N-1 (that class is never learnt).
A disk that fills up stops the build with exit 2 and nothing left behind; folders that killed
builds of the same --out left behind are removed by the next build.
"""


def parse_size(text: str) -> tuple[int, int]:
    """argparse type of --resize: '480x360' -> (480, 360), width x height (data_prep.sizes)."""
    try:
        return sizes.parse_size(text, "WxH")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _help(parser: argparse.ArgumentParser) -> int:
    """`data` without a subcommand: its help, and exit 2."""
    parser.print_help()
    return EXIT_BAD_INPUT


def _layout_arguments(b: argparse.ArgumentParser) -> None:
    """`data build`'s public-dataset layouts and label-id options."""
    lay = b.add_argument_group("a public dataset in its own layout (with --root)")
    lay.add_argument(
        "--layout",
        choices=LAYOUTS,
        help="cityscapes (leftImg8bit/ + gtFine/ labelIds), ade20k (images/ + annotations/), "
        "voc (ImageSets/Segmentation lists, JPEGImages/, SegmentationClass/); fills in pairing, label map, "
        "classes, ignore label and class names",
    )
    lay.add_argument("--split", default="train", help="the layout's split to build (default train)")
    lay.add_argument("--val-split", help="also build this split as DIR/val (the first goes to DIR/train)")
    ids = b.add_argument_group("label ids")
    ids.add_argument(
        "--label-map",
        help=f"stored label value -> class id before anything is counted: a preset ({', '.join(PRESETS)}) or a "
        "file of 'SRC DST' lines (or a JSON object); a value it does not cover is an error",
    )
    ids.add_argument("--class-names", type=Path, help="a file of class names, one per line, in class-id order")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `data build` and `data synth` to the top-level subparsers."""
    data = sub.add_parser(
        "data",
        help="build LMDBs and class weights; make synthetic data",
        description="Data stage: raw images -> LMDBs + stats.json + infogain_H.",
    )
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: _help(data))

    b = dsub.add_parser(
        "build",
        help="images + labels -> LMDBs, stats.json, infogain_H.binaryproto",
        description=BUILD_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = b.add_argument_group("input (a list file, or two folders matched by file stem)")
    src.add_argument("--list", type=Path, help="list file of 'image label' lines (CamVid format)")
    src.add_argument("--root", type=Path, help="folder the list's paths are relative to (default: the list's folder)")
    src.add_argument("--images", type=Path, help="folder of images (with --labels)")
    src.add_argument("--labels", type=Path, help="folder of label images, matched to --images by stem")
    src.add_argument("--palette", type=Path, help="for RGB colour-coded labels: 'name id R G B' per line")
    src.add_argument(
        "--image-suffix",
        help="with --images/--labels: walk the folders recursively, images are the files ending in this "
        "(e.g. _leftImg8bit.png); each label is at the same relative path ending in --label-suffix",
    )
    src.add_argument("--label-suffix", help="how label names end, replacing --image-suffix (e.g. _gtFine_labelIds.png)")
    _layout_arguments(b)
    b.add_argument("--out", type=Path, required=True, help="output folder (must not exist unless --overwrite)")
    b.add_argument(
        "--num-classes", type=int, help="classes (CamVid 11, VOC 21); default: dataset.json next to the list"
    )
    b.add_argument("--ignore-label", type=int, help="label to ignore (CamVid 11, VOC 255); default: dataset.json")
    split = b.add_argument_group("train/val split (writes DIR/train and DIR/val)")
    split.add_argument("--val-list", type=Path, help="a second list for val (same --root)")
    split.add_argument("--val-fraction", type=float, help="split this fraction of the one list off as val")
    split.add_argument("--split-seed", type=int, default=0, help="seed of that split (default 0)")
    b.add_argument("--resize", type=parse_size, metavar="WxH", help="resize: images area/linear, labels nearest")
    b.add_argument("--encoded", action="store_true", help="store PNG bytes (Datum.encoded) instead of raw pixels")
    b.add_argument("--shuffle-seed", type=int, help="shuffle the records (one permutation for both LMDBs)")
    b.add_argument("--workers", type=int, default=None, help=f"decoding processes (default: cores = {os.cpu_count()})")
    b.add_argument(
        "--skip-bad", action="store_true", help="leave out bad pairs (listed in stats.json) instead of failing"
    )
    b.add_argument(
        "--allow-lossy-labels",
        action="store_true",
        help="accept JPEG / lossy WebP label files (refused by default: compression invents class ids)",
    )
    b.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=build_handler)

    s = dsub.add_parser(
        "synth",
        help="write a small synthetic, imbalanced segmentation dataset",
        description="Shapes on noisy backgrounds, 5 classes (one under 2 % of pixels), "
        "ignore label 255: images/, labels/, train.txt, val.txt, dataset.json.",
    )
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--train", type=int, default=200, help="train images (default 200)")
    s.add_argument("--val", type=int, default=50, help="val images (default 50)")
    s.add_argument("--size", default="64x64", metavar="HxW", help="image size (default 64x64)")
    s.add_argument("--no-ignore-ring", action="store_true", help="no ring of ignore pixels around shapes")
    s.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    s.set_defaults(func=synth_handler)


def _read_dataset_json(path: Path) -> dict[str, Any]:
    """dataset.json's content, checked: a JSON object whose num_classes/ignore_label are integers."""
    from data_prep.fsutil import UTF8_FIX, read_utf8

    also = "; or pass --num-classes N --ignore-label L instead"
    text = read_utf8(path, "dataset file", UTF8_FIX + also)
    fix = 'write it as {"num_classes": N, "ignore_label": L, ...}' + also
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}", fix) from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} must be a JSON object, not {type(meta).__name__}", fix)
    for key in ("num_classes", "ignore_label"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise UserError(f'{path}: "{key}" is {value!r}, not an integer', fix)
    return meta


def _dataset_defaults(args: argparse.Namespace) -> tuple[int, int]:
    """--num-classes/--ignore-label, else from a dataset.json beside the data (what synth writes)."""
    from data_prep.build import source_folder

    near = source_folder(args.list, args.root, args.images)
    meta: dict[str, Any] = {}
    needed = args.num_classes is None or args.ignore_label is None
    if needed and near is not None and (Path(near) / "dataset.json").is_file():
        meta = _read_dataset_json(Path(near) / "dataset.json")
    if args.label_map in PRESETS:  # a preset knows its dataset's classes
        preset = load_label_map(args.label_map)
        meta = {"num_classes": preset.num_classes, "ignore_label": preset.ignore_label, **meta}
    nc = args.num_classes if args.num_classes is not None else meta.get("num_classes")
    il = args.ignore_label if args.ignore_label is not None else meta.get("ignore_label")
    if nc is None or il is None:
        raise UserError(
            "--num-classes and --ignore-label are needed (no dataset.json next to the data)",
            "e.g. --num-classes 11 --ignore-label 11 for CamVid, --num-classes 21 --ignore-label 255 for VOC",
        )
    return int(nc), int(il)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """BuildOptions fields from the arguments (the same for every way of naming the pairs)."""
    return dict(
        overwrite=args.overwrite,
        palette=args.palette,
        resize=args.resize,
        encoded=args.encoded,
        shuffle_seed=args.shuffle_seed,
        workers=args.workers,
        skip_bad=args.skip_bad,
        quiet=args.quiet,
        allow_lossy_labels=args.allow_lossy_labels,
        label_map=args.label_map,
        class_names=_class_names(args),
        extra={
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("func", "command", "data_command")
        },
    )


def _class_names(args: argparse.Namespace) -> list[str] | None:
    """--class-names, else a label-map preset's names (cityscapes), else None (the build looks further)."""
    from data_prep.labelmap import read_class_names

    if args.class_names is not None:
        return list(read_class_names(args.class_names))
    names = load_label_map(args.label_map).class_names if args.label_map in PRESETS else None
    return None if names is None else list(names)


def _suffixes(args: argparse.Namespace) -> tuple[str, str] | None:
    if args.image_suffix is None and args.label_suffix is None:
        return None
    if not (args.image_suffix and args.label_suffix and args.images and args.labels):
        raise UserError(
            "--image-suffix and --label-suffix go together, with --images and --labels",
            "e.g. --images leftImg8bit/train --labels gtFine/train --image-suffix _leftImg8bit.png "
            "--label-suffix _gtFine_labelIds.png",
        )
    return args.image_suffix, args.label_suffix


def build_handler(args: argparse.Namespace) -> int:
    """Run `data build`; print the result, the data checks, warnings and throughput."""
    from data_prep.build import build_dataset, build_split

    options = _options(args)
    if args.layout is not None:
        from data_prep.build_layout import build_layout

        if args.list or args.images or args.labels or args.root is None:
            raise UserError(
                "--layout takes --root (the dataset's folder), not --list/--images/--labels",
                f"e.g. --layout {args.layout} --root /data/{args.layout} --split train --val-split val",
            )
        names = ("layout", "root", "split", "val_split", "num_classes", "ignore_label")
        res = build_layout(args.out, **{k: getattr(args, k) for k in names}, **options)
        results = res if args.val_split is not None else {"": res}
    else:
        num_classes, ignore_label = _dataset_defaults(args)
        where = dict(list_file=args.list, root=args.root, images=args.images, labels=args.labels)
        common = dict(num_classes=num_classes, ignore_label=ignore_label, suffixes=_suffixes(args), **where, **options)
        if args.val_list is not None or args.val_fraction is not None:
            results = build_split(
                args.out, val_list=args.val_list, val_fraction=args.val_fraction, split_seed=args.split_seed, **common
            )
        else:
            results = {"": build_dataset(args.out, **common)}
    for name, stats in results.items():
        _report(args.out / name if name else args.out, stats)
    _report_checks(args.out, results)
    return EXIT_OK


def _report_checks(out: Path, results: dict[str, dict[str, Any]]) -> None:
    """The data checks (data_prep.checks) on the console, as `orchestrate check` shows them."""
    from data_prep.checks import data_findings

    if "train" in results and "val" in results:
        found = data_findings(results["train"], results["val"], train_dir=out / "train", val_dir=out / "val")
    else:
        found = data_findings(next(iter(results.values())))
    for f in found:
        print(f"{f.severity}: {f.code}: {f.message}\n  fix: {f.fix}", file=sys.stderr)


def _report(out: Path, stats: dict[str, Any]) -> None:
    for bad in stats["skipped"]:
        print(f"skipped: {bad['where']}: {bad['file']}: {bad['reason']}", file=sys.stderr)
    for w in stats["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    size = f"{stats['width']}x{stats['height']}" if stats["height"] else "mixed sizes"
    weights = ", ".join(f"{w:.3g}" for w in stats["class_weights"]["median_frequency"])
    print(
        f"wrote {out}: {stats['num_records']} records ({size}), {stats['num_classes']} classes, "
        f"{len(stats['skipped'])} skipped"
    )
    print(f"  median-frequency weights: [{weights}]")
    print(f"  throughput: {stats['records_per_second']} pairs/s ({stats['build_seconds']} s)")


def synth_handler(args: argparse.Namespace) -> int:
    """Run `data synth`."""
    import time

    from data_prep.synth import make_synthetic

    t = time.perf_counter()
    meta = make_synthetic(
        args.out,
        seed=args.seed,
        train=args.train,
        val=args.val,
        size=args.size,
        ignore_ring=not args.no_ignore_ring,
        overwrite=args.overwrite,
    )
    share = ", ".join(f"{n} {s:.1%}" for n, s in zip(meta["class_names"], meta["train_class_pixel_share"], strict=True))
    print(
        f"wrote {args.out}: {meta['train']} train + {meta['val']} val images {meta['size'][0]}x{meta['size'][1]} "
        f"(HxW), {meta['num_classes']} classes, ignore {meta['ignore_label']} in {time.perf_counter() - t:.2f} s"
    )
    print(f"  train pixel share: {share}")
    return EXIT_OK
