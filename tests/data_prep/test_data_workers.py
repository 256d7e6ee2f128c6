"""The build's decoding workers (`--workers N`) are fresh interpreters fed through pipes, so the
family "a worker that never answers" cannot happen: a worker forked while another thread of the
caller held a lock waited on it for ever (a CI run hung in this folder); multiprocessing's spawn
re-runs the caller's unguarded script in every worker; its Pool waits for ever on a task whose
worker was killed. Each test runs the build in a child with a timeout, so a regression fails
instead of hanging the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from dp_helpers import no_leftovers, read_lmdb, start_blocked_build

REPO = Path(__file__).resolve().parents[2]
LIMIT = 120  # seconds: a liveness guard, not a speed check


def _build_code(data: Path, out: Path) -> str:
    return (
        "from orchestrator.cli import main\n"
        f"rc = main(['data', 'build', '--list', {str(data / 'list.txt')!r}, '--out', {str(out)!r},"
        " '--num-classes', '5', '--ignore-label', '255', '--quiet', '--workers', '2'])\n"
    )


def _python(code: str, cwd: Path = REPO, script: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(script)] if script else [sys.executable, "-c", code]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=LIMIT, env=env)


def _assert_builds_six(before: str, after: str, data: Path, out: Path) -> None:
    """The build run in a child between two snippets of the caller's own code: it exits 0 and
    writes the 6 images."""
    r = _python(before + _build_code(data, out) + after)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(read_lmdb(out / "images")) == 6


def test_build_while_another_thread_holds_a_lock_the_workers_need(data: Path, tmp_path: Path) -> None:
    """A caller whose other thread is inside the decoder's stderr capture (its lock held) when the
    build starts its workers: forked workers inherited the held lock and never decoded a pair."""
    before = (
        "import sys, threading\n"
        "from data_prep import image_codecs\n"
        "held, done = threading.Event(), threading.Event()\n"
        "def hold():\n"
        "    with image_codecs._LOCK:\n"
        "        held.set(); done.wait()\n"
        "threading.Thread(target=hold, daemon=True).start(); held.wait()\n"
    )
    _assert_builds_six(before, "done.set(); sys.exit(rc)\n", data, tmp_path / "out")


def test_build_workers_after_opencv_ran_its_thread_pool(data: Path, tmp_path: Path) -> None:
    """A process that used an OpenCV parallel function (a blur) before `data build --workers 2`:
    its forked workers hung for ever (seen twice while writing test_image_matrix.py, on a loaded
    machine; a race, so this passes on most runs of the old code too). The workers are no longer
    forked (the test above covers the family: any lock another thread holds)."""
    before = "import sys, cv2, numpy as np\ncv2.GaussianBlur(np.zeros((2000, 2000, 3), np.uint8), (5, 5), 2)\n"
    _assert_builds_six(before, "sys.exit(rc)\n", data, tmp_path / "out")


def test_workers_do_not_run_the_callers_script_again(data: Path, tmp_path: Path) -> None:
    """A user's script that builds at top level, without `if __name__ == '__main__'`: spawn-style
    workers import it again, and each would start a build of its own."""
    script = tmp_path / "make_data.py"
    script.write_text(_build_code(data, tmp_path / "out") + "print('built', rc)\n")
    r = _python("", cwd=tmp_path, script=script)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("built") == 1 and "built 0" in r.stdout
    assert len(read_lmdb(tmp_path / "out" / "images")) == 6


def _workers_of(pid: int) -> list[int]:
    """Live decoding workers, children of `pid` (from /proc, as test_run_dir_hostile finds the run's worker)."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        if b"data_prep.workers" in cmd and _alive(int(child)):
            found.append(int(child))
    return found


def _wait_for(what: str, cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + LIMIT
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc (Linux)")
def test_a_killed_worker_stops_the_build_with_an_error(data: Path, tmp_path: Path) -> None:
    """A worker killed mid-build (as the out-of-memory killer does; one blocked on a FIFO here, so
    the build cannot finish first): exit 2 naming the cause, nothing left on disk, no worker left."""
    out = tmp_path / "out"
    proc = start_blocked_build(data, out, workers="2")
    try:
        _wait_for("the build never started two workers", lambda: len(_workers_of(proc.pid)) == 2)
        workers = _workers_of(proc.pid)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=LIMIT)
    finally:
        proc.kill()
    text = err.decode()
    assert proc.returncode == 2, text
    assert "decoding worker process died (killed by SIGKILL" in text and "fix:" in text and "--workers 1" in text
    assert not out.exists() and no_leftovers(tmp_path) == []
    assert not any(_alive(pid) for pid in workers)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc (Linux)")
def test_killing_the_build_ends_its_workers(data: Path, tmp_path: Path) -> None:
    """The build killed (SIGKILL: nothing of it runs) while a worker is blocked in a read that never
    returns (a FIFO): the worker must not stay behind (it dies with its parent)."""
    proc = start_blocked_build(data, tmp_path / "out", workers="2")
    try:
        _wait_for("the build never started two workers", lambda: len(_workers_of(proc.pid)) == 2)
        workers = _workers_of(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    _wait_for(f"workers {workers} outlived their build", lambda: not any(_alive(pid) for pid in workers))


def test_a_dead_worker_is_an_error_whichever_pipe_finds_it(data: Path) -> None:
    """Sending the next chunk to a worker that died is an EPIPE: it must read as the worker's death
    (the CLI ends a BrokenPipeError quietly, as for `| head`), as the end of its result pipe does."""
    from common.errors import UserError
    from data_prep.decode import DecodeOptions
    from data_prep.sources import Pair
    from data_prep.workers import _Worker

    part = [Pair(data / "img" / "000.png", data / "lab" / "000.png", "list.txt line 1")]
    for pipe in ("send", "receive"):
        worker = _Worker(DecodeOptions(num_classes=5))
        worker.proc.kill()
        worker.proc.wait()
        with pytest.raises(UserError, match="decoding worker process died \\(killed by SIGKILL") as e:
            worker.send(part, part) if pipe == "send" else worker.receive(part)
        assert "000.png" in str(e.value) and "--workers 1" in str(e.value)
        worker.close()
