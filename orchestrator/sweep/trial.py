"""One sweep trial on Ray Tune: a normal `orchestrate run` (or `resume`) into the trial's run
directory, in its own process, whose validations are reported to Tune as they appear in
val.jsonl (Tune's `training_iteration` counts validations, so ASHA's rungs are validations).
When the scheduler stops the trial, the run gets SIGUSR1: it finishes the step, snapshots and
ends `early_stopped` ("stopped by the sweep")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common.child import die_with_parent_env
from orchestrator.jsonio import read_jsonl
from orchestrator.rundir import RunDir

FINAL = ("completed", "early_stopped", "diverged", "failed")
POLL_SECONDS = 0.25


def trial_command(exp_file: str, run_dir: str, device: str | None) -> list[str]:
    """`run`, or `resume` when the run dir already trained (a resumed sweep)."""
    run = RunDir(run_dir)
    sets = ["--set", f"device={device}"] if device else []
    base = [sys.executable, "-m", "orchestrator.cli"]
    if run.is_ours and run.snapshot_dirs():
        return base + ["resume", run_dir, *sets]
    fresh = ["--fresh"] if run.is_ours else []
    return base + ["run", exp_file, "--run-dir", run_dir, "--quiet", *fresh, *sets]


def final_status(run_dir: str) -> str | None:
    """The run's status when it is one a sweep keeps (not interrupted or running)."""
    status = RunDir(run_dir).summary_data().get("status") if Path(run_dir).exists() else None
    return status if status in FINAL else None


def _trainable_class() -> Any:
    from ray import tune

    class TrialRun(tune.Trainable):
        """Tune's view of one trial: each step() returns the next validation."""

        def setup(self, config: dict[str, Any]) -> None:
            trials = Path(config["folder"]) / "trials"
            self.cfg = {
                **config,
                "exp": str(trials / f"{config['id']}.yaml"),
                "run_dir": str(trials / config["id"]),
                "log": str(trials / f"{config['id']}.log"),
                "gpu": config["gpu"][config["id"]],
            }
            config = self.cfg
            self.seen = 0  # a resumed trial reports its earlier validations again: the same rungs
            self.last: float | None = None
            device = None
            if config.get("gpu"):  # Ray set CUDA_VISIBLE_DEVICES to the GPU it assigned: index 0 here
                device = "gpu:0"
            threads = str(max(1, int(config.get("cpus", 1))))
            env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
            env.update(die_with_parent_env(signal.SIGTERM))  # no run outlives its sweep (SIGTERM: it ends cleanly)
            log = open(config["log"], "ab")
            self.proc = subprocess.Popen(
                trial_command(config["exp"], config["run_dir"], device),
                stdout=log,
                stderr=log,
                env=env,
            )
            log.close()

        def step(self) -> dict[str, Any]:
            val = RunDir(self.cfg["run_dir"]).val
            metric = self.cfg["metric"]
            while True:
                recs = read_jsonl(val)
                if len(recs) > self.seen:
                    rec = recs[self.seen]
                    self.seen += 1
                    self.last = rec.get(metric)
                    return {metric: self.last, "iter": rec["iter"]}
                if self.proc.poll() is not None:
                    status = RunDir(self.cfg["run_dir"]).summary_data().get("status", "failed")
                    # no validation (diverged, failed): the worst value, so no scheduler keeps it
                    value = self.last if self.last is not None else (0.0 if self.cfg["mode"] == "max" else 1.0)
                    return {metric: value, "done": True, "status": status}
                time.sleep(POLL_SECONDS)

        def cleanup(self) -> None:
            """Stopped by the scheduler (or the sweep ends): let the run end cleanly."""
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGUSR1)
                try:
                    self.proc.wait(timeout=300)
                except subprocess.TimeoutExpired:
                    self.proc.terminate()
                    self.proc.wait(timeout=60)

        def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
            return {"seen": self.seen}  # the run dir holds the real state

        def load_checkpoint(self, checkpoint: Any) -> None:
            pass

    return TrialRun
