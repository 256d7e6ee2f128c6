"""The README's figures and tables for recipe v3 from bench/camvid_v3/results/*.json (written by
evaluate.py): val and test mIoU against training minutes for each run (docs/camvid_v3_curves.png),
the side-by-side table, per-class IU (val and test) of each run's snapshot chosen by val, and the
test-time augmentation rows.

    .venv/bin/python bench/camvid_v3/figure.py [--runs v3-a v3-b segnet-basic-segnet ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "camvid_v3" / "results"
RECIPE = REPO / "experiments" / "camvid-v3.yaml"  # every run scored here is on its data, so its class names


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def test_by_iter(r: dict[str, Any], tta: str | None = None, split: str = "test") -> dict[int, dict[str, Any]]:
    """The run's own snapshots scored on `split` (not averaged with other runs: `--ensemble` rows)."""
    return {s["iter"]: s for s in r["scores"] if s["split"] == split and s["tta"] == tta and not s.get("ensemble")}


def chosen(r: dict[str, Any]) -> dict[str, Any]:
    """The validation with the best val mIoU (the snapshot a user of the recipe would keep)."""
    return max(r["val_curve"], key=lambda v: v["val_miou"])


def class_names() -> list[str]:
    sys.path.insert(0, str(REPO))
    from orchestrator.config.experiment import load_experiment

    names = load_experiment(RECIPE).data.class_names
    assert names, f"{RECIPE} names its classes (data.build.class_names)"
    return names


def curves(runs: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=100)
    for i, name in enumerate(runs):
        r, color = load(name), f"C{i}"
        mins = {v["iter"]: v["minutes"] for v in r["val_curve"]}
        ax.plot(
            [v["minutes"] for v in r["val_curve"]],
            [v["val_miou"] for v in r["val_curve"]],
            "o-",
            color=color,
            ms=3,
            label=f"{name} val",
        )
        test = test_by_iter(r)
        pts = sorted((mins[it], s["miou"]) for it, s in test.items() if it in mins)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "s--", color=color, ms=3, label=f"{name} test")
    ax.axhline(0.55, color="gray", ls=":", lw=1, label="test target 0.55")
    ax.set_xlabel("training minutes (one core each, two runs at a time)")
    ax.set_ylabel("mIoU")
    ax.set_ylim(0, 0.75)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(out)


def tables(runs: list[str]) -> str:
    lines = ["| run | iteration | minutes | val mIoU | test mIoU |", "|---|---|---|---|---|"]
    for name in runs:
        r = load(name)
        test = test_by_iter(r)
        for v in r["val_curve"]:
            t = test.get(v["iter"])
            lines.append(
                f"| {name} | {v['iter']} | {v['minutes']:.1f} | {v['val_miou']:.3f} | "
                + (f"{t['miou']:.3f} |" if t else "- |")
            )
    lines += [
        "",
        "| class | " + " | ".join(f"{n} val | {n} test" for n in runs) + " |",
        "|---|" + "---|---|" * len(runs),
    ]
    picks = [(load(n), chosen(load(n))) for n in runs]
    for c, cls in enumerate(class_names()):
        cells = []
        for r, v in picks:
            t = test_by_iter(r).get(v["iter"])
            cells += [f"{r['val_per_class_iu'][str(v['iter'])][c]:.3f}", f"{t['per_class_iu'][c]:.3f}" if t else "-"]
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    lines += ["", "| run | iteration | split | tta | mIoU | predict seconds |", "|---|---|---|---|---|---|"]
    for name in runs:
        for s in load(name)["scores"]:
            if s["tta"] or s["iter"] == chosen(load(name))["iter"]:
                lines.append(
                    f"| {name}{' + ' + ', '.join(s['ensemble']) if s.get('ensemble') else ''} | {s['iter']} | "
                    f"{s['split']} | {s['tta'] or 'off'} | {s['miou']:.4f} | {s['seconds']} |"
                )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=sorted(p.stem for p in RESULTS.glob("*.json")))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "camvid_v3_curves.png")
    a = ap.parse_args()
    if not a.runs:
        print(f"no results in {RESULTS}: run bench/camvid_v3/evaluate.py first", file=sys.stderr)
        return 2
    curves(a.runs, a.out)
    print(tables(a.runs))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
