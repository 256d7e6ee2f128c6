"""The alternatives table of the CamVid recipe v2: one row per sweep trial (or run directory),
with the trial's overrides, val mIoU at every validation, the best and the loop's seconds.

    .venv/bin/python bench/camvid_v2/table.py /work/runs/sweeps/a [/work/runs/sweeps/b ...] [RUN_DIR ...]

Val mIoU at an iteration is deterministic (same seed, same numbers), whatever else the
machine runs; seconds are not: they count only from runs on a quiet machine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.camvid_v2.curve import validation_times  # noqa: E402
from orchestrator.jsonio import read_jsonl  # noqa: E402


def _section(tree: dict[str, Any], dotted: str) -> Any:
    for k in dotted.split("."):
        tree = tree.get(k, {}) if isinstance(tree, dict) else {}
    return tree


def label(overrides: dict[str, Any], base: dict[str, Any], trial: dict[str, Any]) -> str:
    """'skips=2 class_weighting=sqrt_median_frequency': a trial's overrides; a whole section
    given as a mapping is shown as the keys where the trial's resolved section differs from
    the base experiment's."""
    from orchestrator.run.resume_policy import flatten

    parts = []
    for key, value in overrides.items():
        if not isinstance(value, dict):
            parts.append(f"{key.split('.')[-1]}={value}")
            continue
        ref, got = flatten(_section(base, key)), flatten(_section(trial, key))
        parts += [f"{k}={v}" for k, v in got.items() if ref.get(k) != v] or [f"{key}=base"]
    return " ".join(parts)


def _resolved(path: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """An experiment file as the schema resolves it (defaults filled in)."""
    from orchestrator.config import experiment as cfgmod
    from orchestrator.config.schema import to_dict

    return to_dict(cfgmod.from_dict(yaml.safe_load(path.read_text()), list(overrides)))


def runs_of(folder: Path) -> list[tuple[str, Path]]:
    """(label, run dir) of each trial of a sweep folder, or the folder itself as a run."""
    sweep = folder / "sweep.yaml"
    if not sweep.is_file():
        return [(folder.name, folder)]
    doc = yaml.safe_load(sweep.read_text())
    base = _resolved(REPO / doc["sweep"]["base"], doc["sweep"].get("set", []))
    return [
        (label(t["overrides"], base, _resolved(folder / "trials" / f"{t['id']}.yaml")), folder / "trials" / t["id"])
        for t in doc["trials"]
    ]


def row(label: str, run: Path) -> dict[str, Any] | None:
    if not (run / "val.jsonl").is_file():
        return None
    points = validation_times(run)
    if not points:
        return None
    best = max(points, key=lambda p: p[2])
    iters = len(read_jsonl(run / "metrics.jsonl"))
    return {
        "label": label,
        "curve": {it: m for it, _, m in points},
        "best": best,
        "seconds": points[-1][1],
        "iters": iters,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", type=Path, nargs="+")
    a = ap.parse_args()
    rows = [r for f in a.folders for label, run in runs_of(f) if (r := row(label, run)) is not None]
    if not rows:
        print("no validations found", file=sys.stderr)
        return 2
    cols = sorted({it for r in rows for it in r["curve"]})
    print("| trial | " + " | ".join(f"it {c}" for c in cols) + " | best (iter) | iters | loop s |")
    print("|---" * (len(cols) + 4) + "|")
    for r in rows:
        cells = [f"{r['curve'][c]:.3f}" if c in r["curve"] else "" for c in cols]
        print(
            f"| {r['label']} | "
            + " | ".join(cells)
            + f" | {r['best'][2]:.3f} ({r['best'][0]}) | {r['iters']} | {r['seconds']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
