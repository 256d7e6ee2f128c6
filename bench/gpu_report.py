"""The GPU check's results in one place: results.json (every number) and summary.md, a draft of
bench/RESULTS-gpu.md (device, date, command, one line per check against its target).

usage: gpu_report.py WORK OUT   (WORK: the JSON and text files the steps of gpu_check.sh wrote)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any


def load(work: Path, name: str) -> dict[str, Any] | None:
    """A step's JSON (None when the step did not get that far)."""
    p = work / name
    try:
        return json.loads(p.read_text()) if p.exists() else None
    except json.JSONDecodeError:
        return None


def text(work: Path, name: str) -> str:
    """A step's text output ('' when absent)."""
    p = work / name
    return p.read_text(errors="replace") if p.exists() else ""


def fmt(v: Any, spec: str = ".3f") -> str:
    """A number, or n/a for a value a failed step left out."""
    return "n/a" if v is None else format(v, spec)


def numerics_lines(num: dict[str, Any] | None) -> list[str]:
    """One line per net: worst errors against the tolerances."""
    if not num:
        return ["- numerics: no result"]
    out = []
    for n in num["nets"]:
        out.append(
            f"- numerics {n['net']} {tuple(n['input'])}: outputs max rel. error {n['max_rel_err_data']:.1e} "
            f"(tolerance {num['tol_data']:.0e}), gradients {n['max_rel_err_diff']:.1e} (tolerance "
            f"{num['tol_diff']:.0e}); loss CPU {n['loss_cpu']:.5f} vs {n['device']} {n['loss_gpu']:.5f}: "
            f"**{'PASS' if n['pass'] else 'FAIL'}**"
        )
    return out


def run_lines(demo: dict[str, Any] | None, res: dict[str, Any] | None) -> list[str]:
    """The demo's outcome and the killed-and-resumed run's."""
    out = []
    if demo:
        out.append(
            f"- demo on {demo['device']}: {demo['status']} ({demo.get('stop_reason')}) after "
            f"{demo['iterations']} iterations in {demo['seconds']} s; val mIoU best {fmt(demo['best_mean_iu'])} "
            f"(iteration {demo['best_iteration']}), last {fmt(demo['last_mean_iu'])}: "
            f"**{'PASS' if demo['pass'] else 'FAIL'}**"
        )
    if res:
        out.append(
            f"- kill -9 at iteration {res['killed_at_iteration']} (snapshots {res['snapshots_at_kill']}), "
            f"resumed from {res['resumed_from']}: {res['status']} after {res['iterations']} iterations, "
            f"each logged once: {res['iterations_logged_once']}: **{'PASS' if res['pass'] else 'FAIL'}**"
        )
    return out or ["- demo / resume: no result"]


def overhead_lines(ov: dict[str, Any] | None, stats: str) -> list[str]:
    """Ratios against their targets, images/s, TFLOP/s against the peak, the stats ratio."""
    out = []
    if ov:
        peak = (ov.get("peak") or {}).get("fp32_peak_flops")
        out.append(
            f"- {ov['arch']} training step: {ov['flops_step'] / 1e9:.3g} GFLOP (forward "
            f"{ov['flops_forward'] / 1e9:.3g}), batch 1, data {ov['data']}, {ov['device']}"
        )
        for name, c in ov["configs"].items():
            share = (
                f", {100 * c['caffe_flops_per_s'] / peak:.1f} % of FP32 peak {peak / 1e12:.1f} TFLOP/s" if peak else ""
            )
            target = " (target >= 0.98)" if name == "default" else ""
            out.append(
                f"- overhead {name}: ratio **{c['ratio']:.3f}**{target} over {len(c['rounds'])} round(s); "
                f"caffe train {c['caffe_images_per_s']:.2f} img/s = {c['caffe_flops_per_s'] / 1e12:.2f} "
                f"TFLOP/s{share}; orchestrate run {c['ours_images_per_s']:.2f} img/s"
            )
    m = re.search(r"(stats-bindings-vs-numpy\S*) ratio=(\S+)", stats)
    times = re.search(r"bindings ([\d.]+) ms, numpy ([\d.]+) ms", stats)
    if m:
        out.append(
            f"- {m.group(1)}: ratio **{m.group(2)}** (target >= 10 on the GPU)"
            + (f"; bindings {times.group(1)} ms, numpy {times.group(2)} ms per pass" if times else "")
        )
    return out or ["- overhead / stats: no result"]


def main() -> int:
    """Write results.json and summary.md into OUT and print the summary."""
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    steps = [line.split(None, 2) for line in text(work, "steps.txt").splitlines() if line.strip()]
    results: dict[str, Any] = {
        "steps": [{"step": s[0], "status": s[1], "detail": s[2] if len(s) > 2 else ""} for s in steps],
        "env": load(work, "env.json"),
        "numerics": load(work, "numerics.json"),
        "demo": load(work, "demo.json"),
        "resume": load(work, "resume.json"),
        "overhead": load(work, "overhead.json"),
        "stats": text(work, "stats.txt").strip().splitlines()[-3:],
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    env = results["env"] or {}
    lines = [
        f"# GPU check: {env.get('gpu', 'no GPU')}",
        "",
        f"- date: {env.get('date')}; mode: {env.get('mode')}; bundle: {env.get('bundle')}",
        f"- driver: {env.get('driver')}; host: {env.get('host')}",
        f"- command: `{env.get('command')}`",
        "",
        "## Steps",
        "",
        "| step | status | detail |",
        "|---|---|---|",
        *[f"| {s['step']} | {s['status']} | {s['detail']} |" for s in results["steps"]],
        "",
        "## Results",
        "",
        *numerics_lines(results["numerics"]),
        *run_lines(results["demo"], results["resume"]),
        *overhead_lines(results["overhead"], text(work, "stats.txt")),
        "",
    ]
    (out / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
