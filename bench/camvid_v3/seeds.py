"""RULES.md's arithmetic over a recipe's seeds, from bench/camvid_v3/results/*.json (evaluate.py):
per seed, the best val mIoU (the run's own validation) and, at that snapshot, test mIoU with the
TTA val chose and without; then the means the rules compare. A seed whose chosen snapshot has no
test score yet is listed with '-' and left out of the test means (and the output says so).

    .venv/bin/python bench/camvid_v3/seeds.py v3-g0 v3-g1 v3-g2 v3-g3 [--against v3-a v3-a1 v3-a2 v3-a3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.camvid_v3.figure import chosen, load, test_by_iter

TTA = "flip,scales=0.75,1,1.25"  # the TTA val chose for A (README, recipe v3)


def seed_row(name: str) -> dict[str, Any]:
    """One seed: its best validation and the test scores of that snapshot (None when unscored)."""
    r = load(name)
    best = chosen(r)
    it = best["iter"]
    tta, plain = test_by_iter(r, TTA).get(it), test_by_iter(r).get(it)
    return {
        "name": name,
        "iter": it,
        "val": best["val_miou"],
        "test_tta": tta["miou"] if tta else None,
        "test": plain["miou"] if plain else None,
    }


def table(names: list[str]) -> list[dict[str, Any]]:
    """The rows, printed, then the means over the seeds that have each number."""
    rows = [seed_row(n) for n in names]

    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    print("| seed run | best val (iter) | test, TTA | test, no TTA |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['val']:.4f} ({r['iter']}) | {cell(r['test_tta'])} | {cell(r['test'])} |")
    for key, label in (("val", "best val"), ("test_tta", "test with TTA"), ("test", "test without TTA")):
        have = [r[key] for r in rows if r[key] is not None]
        missing = "" if len(have) == len(rows) else f" (only {len(have)} of {len(rows)} seeds scored)"
        print(f"mean {label}: {mean(have):.5f}{missing}" if have else f"mean {label}: none scored")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="result names (bench/camvid_v3/results/NAME.json)")
    ap.add_argument("--against", nargs="*", default=[], help="the recipe it would replace, seed by seed")
    a = ap.parse_args()
    rows = table(a.runs)
    if a.against:
        print()
        base = table(a.against)
        gap = mean(r["val"] for r in rows) - mean(r["val"] for r in base)
        decided = "" if len(rows) >= 4 else f" (only {len(rows)} seeds: RULES.md decides nothing under four)"
        print(f"best val, mean difference: {gap:+.5f}{decided}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
