"""report.md and curves.png from the run directory's own files (never from logs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.contract import BEST_INFO, CONFUSION, RUN_FILES, RunMeta, class_labels
from orchestrator.rundir import RunDir, read_jsonl


def plot_curves(metrics: list[dict[str, Any]], val: list[dict[str, Any]], out: Path) -> None:
    """Loss, learning rate and val mIoU against iteration, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    its = [r["iter"] for r in metrics if r.get("loss") is not None]
    axes[0].plot(its, [r["loss"] for r in metrics if r.get("loss") is not None], lw=0.8)
    axes[0].set_title("training loss")
    axes[1].plot([r["iter"] for r in metrics], [r.get("lr") for r in metrics], lw=0.8, color="tab:orange")
    axes[1].set_title("learning rate")
    axes[2].plot([r["iter"] for r in val], [r.get("mean_iu") for r in val], marker="o", color="tab:green")
    axes[2].set_title("val mean IU")
    axes[2].set_ylim(0, 1)
    for a in axes:
        a.set_xlabel("iteration")
        a.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)


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
        "overlay (prediction on the image) and errors (red: wrong, grey: ignored)",
        "",
    ]
    d = RUN_FILES["best"]
    for name in meta["images"]:
        lines.append(f"![{name} overlay]({d}/{name}_overlay.png) ![{name} errors]({d}/{name}_error.png)")
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
    plot_curves(metrics, val, run.curves)
    run.report.write_text(render(summary, val, names, pictures_section(run.root / RUN_FILES["best"])))
