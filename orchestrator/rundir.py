"""The run directory: its file names, append-only JSONL logs, atomic summary and snapshots.

A snapshot is a folder `snapshots/iter_<N>/` holding `weights.caffemodel`, `state.solverstate`
and `hooks.json`. It is assembled under `iter_<N>.tmp/` and renamed when complete, so a crash
mid-write never leaves a folder that resume would take.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from common.errors import UserError

STATUSES = ("running", "completed", "early_stopped", "diverged", "interrupted", "failed")
_SNAP_RE = re.compile(r"^iter_(\d+)$")


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file, fsync and rename: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(_clean(data), f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records of a JSONL file (a torn last line from a crash is dropped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class JsonlLog:
    """An open JSONL file: one flushed line per record, without reopening the file each time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(_clean(record)) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def __getattr__(self, name: str) -> Path:
        files = {"config": "config.yaml", "train_net": "train.prototxt", "val_net": "val.prototxt",
                 "deploy_net": "deploy.prototxt", "solver": "solver.prototxt", "metrics": "metrics.jsonl",
                 "val": "val.jsonl", "summary": "summary.json", "report": "report.md", "curves": "curves.png",
                 "log": "caffe.log", "meta": "net_meta.json", "findings": "findings.json",
                 "snapshots": "snapshots", "partial": "snapshots/.partial"}
        if name in files:
            return self.root / files[name]
        raise AttributeError(name)

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- logs
    def append(self, path: Path, record: dict[str, Any]) -> None:
        """Append one JSON record and flush it, so a killed run loses at most the line being written."""
        log = JsonlLog(path)
        try:
            log.write(record)
        finally:
            log.close()

    def truncate_after(self, path: Path, iteration: int) -> None:
        """Keep only records with iter <= iteration (resume continues after the restored snapshot)."""
        kept = [r for r in read_jsonl(path) if r.get("iter", -1) <= iteration]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, path)

    def summary_data(self) -> dict[str, Any]:
        return json.loads(self.summary.read_text()) if self.summary.exists() else {}

    def write_summary(self, **fields: Any) -> dict[str, Any]:
        """Merge fields into summary.json (atomically)."""
        data = self.summary_data()
        data.update(fields)
        if data.get("status") not in STATUSES:
            raise ValueError(f"bad status {data.get('status')!r}")
        write_json_atomic(self.summary, data)
        return data

    # ---------------------------------------------------------------- snapshots
    def snapshot_dirs(self) -> list[tuple[int, Path]]:
        """Complete snapshots, oldest first."""
        if not self.snapshots.exists():
            return []
        out = []
        for p in self.snapshots.iterdir():
            m = _SNAP_RE.match(p.name)
            if m and p.is_dir() and all((p / f).exists() for f in ("weights.caffemodel", "state.solverstate", "hooks.json")):
                out.append((int(m.group(1)), p))
        return sorted(out)

    def latest_snapshot(self) -> tuple[int, Path] | None:
        snaps = self.snapshot_dirs()
        return snaps[-1] if snaps else None

    def commit_snapshot(self, iteration: int, caffemodel: Path, solverstate: Path, hooks_state: dict[str, Any]) -> Path:
        """Move the files Caffe wrote into iter_<N>/ and make it visible in one rename."""
        from caffe.proto import caffe_pb2

        final = self.snapshots / f"iter_{iteration}"
        tmp = self.snapshots / f"iter_{iteration}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        os.replace(caffemodel, tmp / "weights.caffemodel")
        state = caffe_pb2.SolverState()
        state.ParseFromString(solverstate.read_bytes())
        state.ClearField("learned_net")  # resume loads weights.caffemodel itself: paths stay relative
        (tmp / "state.solverstate").write_bytes(state.SerializeToString())
        solverstate.unlink()
        write_json_atomic(tmp / "hooks.json", {"iter": iteration, "hooks": hooks_state})
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final

    def prune_snapshots(self, keep_last: int, keep: set[int]) -> None:
        """Delete all but the newest `keep_last` snapshots and those in `keep` (the best)."""
        snaps = self.snapshot_dirs()
        recent = {it for it, _ in snaps[-keep_last:]} if keep_last > 0 else set()
        for it, p in snaps:
            if it not in recent and it not in keep:
                shutil.rmtree(p, ignore_errors=True)


def require_run_dir(path: str | os.PathLike[str]) -> RunDir:
    """A RunDir that exists and has a config, or a UserError saying what is wrong."""
    rd = RunDir(path)
    if not rd.config.exists():
        raise UserError(f"{rd.root}: not a run directory (no config.yaml)",
                        "give the directory that `orchestrate run` created, e.g. runs/demo")
    return rd
