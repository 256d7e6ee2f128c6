"""`orchestrate run` iterations/s against `caffe train` (the CLI built with Caffe) on the same
solver, net and LMDBs (the demo's synthetic data).

This VM's speed drifts by 10-20 % (at times 2x) from one minute to the next; run one after
the other, the two tools gave per-round ratios from 0.64 to 1.53. So the two run at the same
time, one core each (taskset) and one BLAS thread each, and the drift hits both alike; the
cores are swapped every round. Each tool runs for N1 and N2 iterations; the time difference
over N2 - N1 iterations cancels start-up (Python imports, the doctor's probe, net set-up) and
leaves the per-iteration cost. Each ratio is the median of the per-round ratios.
Prints `overhead-default ratio=X.XX` (default checks) and `overhead-stats-every-iter
ratio=X.XX` (statistics every iteration): our it/s divided by caffe's (higher is better).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.common import result_line  # noqa: E402

N1, N2 = 10, 110
ROUNDS = 6
EXP = REPO / "experiments" / "demo.yaml"
COMMON = [
    "--set",
    "validation.enabled=false",
    "--set",
    "early_stop.enabled=false",
    "--set",
    "snapshot.interval=1000000",
    "--quiet",
    "--fresh",
]
ENV = {**os.environ, "GLOG_minloglevel": "2", "OPENBLAS_NUM_THREADS": "1"}


def caffe_cmd(tmp: Path, n: int) -> list[str]:
    from orchestrator.cli.envinfo import tool

    solver = tmp / "ref" / "solver.prototxt"
    s = tmp / "ref" / f"solver{n}.prototxt"
    s.write_text(re.sub(r"max_iter: \d+", f"max_iter: {n}", solver.read_text()))
    return [str(tool("caffe")), "train", f"--solver={s}"]


def ours_cmd(exp: Path, run_dir: Path, n: int, extra: Sequence[str] = ()) -> list[str]:
    """`orchestrate run` of `exp` for `n` iterations into `run_dir`, with the settings both tools share."""
    cli = [sys.executable, "-m", "orchestrator.cli"]
    return [*cli, "run", str(exp), "--run-dir", str(run_dir), "--set", f"solver.max_iter={n}", *COMMON, *extra]


def together(cmds: dict[str, list[str]], cores: dict[str, int]) -> dict[str, float]:
    """Start all commands at once, each pinned to its core; seconds until each one ended."""
    t0 = time.perf_counter()
    procs = {
        k: subprocess.Popen(
            ["taskset", "-c", str(cores[k]), *c],
            env=ENV,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for k, c in cmds.items()
    }
    ended: dict[str, float] = {}
    while len(ended) < len(procs):
        for k, p in procs.items():
            if k not in ended and p.poll() is not None:
                if p.returncode != 0:
                    raise RuntimeError(f"{k} failed with exit code {p.returncode}: {' '.join(cmds[k])}")
                ended[k] = time.perf_counter() - t0
        time.sleep(0.01)
    return ended


def main() -> None:
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 cores: the two tools run side by side, one core each")
    if not (REPO / "data/synth/train.txt").exists():
        subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "data", "synth", "--out", "data/synth"], cwd=REPO, check=True
        )
    configs = {"overhead-default": [], "overhead-stats-every-iter": ["--set", "checks.stats_interval=1"]}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        # the reference run dir gives caffe train exactly our solver and nets
        subprocess.run(ours_cmd(EXP, tmp / "ref", 1), cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        ratios: dict[str, list[float]] = {name: [] for name in configs}
        for name, extra in configs.items():
            for r in range(ROUNDS):
                cores = {"caffe": r % 2, "ours": 1 - r % 2}
                long = together(
                    {"caffe": caffe_cmd(tmp, N2), "ours": ours_cmd(EXP, tmp / f"ours{N2}", N2, extra)}, cores
                )
                short = together(
                    {"caffe": caffe_cmd(tmp, N1), "ours": ours_cmd(EXP, tmp / f"ours{N1}", N1, extra)}, cores
                )
                sec = {k: (long[k] - short[k]) / (N2 - N1) for k in long}
                ratios[name].append(sec["caffe"] / sec["ours"])
                print(
                    f"{name} round {r + 1}: caffe train {1 / sec['caffe']:.2f} it/s, "
                    f"orchestrate run {1 / sec['ours']:.2f} it/s, ratio {ratios[name][-1]:.3f}",
                    flush=True,
                )
        for name, rs in ratios.items():
            print(f"{name}: per-round ratios {' '.join(f'{x:.3f}' for x in rs)}")
        for name, rs in ratios.items():
            print(result_line(name, statistics.median(rs)))


if __name__ == "__main__":
    main()
