"""The run's JSON files: atomic whole-file writes, append-only JSONL logs whose torn or damaged
lines are dropped on reading, and one line for an OSError. No Caffe, no run-dir knowledge."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any


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
    """Write JSON to a temp file, fsync and rename: readers never see half a file, and a
    failed write (disk full) leaves the old file and no temp file behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(_clean(data), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def io_error_text(e: OSError) -> str:
    """One line for an OSError: what failed and on which file ('no space left writing X')."""
    where = f" writing {e.filename}" if e.filename else ""
    if e.errno == errno.ENOSPC:
        return f"no space left on device{where}"
    return f"{e.strerror or e}{where}"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All complete records of a JSONL file (a torn last line from a crash, or any line that is
    not a JSON object, is dropped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # not JSON, not UTF-8
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def read_json(path: Path, default: Any) -> Any:
    """A run file's JSON (summary.json, findings.json), or `default` when it is missing or
    damaged and of another type than `default`: what it held is lost, the run goes on."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return default
    return data if isinstance(data, type(default)) else default


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
