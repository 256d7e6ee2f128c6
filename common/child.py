"""Run Caffe work in a child process, because Caffe aborts (glog CHECK -> SIGABRT) instead of raising.

The child's stderr (where glog writes) goes to a log file; when the child dies, the parent
reads the last glog fatal line from that file and turns it into words.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

# glog: "F1126 08:15:01.123456 12345 net.cpp:123] Check failed: ..."; glog >= 0.6 (Debian 12)
# writes the year too: "F20261126 08:15:01.123456 ..."
_FATAL_RE = re.compile(r"^F(?:\d{4})?\d{4} [\d:.]+\s+\d+ (?P<src>[\w./-]+:\d+)\] (?P<msg>.*)$")
_LAYER_RES = (
    # a quoted name only: "as layer parameters" in a message is not a layer called "parameters"
    re.compile(r"layer (?:named )?['\"](?P<layer>[\w/.-]+)['\"]"),
    re.compile(r"Unknown bottom blob '(?P<blob>[\w/.-]+)' \(layer '(?P<layer>[\w/.-]+)'"),
    re.compile(r"^(?P<layer>[\w/.-]+) (?:does not need backward|needs backward)"),
)
# Caffe's layer factory logs "Creating layer X" before it looks the type up (an unknown type
# aborts right after it); the net logs "Creating Layer X" and "Setting up X" once it exists
_LAST_LAYER_RE = re.compile(r"Creating [Ll]ayer (?P<layer>[\w/.-]+)|Setting up (?P<layer2>[\w/.-]+)")
# once a net is built, no layer is being set up: a later abort (the solver's checks, a
# snapshot's history, a weights file) is not the last layer's doing
_NET_DONE_RE = re.compile(r"Network initialization done")


@dataclass(frozen=True)
class ChildResult:
    """How the child ended: exit code (negative = killed by that signal) and Caffe's last words."""

    returncode: int
    fatal: str | None  # the glog F line's message, if any
    fatal_source: str | None  # e.g. "crop_layer.cpp:44"
    layer: str | None  # the layer Caffe was working on or named

    @property
    def signal_name(self) -> str | None:
        if self.returncode < 0:
            return signal.Signals(-self.returncode).name
        return None


def parse_glog_fatal(text: str) -> tuple[str | None, str | None, str | None]:
    """(message, source, layer) of the last glog fatal line in `text`; layer from the message or
    from the last layer Caffe logged that it was creating."""
    msg = src = layer = None
    for line in text.splitlines():
        m = _FATAL_RE.match(line.strip())
        if m:
            msg, src = m.group("msg"), m.group("src")
        else:
            lm = _LAST_LAYER_RE.search(line)
            if lm and msg is None:
                layer = lm.group("layer") or lm.group("layer2")
            elif msg is None and _NET_DONE_RE.search(line):
                layer = None
    if msg is not None:
        for rx in _LAYER_RES:
            m = rx.search(msg)
            if m:
                layer = m.group("layer")
                break
    return msg, src, layer


def quiet_glog_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child whose glog INFO lines go only to its stderr log file."""
    e = dict(os.environ if env is None else env)
    e.setdefault("GLOG_minloglevel", "0")
    e.setdefault("GLOG_logtostderr", "1")
    e["PYTHONUNBUFFERED"] = "1"
    return e


def run_child(
    args: list[str],
    log_path: Path,
    *,
    timeout: float | None = None,
    stdout: int | None = subprocess.PIPE,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> tuple[ChildResult, str]:
    """Run `python -m ...` (args after the interpreter) with stderr appended to `log_path`.

    Returns the result and the child's stdout text (empty when not captured).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, *args], stdout=stdout, stderr=log, env=quiet_glog_env(env), cwd=cwd)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    return result_from_log(proc.returncode, log_path, start), (out or b"").decode(errors="replace")


def result_from_log(returncode: int, log_path: Path, offset: int = 0) -> ChildResult:
    """Read what the child wrote to its log since `offset` and find Caffe's fatal line."""
    text = ""
    if log_path.exists():
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    msg, src, layer = parse_glog_fatal(text)
    return ChildResult(returncode, msg, src, layer)


DIE_WITH_PARENT_ENV = "SEGORCH_DIE_WITH_PARENT"  # "PID:SIGNAL", read by the child at its start


def die_with_parent_env(sig: int = signal.SIGKILL) -> dict[str, str]:
    """The environment entry that makes a child we start (one of ours, which calls
    `die_with_parent()` first) receive `sig` when this process dies, so no orphan keeps working
    (the run's worker: SIGKILL; a sweep trial's run: SIGTERM, to end cleanly). The child arms it
    itself: a Popen preexec_fn runs Python in a fork of a process that may have threads (a Ray
    actor, a data loader), where any lock another thread held stays locked for ever."""
    return {DIE_WITH_PARENT_ENV: f"{os.getpid()}:{int(sig)}"}


def die_with_parent() -> None:
    """First thing in a child started with `die_with_parent_env()`: PR_SET_PDEATHSIG, and the
    signal at once if that parent is already gone. The entry is removed, so our own children do
    not inherit a parent that is not theirs."""
    value = os.environ.pop(DIE_WITH_PARENT_ENV, "")
    try:
        pid, sig = (int(v) for v in value.split(":"))
    except ValueError:  # not started that way (a user's own call, a test): nothing to arm
        return
    try:
        ctypes.CDLL(None).prctl(1, sig)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: no such call; the parent's own cleanup still runs
        return
    if os.getppid() != pid:  # it died before the call above
        os.kill(os.getpid(), sig)


def flush_and_exit(code: int) -> NoReturn:
    """Leave a Caffe child without running C++ destructors or interpreter teardown: Caffe's
    prefetch threads, and a heap hurt by non-finite values or a bad net (MaxPooling's backward
    writes at index -1 when its max mask never set on NaN), can abort at exit, after the result
    is already written. stdout and stderr are flushed first."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
