"""A one-line progress bar with rate and ETA on stderr (no dependency on tqdm)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws at most every `interval` seconds; on a non-terminal it writes a line every few seconds."""

    def __init__(self, total: int, label: str = "", *, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.total, self.label, self.quiet = total, label, quiet
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else 5.0
        self.done = 0
        self.start = time.perf_counter()
        self._last = self.start

    def update(self, n: int = 1) -> None:
        """Count `n` more items done."""
        self.done += n
        now = time.perf_counter()
        if not self.quiet and (now - self._last >= self.interval or self.done >= self.total):
            self._last = now
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The bar's text: `label [####....] 45/92  43.1 img/s  ETA 1.2s`."""
        elapsed = (now or time.perf_counter()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        frac = self.done / self.total if self.total else 1.0
        width = 24
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return f"{self.label} [{bar}] {self.done}/{self.total} {rate:7.1f} rec/s ETA {eta:5.1f}s"

    def _draw(self, now: float) -> None:
        end = "\r" if self.tty and self.done < self.total else "\n"
        self.stream.write(("\r" if self.tty else "") + self.line(now) + end)
        self.stream.flush()

    def close(self) -> None:
        """End an unfinished bar's line (e.g. on an error), so what follows starts on its own line."""
        if not self.quiet and self.tty and self._last > self.start and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()

    def elapsed(self) -> float:
        """Seconds since the bar started."""
        return time.perf_counter() - self.start
