"""Decoding pairs in worker processes, in list order, with the parent's memory bounded: the data
stage's throughput (cores) without holding the whole dataset in flight."""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Iterator
from itertools import islice
from multiprocessing.pool import AsyncResult

from data_prep import decode
from data_prep.sources import Pair

_OPTS: decode.DecodeOptions | None = None
IN_FLIGHT = 3  # decoded records per worker not yet written (large images; small ones: 2 chunks per worker)
LARGE_PIXELS = 1 << 20  # images above a megapixel go to the workers one at a time


def _init(opts: decode.DecodeOptions) -> None:
    global _OPTS
    _OPTS = opts
    decode.init_worker()


def _task(pair: Pair) -> decode.Record | decode.Bad:
    assert _OPTS is not None
    return decode.decode_pair(pair, _OPTS)


def decode_all(pairs: list[Pair], opts: decode.DecodeOptions, workers: int) -> Iterator[decode.Record | decode.Bad]:
    """Decoded pairs in list order; `workers` processes (1: in this process)."""
    if workers <= 1 or len(pairs) < 4:
        yield from (decode.decode_pair(p, opts) for p in pairs)
        return
    import cv2  # imported once here so forked workers start with it loaded
    from PIL import Image  # noqa: F401

    method = "fork" if "fork" in mp.get_all_start_methods() else None
    chunk = _chunk_size(pairs, workers)
    chunks = [pairs[i : i + chunk] for i in range(0, len(pairs), chunk)]
    # At most IN_FLIGHT records per worker decoded and not yet written: Pool.imap queued every decoded
    # record in this process whenever writing lagged, and chunks grew with the dataset (peak RSS 146 MiB
    # at 100 and 302 MiB at 1000 Cityscapes-sized pairs); a bounded window keeps memory flat.
    window: deque[AsyncResult[list[decode.Record | decode.Bad]]] = deque()
    # OpenCV's thread pool does not survive fork: a worker forked while this process has one running
    # hangs for ever in its first cv2.setNumThreads. So it is stopped while the workers are forked.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    with mp.get_context(method).Pool(workers, _init, (opts,)) as pool:
        cv2.setNumThreads(threads)
        todo = iter(chunks)
        for part in islice(todo, max(2 * workers, IN_FLIGHT * workers // chunk)):  # every worker kept busy
            window.append(pool.apply_async(_decode_chunk, (part,)))
        while window:
            done = window.popleft().get()
            for part in islice(todo, 1):
                window.append(pool.apply_async(_decode_chunk, (part,)))
            yield from done


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


def _decode_chunk(part: list[Pair]) -> list[decode.Record | decode.Bad]:
    return [_task(p) for p in part]
