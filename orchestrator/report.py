"""report.md and curves.png from the run directory's own files (never from logs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from orchestrator.contract import BEST_INFO, CONFUSION, RUN_FILES, RunMeta, class_labels
from orchestrator.jsonio import read_jsonl
from orchestrator.rundir import RunDir

STOP_MARKS = {"diverged": "diverged", "interrupted": "interrupted", "failed": "failed", "early_stopped": "early stop"}


def loss_is_logscale(losses: list[float]) -> bool:
    """A log axis when the positive losses span more than two decades (a divergence, or a loss
    that falls from 2 to 0.01): on a linear axis everything after the start is a flat line."""
    pos = [v for v in losses if v > 0 and math.isfinite(v)]
    return len(pos) > 1 and max(pos) / min(pos) > 100


def stop_mark(summary: dict[str, Any] | None) -> tuple[int, str] | None:
    """(iteration, words) where a run that did not simply finish stopped, for a vertical line."""
    if not summary or summary.get("iterations") is None:
        return None
    words = STOP_MARKS.get(str(summary.get("status")))
    return (int(summary["iterations"]), f"{words} at iteration {summary['iterations']}") if words else None


def plot_curves(
    metrics: list[dict[str, Any]], val: list[dict[str, Any]], out: Path, summary: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Loss, learning rate and val mIoU against iteration, in one PNG: a log loss axis when the
    loss spans decades, a line where the run diverged or stopped, a constant lr as its value,
    and words instead of an empty panel when no validation ran. Returns what it drew (titles, log
    axis, the stop line) for the tests."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    pts = [(r["iter"], r["loss"]) for r in metrics if r.get("loss") is not None and math.isfinite(r["loss"])]
    axes[0].plot([i for i, _ in pts], [v for _, v in pts], lw=0.8)
    log = loss_is_logscale([v for _, v in pts])
    if log:
        axes[0].set_yscale("log")
    mark = stop_mark(summary)
    notes = [n for n in ("log scale" if log else "", mark[1] if mark else "") if n]
    axes[0].set_title("training loss" + (f" ({', '.join(notes)})" if notes else ""))
    lrs = [(r["iter"], r["lr"]) for r in metrics if r.get("lr") is not None]
    if lrs and len({round(v, 12) for _, v in lrs}) == 1:
        axes[1].axhline(lrs[0][1], color="tab:orange", lw=1.2)
        axes[1].set_xlim(lrs[0][0], max(lrs[-1][0], lrs[0][0] + 1))
        axes[1].set_title(f"learning rate: constant {lrs[0][1]:.3g}")
        axes[1].set_ylim(0, 2 * lrs[0][1] if lrs[0][1] > 0 else 1)
        axes[1].set_yticks([0, lrs[0][1]], ["0", f"{lrs[0][1]:.3g}"])
    else:
        axes[1].plot([i for i, _ in lrs], [v for _, v in lrs], lw=0.8, color="tab:orange")
        axes[1].set_title("learning rate")
    if val:
        axes[2].plot([r["iter"] for r in val], [r.get("mean_iu") for r in val], marker="o", color="tab:green")
        axes[2].set_ylim(0, 1)
        scored = [r for r in val if r.get("mean_iu") is not None]
        if scored:
            best = max(scored, key=lambda r: r["mean_iu"])
            axes[2].annotate(
                f"best {best['mean_iu']:.3f} at {best['iter']}",
                (best["iter"], best["mean_iu"]),
                xytext=(0, -18),
                textcoords="offset points",
                ha="center",
                fontsize=9,
            )
    else:
        axes[2].text(0.5, 0.5, "no validation ran", ha="center", va="center", transform=axes[2].transAxes, fontsize=12)
        axes[2].set_xticks([])
        axes[2].set_yticks([])
    axes[2].set_title("val mean IU")
    for a in axes:
        a.grid(alpha=0.3)
        if a is not axes[2] or val:
            a.set_xlabel("iteration")
            if mark:
                a.axvline(mark[0], color="tab:red", ls="--", lw=1)
    drawn = {"titles": [a.get_title() for a in axes], "log_loss": log, "stop": mark, "no_val": not val}
    fig.tight_layout()
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
    return drawn


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def pictures_section(best_dir: Path) -> list[str]:
    """Markdown for the best validation's pictures (RUN_DIR/best/), if the run drew them."""
    info = best_dir / BEST_INFO
    if not info.exists():
        return []
    meta = json.loads(info.read_text())
    lines = [
        f"### Predictions at the best validation (iteration {meta['iteration']})",
        "",
        "image | ground truth | prediction | errors (magenta: wrong, light grey: ignored)",
        "",
    ]
    d = RUN_FILES["best"]
    for name in meta["images"]:
        lines += [f"![{name}: image, ground truth, prediction, errors]({d}/{name}_panel.png)", ""]
    if (best_dir / CONFUSION).exists():
        lines += ["", f"![confusion matrix of the best validation]({d}/{CONFUSION})"]
    return lines + [""]


def render(
    summary: dict[str, Any],
    val: list[dict[str, Any]],
    class_names: list[str] | None = None,
    pictures: list[str] | None = None,
) -> str:
    """The report as Markdown: verdict, best validation with per-class IU and pictures, findings."""
    lines = [
        f"# Run report: {summary.get('name', '')}",
        "",
        f"- status: **{summary.get('status')}** ({summary.get('stop_reason')})",
        f"- iterations: {summary.get('iterations')} of {summary.get('max_iter')}",
        f"- training time: {summary.get('train_seconds')} s",
        "",
    ]
    best = summary.get("best")
    if best:
        m = best["metrics"]
        lines += [
            f"## Best validation (iteration {best['iteration']})",
            "",
            f"pixel accuracy {_fmt(m.get('pixel_accuracy'))}, mean accuracy {_fmt(m.get('mean_accuracy'))}, "
            f"mean IU **{_fmt(m.get('mean_iu'))}**, frequency-weighted IU {_fmt(m.get('fw_iu'))}",
            "",
            f"snapshot: `{best.get('snapshot', 'none')}`",
            "",
            "| class | IU |",
            "|---|---|",
        ]
        per_class = m.get("per_class_iu") or []
        for name, iu in zip(class_labels(class_names, len(per_class)), per_class, strict=True):
            lines.append(f"| {name} | {_fmt(iu)} |")
        lines.append("")
        lines += pictures or []
    if val:
        lines += ["## Validations", "", "| iteration | mean IU | pixel acc |", "|---|---|---|"]
        lines += [f"| {r['iter']} | {_fmt(r.get('mean_iu'))} | {_fmt(r.get('pixel_accuracy'))} |" for r in val]
        lines.append("")
    findings = summary.get("findings") or []
    lines += ["## Findings", ""]
    if not findings:
        lines.append("none")
    for f in findings:
        where = f" (layer `{f['layer']}`)" if f.get("layer") else ""
        lines.append(f"- **{f['severity']}** `{f['code']}`{where}: {f['message']}  \n  fix: {f['fix']}")
    lines += ["", "![curves](curves.png)", ""]
    return "\n".join(lines)


def write_all(run: RunDir) -> None:
    """Write curves.png and report.md for the run as it stands."""
    summary = run.summary_data()
    summary.setdefault("name", run.root.name)
    metrics, val = read_jsonl(run.metrics), read_jsonl(run.val)
    names = RunMeta.read(run.meta).class_names if run.meta.exists() else None
    plot_curves(metrics, val, run.curves, summary)
    run.report.write_text(render(summary, val, names, pictures_section(run.root / RUN_FILES["best"])))
