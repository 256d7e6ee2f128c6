"""The data stage at Cityscapes scale (2975 train images of 2048x1024): two benchmarks.

1. `orchestrate data build` on 100, 1000 and 3000 synthetic 2048x1024 pairs (made here: smooth
   colour fields with shapes, and their class ids, so PNG sizes are realistic), raw and
   `--encoded`, each build a process of its own: seconds per image, peak RSS (the largest process
   of the build: the parent or a decoding worker), LMDB bytes. The sources are 100 distinct pairs,
   hard-linked to more names (the build sees distinct paths; decoding work is the same).
   Prints `data-build-scale ratio=X`: per-image time at 3000 / at 100, raw (target <= 1.10: no
   slow-down with size) and says whether peak RSS stayed flat.
2. The paired layer on those records (the raw 100-image LMDBs) with a 512x512 crop against the
   native Data layers with `crop_size: 512` on the same records (two layers, image and label;
   mean subtraction on the image): images/s, best of 2. Prints `paired-vs-data ratio=X`
   (paired / native; target >= 1.0).

    .venv/bin/python bench/bench_data_scale.py [--counts 100,1000,3000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_lmdb import PAIRED, net_rate  # noqa: E402
from bench.common import result_line  # noqa: E402

H, W, DISTINCT, CLASSES = 1024, 2048, 100, 19
NATIVE_CROP = """
layer {{ name: "data" type: "Data" top: "data" transform_param {{ crop_size: {crop} {means} }}
  data_param {{ source: "{db}/images" backend: LMDB batch_size: {bs} }} }}
layer {{ name: "label" type: "Data" top: "label" transform_param {{ crop_size: {crop} }}
  data_param {{ source: "{db}/labels" backend: LMDB batch_size: {bs} }} }}
