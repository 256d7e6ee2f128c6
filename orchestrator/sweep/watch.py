"""The sweep's console while Ray runs the trials: one line when a trial starts, at each of its
validations and when it ends, read from the trials' run directories (never from Ray's output,
which the driver keeps off the console)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from orchestrator.jsonio import read_jsonl
from orchestrator.rundir import RunDir

FINAL = ("completed", "early_stopped", "diverged", "failed")


def trial_events(trial: str, run_dir: Path, seen: dict[str, Any], total: int, done: int) -> list[str]:
    """New lines about one trial since `seen` (updated in place): launched by Ray (its log file
    appears), training (its first iteration), validations, the end."""
    run = RunDir(run_dir)
    out = []
    if not seen.get("launched") and (run_dir.parent / f"{trial}.log").exists():
        seen["launched"] = True
        out.append(f"{trial}: launched (pre-flight checks, then training)")
    if not seen.get("started") and run.metrics.exists():
        seen["started"] = True
        out.append(f"{trial}: training")
    vals = read_jsonl(run.val) if run.val.exists() else []
    for v in vals[seen.get("vals", 0) :]:
        out.append(f"{trial}: val @ {v['iter']}: mIoU {v['mean_iu']:.3f}")
    seen["vals"] = len(vals)
    summary = run.summary_data() if run.summary.exists() else {}
    if not seen.get("ended") and summary.get("status") in FINAL:
        seen["ended"] = True
        best = summary.get("best") or {}
        score = (best.get("metrics") or {}).get("mean_iu")
        how = f"best mIoU {score:.3f} at {best.get('iteration')}" if score is not None else "no validation"
        secs = summary.get("train_seconds")
        out.append(
            f"{trial}: {summary['status']} ({summary.get('stop_reason')}), {how}"
            + (f", {secs:.0f} s" if isinstance(secs, int | float) else "")
            + f"  [{done + 1}/{total} trials done]"
        )
    return out


class TrialWatch:
    """A thread that prints the trials' events every `interval` seconds until stopped."""

    def __init__(self, folder: Path, ids: list[str], interval: float = 1.0, stream: TextIO | None = None) -> None:
        self.folder, self.ids, self.interval = folder, ids, interval
        self.stream = stream or sys.stdout
        self.seen: dict[str, dict[str, Any]] = {i: {} for i in ids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def poll(self) -> None:
        """Print what happened since the last poll."""
        for trial in self.ids:
            done = sum(bool(s.get("ended")) for s in self.seen.values())
            for line in trial_events(trial, self.folder / "trials" / trial, self.seen[trial], len(self.ids), done):
                print(line, file=self.stream, flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except (OSError, ValueError):  # a file being written: read it at the next poll
                continue

    def __enter__(self) -> TrialWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()
