"""`make bench`: every benchmark in one run on this machine, then one line per benchmark,
exactly `NAME ratio=X.XX` (higher is better, except sweep-concurrency and data-build-scale: time ratios,
lower is better)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = [
    ["bench/bench_overhead.py"],
    ["bench/bench_stats.py"],
    ["bench/bench_lmdb.py", "--only", "lmdb"],
    ["bench/bench_sweep.py"],
    ["bench/bench_data_scale.py"],
]
NAMES = (
    "overhead-default",
    "overhead-stats-every-iter",
    "stats-bindings-vs-numpy",
    "lmdb-vs-convert_imageset",
    "sweep-concurrency",
    "data-build-scale",
    "paired-vs-data",
)


def main() -> int:
    found: dict[str, str] = {}
    failed = []
    for script in SCRIPTS:
        print(f"== {' '.join(script)}", flush=True)
        r = subprocess.run([sys.executable, *script], cwd=REPO, capture_output=True, text=True)
        print(r.stdout + r.stderr[-2000:], flush=True)
        if r.returncode != 0:
            failed.append(script[0])
        for m in re.finditer(r"^([\w-]+) ratio=([\d.]+)$", r.stdout, re.M):
            found[m.group(1)] = m.group(0)
    print()
    for name in NAMES:
        print(found.get(name, f"{name} ratio=nan"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
