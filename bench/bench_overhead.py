"""`orchestrate run` iterations/s against `caffe train` (the CLI built with Caffe) on the same
solver, net and LMDBs (the demo's synthetic data).

Each tool runs for N1 and N2 iterations; the time difference over N2 - N1 iterations cancels
start-up (Python imports, the doctor's probe, net set-up) and leaves the per-iteration cost.
This VM's speed drifts by 10-20 % (at times 2x) from one minute to the next, and the same
`caffe train` run varies by +-6 %: more than the overhead being measured. So each round runs
the three tools back to back, each for N1 then N2 iterations, in alternating order; each
ratio is the median of the per-round ratios (a shared start-up estimate would be biased by
the drift). The quartiles show the spread.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.common import result_line  # noqa: E402

N1, N2 = 20, 170
ROUNDS = 9
EXP = REPO / "experiments" / "demo.yaml"
COMMON = ["--set", "validation.enabled=false", "--set", "early_stop.enabled=false",
          "--set", "snapshot.interval=1000000", "--quiet", "--fresh"]


def timed(cmd: list[str], **kw: object) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[arg-type]
    return time.perf_counter() - t0


def ours(tmp: Path, n: int, extra: list[str]) -> float:
    return timed([sys.executable, "-m", "orchestrator.cli", "run", str(EXP), "--run-dir", str(tmp / f"ours{n}"),
                  "--set", f"solver.max_iter={n}", *COMMON, *extra], cwd=REPO)


def caffe_train(tmp: Path, n: int) -> float:
    from orchestrator.envinfo import tool
    solver = tmp / "ref" / "solver.prototxt"
    text = re.sub(r"max_iter: \d+", f"max_iter: {n}", solver.read_text())
    s = tmp / "ref" / f"solver{n}.prototxt"
    s.write_text(text)
    return timed([str(tool("caffe")), "train", f"--solver={s}"], env={**os.environ, "GLOG_minloglevel": "2"})


def main() -> None:
    if not (REPO / "data/synth/train.txt").exists():
        subprocess.run([sys.executable, "-m", "orchestrator.cli", "data", "synth", "--out", "data/synth"], cwd=REPO, check=True)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        # the reference run dir gives caffe train exactly our solver and nets
        subprocess.run([sys.executable, "-m", "orchestrator.cli", "run", str(EXP), "--run-dir", str(tmp / "ref"),
                        "--set", "solver.max_iter=1", *COMMON], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        configs = {"overhead-default": [], "overhead-stats-every-iter": ["--set", "checks.stats_interval=1"]}
        tools = ["caffe", *configs]

        def run(name: str, n: int) -> float:
            return caffe_train(tmp, n) if name == "caffe" else ours(tmp, n, configs[name])

        ratios: dict[str, list[float]] = {name: [] for name in configs}
        for r in range(ROUNDS):
            order = tools if r % 2 == 0 else tools[::-1]  # alternating order cancels drift
            sec = {name: (run(name, N2) - run(name, N1)) / (N2 - N1) for name in order}
            for name in configs:
                ratios[name].append(sec["caffe"] / sec[name])
            print(f"round {r + 1}: " + ", ".join(f"{n} {1 / t:.2f} it/s" for n, t in sec.items()), flush=True)
        for name, rs in ratios.items():
            q = statistics.quantiles(rs, n=4)
            print(f"{name}: per-round ratios {' '.join(f'{x:.3f}' for x in rs)} (quartiles {q[0]:.3f}-{q[2]:.3f})")
        for name, rs in ratios.items():
            print(result_line(name, statistics.median(rs)))


if __name__ == "__main__":
    main()