layer {{ name: "silence" type: "Silence" bottom: "data" bottom: "label" }}
"""


def make_sources(folder: Path, count: int) -> Path:
    """`count` pairs (DISTINCT distinct ones hard-linked under more names) and a list file."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    (folder / "lab").mkdir(exist_ok=True)
    for i in range(min(DISTINCT, count)):
        if (folder / "lab" / f"{i:05d}.png").exists():
            continue
        yy, xx = np.mgrid[0:H, 0:W]
        img = np.stack([(xx * (i + 1) // 16) % 256, (yy * 3 // 8) % 256, ((xx + yy) // 12) % 256], -1).astype(np.uint8)
        lab = ((xx // 256 + yy // 256 * 8 + i) % CLASSES).astype(np.uint8)
        for _ in range(6):
            cy, cx, r, c = rng.integers(0, H), rng.integers(0, W), rng.integers(40, 200), rng.integers(0, CLASSES)
            cv2.circle(img, (int(cx), int(cy)), int(r), tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
            cv2.circle(lab, (int(cx), int(cy)), int(r), (int(c),), -1)
        cv2.imwrite(str(folder / "img" / f"{i:05d}.png"), img)
        cv2.imwrite(str(folder / "lab" / f"{i:05d}.png"), lab)
    for i in range(DISTINCT, count):
        for sub in ("img", "lab"):
            dst = folder / sub / f"{i:05d}.png"
            if not dst.exists():
                os.link(folder / sub / f"{i % DISTINCT:05d}.png", dst)
    listing = folder / f"list{count}.txt"
    listing.write_text("".join(f"img/{i:05d}.png lab/{i:05d}.png\n" for i in range(count)))
    return listing


def build(listing: Path, out: Path, encoded: bool) -> dict[str, float]:
    """One `data build` in its own process: seconds per image (the build's own clock, stats.json's
    build_seconds), peak RSS (MiB), LMDB bytes, wall seconds with start-up."""
    cmd = [sys.executable, "-m", "orchestrator.cli", "data", "build", "--list", str(listing)]
    cmd += ["--num-classes", str(CLASSES), "--ignore-label", "255", "--out", str(out), "--quiet", "--overwrite"]
    code = (
        "import resource, subprocess, sys, json; r = subprocess.run(sys.argv[1:]); "
        "print(json.dumps([r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *cmd, *(["--encoded"] if encoded else [])],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t
    rc, rss_kib = json.loads(proc.stdout.strip().splitlines()[-1])
    if rc != 0:
        raise SystemExit(f"data build failed: {proc.stderr[-2000:]}")
    stats = json.loads((out / "stats.json").read_text())
    n = int(stats["num_records"])
    size = sum(f.stat().st_size for f in out.rglob("*.mdb"))
    # the build's own clock (decoding, writing, the last commit), without the process start-up
    return {"per_image": stats["build_seconds"] / n, "rss_mib": rss_kib / 1024, "bytes": size, "wall": seconds}


def scale_bench(work: Path, counts: list[int]) -> None:
    rows: dict[tuple[int, bool], dict[str, float]] = {}
    for count in counts:
        listing = make_sources(work / "src", count)
        for encoded in (False, True):
            out = work / f"db{count}{'e' if encoded else ''}"
            rows[count, encoded] = r = build(listing, out, encoded)
            print(
                f"{count:5d} images {'encoded' if encoded else 'raw    '}: {r['per_image'] * 1000:7.1f} ms/image, "
                f"peak RSS {r['rss_mib']:6.0f} MiB, LMDBs {r['bytes'] / 2**30:6.2f} GiB",
                flush=True,
            )
            if count != counts[0] or encoded:
                shutil.rmtree(out)  # keep the disk free; the first raw build feeds the layer benchmark
    lo, hi = counts[0], counts[-1]
    for encoded in (False, True):
        a, b = rows[lo, encoded], rows[hi, encoded]
        rss = [rows[c, encoded]["rss_mib"] for c in counts]
        # flat: the last step (e.g. 1000 -> 3000) adds under 10 %: what remains is the bounded in-flight window
        flat = len(rss) < 2 or rss[-1] <= 1.10 * rss[-2] + 16
        kind = "encoded" if encoded else "raw"
        print(
            f"{kind}: per-image time at {hi} / at {lo} = {b['per_image'] / a['per_image']:.3f}; peak RSS "
            f"{' / '.join(f'{r:.0f}' for r in rss)} MiB at {' / '.join(map(str, counts))} "
            f"({'flat' if flat else 'GROWS'})"
        )
    print(result_line("data-build-scale", rows[hi, False]["per_image"] / rows[lo, False]["per_image"]))


def layer_bench(db: Path, crop: int = 512, batch: int = 4, batches: int = 30) -> None:
    """The paired layer with a crop against the native Data layers with crop_size."""
    import caffe

    caffe.set_mode_cpu()
    mean = json.loads((db / "stats.json").read_text())["mean_bgr"]
    with tempfile.TemporaryDirectory(prefix="bench_scale-") as tmp_s:
        tmp = Path(tmp_s)
        native, paired = tmp / "native.prototxt", tmp / "paired.prototxt"
        means = " ".join(f"mean_value: {m}" for m in mean)
        native.write_text(NATIVE_CROP.format(db=db, bs=batch, crop=crop, means=means))
        params = {
            "images": str(db / "images"),
            "labels": str(db / "labels"),
            "batch_size": batch,
            "mean_bgr": mean,
            "crop": [crop, crop],
            "shuffle": False,
            "seed": 0,
        }
        paired.write_text(PAIRED.format(params=json.dumps(params)))
        rounds = [(net_rate(native, batches, batch), net_rate(paired, batches, batch)) for _ in range(2)]
    nat, pai = max(r[0] for r in rounds), max(r[1] for r in rounds)
    print(f"2048x1024 records, crop {crop}x{crop}, batch {batch}, {batches} batches, best of 2")
    print(f"native Data x2 (crop_size {crop}, mean subtraction): {nat:.1f} img/s")
    print(f"PairedDataLayer (crop {crop}x{crop}, mean subtraction): {pai:.1f} img/s")
    print(result_line("paired-vs-data", pai / nat))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", default="100,1000,3000", help="image counts, smallest first")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temp folder, removed)")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_data_scale-"))
    try:
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
        scale_bench(work, counts)
        layer_bench(work / f"db{counts[0]}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
