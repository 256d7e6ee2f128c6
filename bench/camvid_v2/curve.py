"""Val mIoU against wall-clock training time for a finished run (the README's curve).

The time of validation k is the run's own step seconds (metrics.jsonl) up to its iteration
plus the seconds of validations 1..k (val.jsonl): the loop's time without the hooks' small
overheads (statistics, snapshots, pictures); the total is printed beside the run's
`train_seconds` (summary.json), which includes them.

    .venv/bin/python bench/camvid_v2/curve.py RUN_DIR [--out docs/camvid_full_miou_time.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from orchestrator.jsonio import read_jsonl  # noqa: E402


def validation_times(run: Path) -> list[tuple[int, float, float]]:
    """(iteration, seconds since the start, mIoU) for each validation of the run."""
    steps = {r["iter"]: float(r["seconds"]) for r in read_jsonl(run / "metrics.jsonl")}
    out, val_seconds = [], 0.0
    for v in read_jsonl(run / "val.jsonl"):
        val_seconds += float(v["seconds"])
        train = sum(s for it, s in steps.items() if it <= v["iter"])
        out.append((int(v["iter"]), train + val_seconds, float(v["mean_iu"])))
    return out


def plot(points: list[tuple[int, float, float]], out: Path, target: float, budget_min: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [t / 60 for _, t, _ in points]
    miou = [m for _, _, m in points]
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
    ax.plot(minutes, miou, "o-", color="tab:blue", label="val mIoU")
    best = max(range(len(points)), key=lambda i: miou[i])
    ax.annotate(
        f"best {miou[best]:.3f}\n(iter {points[best][0]})",
        (minutes[best], miou[best]),
        textcoords="offset points",
        xytext=(-60, -30),
        fontsize=8,
        arrowprops=dict(arrowstyle="->", lw=0.8),
    )
    ax.axhline(target, color="tab:green", ls="--", lw=1, label=f"target {target}")
    ax.axvline(budget_min, color="tab:red", ls=":", lw=1, label=f"{budget_min:.0f} min")
    ax.set_xlabel("training wall-clock time (min, 2-core CPU)")
    ax.set_ylabel("val mIoU (101 images, 240x180)")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, max(0.7, max(miou) + 0.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "camvid_full_miou_time.png")
    ap.add_argument("--target", type=float, default=0.58)
    ap.add_argument("--budget-min", type=float, default=60.0)
    a = ap.parse_args()
    points = validation_times(a.run_dir)
    if not points:
        print(f"{a.run_dir}: no validations in val.jsonl", file=sys.stderr)
        return 2
    summary = json.loads((a.run_dir / "summary.json").read_text()) if (a.run_dir / "summary.json").is_file() else {}
    print("| iteration | minutes | val mIoU |\n|---|---|---|")
    for it, t, m in points:
        print(f"| {it} | {t / 60:.1f} | {m:.3f} |")
    print(f"loop seconds {points[-1][1]:.0f}, train_seconds (summary.json) {summary.get('train_seconds')}")
    plot(points, a.out, a.target, a.budget_min, f"{summary.get('name', a.run_dir.name)}: val mIoU vs time")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
