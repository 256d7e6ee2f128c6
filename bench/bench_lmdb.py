"""The data stage against Caffe's own tools, on the CamVid train list (two benchmarks).

1. Our image-LMDB builder against BVLC's `convert_imageset`.

Like for like: the same 92 PNGs, raw (not encoded) Datums, no resize, LMDB backend, one run
each per round, alternating, page cache warmed first. convert_imageset gets the images with a
dummy label 0 and a root folder with a trailing slash. Both outputs are checked to hold the
same keys order and pixel bytes. Prints `lmdb-vs-convert_imageset ratio=X.XX` (our throughput /
theirs from the best round of each, as timeit advises for timings disturbed by other load;
higher is better); it also shows the ratio of the medians, the ratio with our Python start-up
counted, and how many cores other processes kept busy meanwhile (a shared machine skews it).

2. PairedDataLayer (Python, one prefetch thread) against two native Caffe `Data` layers, on the
CamVid LMDBs built by data_prep (raw). Like for like: same LMDBs and batch size, mean
subtraction on the image in both, no augmentation (the native pair cannot augment image and
label together), records in order. Prints `paired-vs-native ratio=X.XX` (paired images/s /
native images/s, best of 2 runs each; higher is better) and, for information, the paired
layer's rate with shuffle, mirror, crop and scale on.

    .venv/bin/python bench/bench_lmdb.py [--camvid DIR] [--rounds 7] [--workers N] [--only lmdb|paired]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GLOG_minloglevel", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import result_line  # noqa: E402
from data_prep.build import BuildOptions, build_dataset, write_lmdbs  # noqa: E402
from data_prep.datum import parse_datum  # noqa: E402
from data_prep.fsutil import atomic_dir  # noqa: E402
from data_prep.sources import Pair, read_list  # noqa: E402


def write_image_lmdb(pairs: list[Pair], db_dir: Path, *, workers: int | None = None) -> dict[str, Any]:
    """Only an image LMDB at `db_dir` (pairs without labels): what convert_imageset makes, made
    by the data stage's writer, so the two tools do the same work."""
    opts = BuildOptions(1, 255, workers=workers, quiet=True)
    opts.validate()
    with atomic_dir(Path(db_dir), overwrite=False) as tmp:
        res = write_lmdbs([Pair(p.image, None, p.where) for p in pairs], tmp, None, opts, "images")
    return {"num_records": len(res["index"]), "seconds": res["seconds"], "bytes": res["bytes"]}


def find_convert_imageset() -> Path:
    """convert_imageset of the Caffe build that setup recorded (or $CAFFE_DIR, or PATH)."""
    candidates = []
    rec = REPO / ".venv" / "caffe-dir"
    dirs = ([rec.read_text().strip()] if rec.exists() else []) + [os.environ.get("CAFFE_DIR", "")]
    for d in filter(None, dirs):
        candidates += [Path(d) / sub / "tools" / "convert_imageset" for sub in ("src/build", "build")]
    found = shutil.which("convert_imageset")
    candidates += [Path(found)] if found else []
    for c in candidates:
        if c.is_file():
            return c
    sys.exit("convert_imageset not found: run 'make setup' (it records the Caffe build in .venv/caffe-dir)")


def _busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _own_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


