"""Sweep concurrency: 4 demo trials as `orchestrate sweep` at 2 concurrent against the same 4
runs one after another (each pinned to 1 BLAS thread), measured in one run on this machine.

Prints `sweep-concurrency ratio=X.XX` = sweep time / sequential time (target <= 0.6; LOWER is
better here, unlike the other benchmarks)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.common import result_line  # noqa: E402

LRS = [0.001, 0.002, 0.003, 0.004]


def base_experiment(data: Path) -> dict:
    """The demo's net on the demo's data, 1000 iterations (about a minute alone on one core),
    validated twice. Shorter trials measure the sweep's fixed start-up (Ray, the doctor once per
    net: about 20 s) more than its concurrency: at 300 iterations the ratio was 0.73."""
    return {
        "name": "bench",
        "seed": 0,
        "data": {
            "train": str(data / "lmdb" / "train"),
            "val": str(data / "lmdb" / "val"),
            "batch_size": 8,
            "build": {
                "root": str(data),
                "train_list": "train.txt",
                "val_list": "val.txt",
                "num_classes": 5,
                "ignore_label": 255,
            },
        },
        "net": {"arch": "compact", "width": 16, "depth": 3},
        "solver": {"type": "Adam", "base_lr": 0.002, "max_iter": 1000},
        "checks": {"stats_interval": 20},
        "validation": {"interval": 500},
        "snapshot": {"interval": 1000},
        "progress": {"quiet": True},
    }


def orchestrate(*args: str, env: dict[str, str]) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    if r.returncode != 0:
        sys.exit(f"orchestrate {' '.join(args)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def main() -> int:
    data = REPO / "data" / "synth"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    if not (data / "train.txt").exists():
        orchestrate("data", "synth", "--out", str(data), env=env)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        t = Path(tmp)
        (t / "base.yaml").write_text(yaml.safe_dump(base_experiment(data)))
        orchestrate("run", str(t / "base.yaml"), "--run-dir", str(t / "warm"), env=env)  # builds the LMDBs once
        t0 = time.perf_counter()
        for i, lr in enumerate(LRS):
            orchestrate(
                "run", str(t / "base.yaml"), "--run-dir", str(t / f"seq{i}"), "--set", f"solver.base_lr={lr}", env=env
            )
        sequential = time.perf_counter() - t0
        (t / "sweep.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": "bench",
                    "base": str(t / "base.yaml"),
                    "space": {"solver.base_lr": {"grid": LRS}},
                    "resources": {"cpus": 1},
                    "max_concurrent": 2,
                }
            )
        )
        t0 = time.perf_counter()
        orchestrate("sweep", str(t / "sweep.yaml"), "--out", str(t / "sweep"), env=env)
        swept = time.perf_counter() - t0
    print(f"4 runs one after another: {sequential:.1f} s; sweep at 2 concurrent: {swept:.1f} s (Ray start-up included)")
    print(result_line("sweep-concurrency", swept / sequential))
    return 0


if __name__ == "__main__":
    sys.exit(main())
