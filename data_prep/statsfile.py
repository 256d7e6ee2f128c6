"""stats.json's content for one output dir: the contract in DESIGN.md (counts, frequencies,
weights, mean, size), provenance, warnings about settings that cost classes, and the data checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from data_prep import labelmap
from data_prep.checks import build_checks
from data_prep.stats import class_stats

if TYPE_CHECKING:
    from data_prep.build import BuildOptions

INFOGAIN_FILE, INDEX_FILE = "infogain_H.binaryproto", "index.txt"


def stats_json(res: dict[str, Any], opts: BuildOptions, source: dict[str, Any]) -> dict[str, Any]:
    """stats.json content (the contract in DESIGN.md plus provenance)."""
    n, sizes = len(res["index"]), sorted(res["sizes"])
    warnings: list[str] = []
    if len(sizes) > 1:
        warnings.append(
            f"records have {len(sizes)} different sizes (e.g. {sizes[0]} and {sizes[-1]} HxW); "
            "Caffe needs one size per batch: pass --resize WxH or crop in the data layer"
        )
    stats: dict[str, Any] = {
        "format_version": 1,
        "num_records": n,
        "num_classes": opts.num_classes,
        "ignore_label": opts.ignore_label,
        "class_names": opts.class_names,
    }
    stats.update(class_stats(res["counter"]))
    absent = stats["absent_classes"]
    if absent:
        which = f"class {absent[0]}" if len(absent) == 1 else f"classes {', '.join(map(str, absent))}"
        warnings.append(f"{which} never appears in the labels: weight 0, never learnt")
    warnings += _setting_warnings(res, opts)
    stats.update(
        {
            "mean_bgr": [round(float(v), 4) for v in res["mean_bgr"]],
            "height": sizes[0][0] if len(sizes) == 1 else None,
            "width": sizes[0][1] if len(sizes) == 1 else None,
            "sizes": [list(s) for s in sizes] if len(sizes) > 1 else None,
            "encoded": opts.encoded,
            "resize": list(opts.resize) if opts.resize else None,
            "shuffle_seed": opts.shuffle_seed,
            "palette": str(opts.palette) if opts.palette else None,
            "allow_lossy_labels": opts.allow_lossy_labels,
            "label_map": None if opts.label_map is None else labelmap.load_label_map(opts.label_map).source,
            "checks": build_checks(res["facts"], opts.resize),
            "source": source,
            "options": dict(opts.extra),
            "skipped": res["skipped"],
            "warnings": warnings,
            "files": {"images": "images", "labels": "labels", "infogain_H": INFOGAIN_FILE, "index": INDEX_FILE},
            "build_seconds": round(res["seconds"], 3),
            "records_per_second": round(n / res["seconds"], 1) if res["seconds"] > 0 else None,
        }
    )
    return stats


def _setting_warnings(res: dict[str, Any], opts: BuildOptions) -> list[str]:
    """Settings the user asked for that cost them classes or correct labels."""
    out = []
    il, nc = opts.ignore_label, opts.num_classes
    if 0 <= il < nc:
        out.append(
            f"--ignore-label {il} is also class id {il} (classes are 0..{nc - 1}): its pixels are left out "
            f"of the counts, the weights and the loss, so class {il} is never learnt; if it is a real "
            f"class, use an ignore label >= --num-classes (e.g. 255)"
        )
    formats, first = res["lossy_labels"]
    if formats:
        n = sum(formats.values())
        out.append(
            f"{n} label files are lossy ({', '.join(sorted(formats))}; e.g. {first}), accepted by "
            "--allow-lossy-labels: compression may have changed class ids along edges and added "
            "classes that are not in the annotation; the counts and weights include such pixels"
        )
    return out