OTHER_LOAD: list[float] = []  # cores other processes kept busy during each timed run
CPU: list[float] = []  # CPU seconds (user + sys, all our processes) of each timed run


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of fn(); records its CPU seconds and how busy the rest of the machine was."""
    b0, o0, t0 = _busy_seconds(), _own_seconds(), time.perf_counter()
    fn()
    wall, cpu = time.perf_counter() - t0, _own_seconds() - o0
    CPU.append(cpu)
    OTHER_LOAD.append(max(0.0, (_busy_seconds() - b0) - cpu) / wall)
    return wall


def run_theirs(tool: Path, root: Path, listing: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, GLOG_minloglevel="2")
    cmd = [str(tool), "--backend", "lmdb", f"{root}/", str(listing), str(out)]
    return timed(lambda: subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL))


def run_ours(pairs: list, out: Path, workers: int | None) -> float:
    shutil.rmtree(out, ignore_errors=True)
    return timed(lambda: write_image_lmdb(pairs, out, workers=workers))


def run_ours_process(list_file: Path, out: Path, workers: int | None) -> float:
    """Our builder in a fresh interpreter, so Python's and the imports' start-up count too."""
    shutil.rmtree(out, ignore_errors=True)
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from bench.bench_lmdb import write_image_lmdb; from data_prep.sources import read_list;"
        "write_image_lmdb(read_list(Path(sys.argv[2])), Path(sys.argv[3]),"
        " workers=None if sys.argv[4] == 'None' else int(sys.argv[4]))"
    )
    cmd = [sys.executable, "-c", code, str(REPO), str(list_file), str(out), str(workers)]
    return timed(lambda: subprocess.run(cmd, check=True))


def same_records(ours: Path, theirs: Path) -> int:
    """Number of records; fails unless both LMDBs hold the same keys and pixel bytes."""
    import lmdb

    with lmdb.open(str(ours), readonly=True, lock=False) as a, lmdb.open(str(theirs), readonly=True, lock=False) as b:
        with a.begin() as ta, b.begin() as tb:
            ra, rb = list(ta.cursor()), list(tb.cursor())
    assert [k for k, _ in ra] == [k.replace(b"images/", b"") for k, _ in rb], "keys differ"
    for (_, va), (_, vb) in zip(ra, rb, strict=True):
        da, db = parse_datum(va), parse_datum(vb)
        assert (da.channels, da.height, da.width, da.data) == (db.channels, db.height, db.width, db.data), (
            "pixels differ"
        )
        assert not da.encoded and not db.encoded
    return len(ra)


BATCH, BATCHES = 4, 60
NATIVE = """
layer {{ name: "data" type: "Data" top: "data" transform_param {{ {means} }}
  data_param {{ source: "{db}/images" backend: LMDB batch_size: {bs} }} }}
layer {{ name: "label" type: "Data" top: "label"
  data_param {{ source: "{db}/labels" backend: LMDB batch_size: {bs} }} }}
