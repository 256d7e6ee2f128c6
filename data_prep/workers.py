"""Decoding pairs in worker processes, in list order, with the parent's memory bounded: the data
stage's throughput (cores) without holding the whole dataset in flight.

The workers are fresh interpreters (exec, not fork): a forked worker inherits every lock another
thread of the parent holds at that instant (OpenCV's thread pool, the decoder's stderr-capture lock,
a logging lock) and waits on it for ever; a build started from a program with threads hung that way.
multiprocessing's spawn/forkserver re-run the caller's main script in each worker instead, and its
Pool waits for ever on a task whose worker was killed. Here a task and its result travel as pickles
over two pipes per worker, and a worker that dies is seen at once (end of its result pipe)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import traceback
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import IO, Any

from common.child import die_with_parent, die_with_parent_env
from common.errors import UserError
from data_prep import decode
from data_prep.sources import Pair

IN_FLIGHT = 3  # decoded records per worker not yet written (large images; small ones: 2 chunks per worker)
LARGE_PIXELS = 1 << 20  # images above a megapixel go to the workers one at a time
# the worker's first message is the parent's sys.path (so it imports this very tree), then the options
_BOOT = (
    "import os, pickle, sys; tasks = os.fdopen(int(sys.argv[1]), 'rb'); sys.path[:] = pickle.load(tasks); "
    "from data_prep.workers import serve; serve(tasks, os.fdopen(int(sys.argv[2]), 'wb'))"
)
Result = list[decode.Record | decode.Bad]


def serve(tasks: IO[bytes], results: IO[bytes]) -> None:
    """A worker's loop: decode each chunk it is sent, until the parent closes the task pipe."""
    die_with_parent()  # a worker stuck in a read (a FIFO, a dead NFS) must not outlive the build
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    opts: decode.DecodeOptions = pickle.load(tasks)
    decode.init_worker()
    while True:
        try:
            part: list[Pair] = pickle.load(tasks)
        except EOFError:
            return
        try:
            reply: tuple[str, Any] = ("ok", [decode.decode_pair(p, opts) for p in part])
        except Exception:  # a bug, not bad data (decode_pair returns Bad for that): the parent raises it
            reply = ("error", traceback.format_exc())
        try:
            pickle.dump(reply, results, pickle.HIGHEST_PROTOCOL)
            results.flush()
        except BrokenPipeError:  # the parent stopped reading (the build stopped early)
            os._exit(0)


class _Worker:
    """One worker process and its two pipes."""

    def __init__(self, opts: decode.DecodeOptions) -> None:
        task_r, self._task_w = os.pipe()
        self._result_r, result_w = os.pipe()
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", **die_with_parent_env()}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(task_r), str(result_w)],
            stdin=subprocess.DEVNULL,
            pass_fds=(task_r, result_w),
            env=env,
        )
        os.close(task_r)
        os.close(result_w)
        self.tasks = os.fdopen(self._task_w, "wb")
        self.results = os.fdopen(self._result_r, "rb")
        self.send(list(sys.path))
        self.send(opts)

    def send(self, obj: object, part: list[Pair] | None = None) -> None:
        try:
            pickle.dump(obj, self.tasks, pickle.HIGHEST_PROTOCOL)
            self.tasks.flush()
        except BrokenPipeError:  # it died: an error, not the CLI's quiet end of a closed stdout
            raise self._died(part) from None

    def receive(self, part: list[Pair]) -> Result:
        try:
            status, value = pickle.load(self.results)
        except (EOFError, pickle.UnpicklingError):
            raise self._died(part) from None
        if status != "ok":
            raise RuntimeError(f"a decoding worker failed:\n{value}")
        return value

    def _died(self, part: list[Pair] | None) -> UserError:
        where = ""
        if part:
            where = f" while decoding {part[0].image}" + (
                f" or one of the {len(part) - 1} pairs after it" if len(part) > 1 else ""
            )
        return UserError(
            f"a decoding worker process died ({_how(self.proc)}){where}",
            "run the build again; if a worker dies again, pass --workers 1 to stop at the pair that crashes, "
            "or give it more memory (fewer --workers, a smaller --resize)",
        )

    def close(self) -> None:
        """End of the task pipe ends the worker; one that does not end (a stuck decoder) is killed."""
        for f in (self.tasks, self.results):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _how(proc: subprocess.Popen[bytes]) -> str:
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return "its result pipe closed"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}" + (", e.g. by the out-of-memory killer" if code == -9 else "")
    return f"exit code {code}"


def decode_all(pairs: list[Pair], opts: decode.DecodeOptions, workers: int) -> Iterator[decode.Record | decode.Bad]:
    """Decoded pairs in list order; `workers` processes (1: in this process). A worker that dies
    (the out-of-memory killer, a crash in a decoder) is a UserError, never a build waiting for ever."""
    if workers <= 1 or len(pairs) < 4:
        yield from (decode.decode_pair(p, opts) for p in pairs)
        return
    chunk = _chunk_size(pairs, workers)
    chunks = [pairs[i : i + chunk] for i in range(0, len(pairs), chunk)]
    # At most IN_FLIGHT records per worker decoded and not yet written: Pool.imap queued every decoded
    # record in this process whenever writing lagged, and chunks grew with the dataset (peak RSS 146 MiB
    # at 100 and 302 MiB at 1000 Cityscapes-sized pairs); a bounded window keeps memory flat.
    procs = [_Worker(opts) for _ in range(min(workers, len(chunks)))]
    window: deque[tuple[_Worker, list[Pair]]] = deque()
    try:
        todo = enumerate(chunks)  # chunk i goes to worker i mod n; results are read back in list order
        for i, part in islice(todo, max(2 * len(procs), IN_FLIGHT * len(procs) // chunk)):  # none idles
            procs[i % len(procs)].send(part, part)
            window.append((procs[i % len(procs)], part))
        while window:
            proc, part = window.popleft()
            done = proc.receive(part)
            for i, nxt in islice(todo, 1):
                procs[i % len(procs)].send(nxt, nxt)
                window.append((procs[i % len(procs)], nxt))
            yield from done
    finally:  # also when stopped early (a bad pair): each worker ends at its closed pipes
        for proc in procs:
            proc.close()


def _chunk_size(pairs: list[Pair], workers: int) -> int:
    """Pairs per task: up to 8 small images (fewer round trips; small enough that no worker idles at
    the end), one image when they are large (a 2048x1024 record is 8 MB: a chunk of 8 would hold
    128 MB per worker, and handing one over costs nothing beside decoding it)."""
    from PIL import Image

    by_count = max(1, min(8, len(pairs) // (workers * 64)))
    try:
        with Image.open(pairs[0].image) as im:
            width, height = im.size
    except Exception:  # the decoder reports a bad first image itself
        return by_count
    return 1 if width * height > LARGE_PIXELS else by_count