layer {{ name: "silence" type: "Silence" bottom: "data" bottom: "label" }}
"""
PAIRED = """
layer {{ name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "data_prep.layers" layer: "PairedDataLayer" param_str: '{params}' }} }}
layer {{ name: "silence" type: "Silence" bottom: "data" bottom: "label" }}
"""


def net_rate(proto: Path, batches: int, batch_size: int) -> float:
    """Images per second over `batches` forward passes after a warm-up."""
    import caffe

    net = caffe.Net(str(proto), caffe.TRAIN)
    for _ in range(5):
        net.forward()
    t = time.perf_counter()
    for _ in range(batches):
        net.forward()
    rate = batches * batch_size / (time.perf_counter() - t)
    layer = net.layers[0]
    if hasattr(layer, "batcher"):
        layer.batcher.close()
    return rate


def paired_bench(camvid: Path) -> None:
    """PairedDataLayer vs two native Data layers (see the module docstring)."""
    import caffe

    caffe.set_mode_cpu()
    with tempfile.TemporaryDirectory(prefix="bench_paired-") as tmp_s:
        tmp = Path(tmp_s)
        stats = build_dataset(tmp / "db", num_classes=11, ignore_label=11, list_file=camvid / "train.txt", quiet=True)
        mean = stats["mean_bgr"]
        native = tmp / "native.prototxt"
        native.write_text(NATIVE.format(db=tmp / "db", bs=BATCH, means=" ".join(f"mean_value: {m}" for m in mean)))
        base = {
            "images": str(tmp / "db" / "images"),
            "labels": str(tmp / "db" / "labels"),
            "batch_size": BATCH,
            "mean_bgr": mean,
            "shuffle": False,
            "seed": 0,
        }
        plain, augmented = tmp / "paired.prototxt", tmp / "paired_aug.prototxt"
        plain.write_text(PAIRED.format(params=json.dumps(base)))
        augmented.write_text(
            PAIRED.format(params=json.dumps(dict(base, shuffle=True, mirror=True, crop=[320, 320], scale=[0.75, 1.25])))
        )
        rounds = [(net_rate(native, BATCHES, BATCH), net_rate(plain, BATCHES, BATCH)) for _ in range(2)]
        aug = net_rate(augmented, BATCHES, BATCH)
    nat, pai = max(r[0] for r in rounds), max(r[1] for r in rounds)
    print(
        f"CamVid train LMDBs, 480x360, batch {BATCH}, {BATCHES} batches, best of 2; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    print(f"native Data x2 (mean subtraction): {nat:.1f} img/s")
    print(f"PairedDataLayer (mean subtraction): {pai:.1f} img/s")
    print(f"PairedDataLayer + shuffle, mirror, crop 320x320, scale 0.75-1.25: {aug:.1f} img/s")
    print(result_line("paired-vs-native", pai / nat))


def lmdb_bench(args: argparse.Namespace) -> None:
    """Our builder vs convert_imageset (see the module docstring)."""
    list_file = args.camvid / args.list
    tool = find_convert_imageset()
    pairs = read_list(list_file)
    n = len(pairs)
    with tempfile.TemporaryDirectory(prefix="bench_lmdb-") as tmp_s:
        tmp = Path(tmp_s)
        listing, one = tmp / "images.txt", tmp / "one.txt"
        lines = [f"{p.image.relative_to(args.camvid)} 0\n" for p in pairs]
        listing.write_text("".join(lines))
        one.write_text(lines[0])
        for p in pairs:  # warm the page cache for both
            p.image.read_bytes()
        run_theirs(tool, args.camvid, listing, tmp / "theirs")
        run_ours(pairs, tmp / "ours", args.workers)
        records = same_records(tmp / "ours", tmp / "theirs")
        theirs, ours, ours_proc, theirs1, ours1, cpu_th, cpu_us = [], [], [], [], [], [], []
        for _ in range(args.rounds):
            theirs.append(run_theirs(tool, args.camvid, listing, tmp / "theirs"))
            cpu_th.append(CPU[-1])
            ours.append(run_ours(pairs, tmp / "ours", args.workers))
            cpu_us.append(CPU[-1])
            ours_proc.append(run_ours_process(list_file, tmp / "ours_p", args.workers))
            theirs1.append(run_theirs(tool, args.camvid, one, tmp / "theirs1"))
            ours1.append(run_ours(pairs[:1], tmp / "ours1", args.workers))
    med = statistics.median
    print(f"images: {n} from {list_file} (raw Datum, no resize, LMDB); records checked equal: {records}")
    print(
        f"cores: {os.cpu_count()}, our workers: {args.workers or os.cpu_count()}, rounds: {args.rounds}; "
        f"other processes kept {med(OTHER_LOAD):.2f} cores busy (median, max {max(OTHER_LOAD):.2f})"
    )
    for name, times in (
        ("convert_imageset", theirs),
        ("data_prep builder", ours),
        ("data_prep, new process", ours_proc),
    ):
        print(f"{name}: best {min(times):.3f} s = {n / min(times):.1f} img/s, median {med(times):.3f} s")
    print(
        f"CPU per image (user+sys, all processes, median): convert_imageset {1000 * med(cpu_th) / n:.2f} ms, "
        f"data_prep {1000 * med(cpu_us) / n:.2f} ms"
    )
    print(f"start-up (1 image, median): convert_imageset {med(theirs1):.3f} s, data_prep {med(ours1):.3f} s")
    print(
        f"ours / theirs: {min(theirs) / min(ours):.2f}x (best rounds), {med(theirs) / med(ours):.2f}x (medians), "
        f"{min(theirs) / min(ours_proc):.2f}x (best, ours including Python start-up)"
    )
    print(result_line("lmdb-vs-convert_imageset", min(theirs) / min(ours)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--camvid", type=Path, default=REPO.parent / "shared" / "datasets" / "camvid")
    ap.add_argument("--list", default="train.txt")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workers", type=int, default=None, help="our decoding processes (default: cores)")
    ap.add_argument("--only", choices=("lmdb", "paired"), help="run one of the two benchmarks")
    args = ap.parse_args()
    if not (args.camvid / args.list).is_file():
        sys.exit(f"{args.camvid / args.list} not found: pass --camvid DIR (the CamVid subset)")
    if args.only != "paired":
        lmdb_bench(args)
    if args.only != "lmdb":
        paired_bench(args.camvid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
