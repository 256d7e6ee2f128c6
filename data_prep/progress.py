"""The one progress bar of the project (data build and training): bar, count, rate, ETA and a
detail text, without tqdm. On a terminal it redraws one line in place at most every 0.1 s;
elsewhere (a log file, a pipe) it writes a line every 5 s. The last item, and an update
marked `force` (a validation result, a stop), always draw."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 24


def format_eta(seconds: float) -> str:
    """'1:02:03' / '4:05' style remaining time; '?' while the rate is unknown."""
    if seconds != seconds or seconds == float("inf"):  # NaN or no rate yet
        return "?"
    s = int(max(seconds, 0))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """`label [#####...........] 45/92 43.1 rec/s ETA 0:01  detail`. `done` starts the count
    (a resumed run starts at its iteration; the rate counts only this session's items)."""

    def __init__(
        self,
        total: int,
        label: str = "",
        *,
        unit: str = "rec",
        quiet: bool = False,
        stream: TextIO | None = None,
        done: int = 0,
    ) -> None:
        self.total, self.label, self.unit, self.quiet = total, label, unit, quiet
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = 0.1 if self.tty else 5.0
        self.done = self.first = done
        self.start = time.perf_counter()
        self._last = self.start
        self._open = False  # a terminal line drawn and not yet ended
        self._width = 0

    def update(self, n: int = 1, *, detail: str = "", force: bool = False) -> None:
        """Count `n` more items done."""
        self.set(self.done + n, detail=detail, force=force)

    def set(self, done: int, *, detail: str = "", force: bool = False) -> None:
        """`done` items are done (draws when due, at the end, or when forced)."""
        self.done = done
        now = time.perf_counter()
        if not self.quiet and (force or now - self._last >= self.interval or done >= self.total):
            self._last = now
            self._draw(self.line(now, detail))

    def line(self, now: float | None = None, detail: str = "") -> str:
        """The bar's text."""
        elapsed = (now or time.perf_counter()) - self.start
        rate = (self.done - self.first) / elapsed if elapsed > 0 else 0.0
        frac = min(self.done / self.total, 1.0) if self.total else 1.0
        bar = "#" * int(frac * BAR_WIDTH) + "." * (BAR_WIDTH - int(frac * BAR_WIDTH))
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        text = f"{self.label} [{bar}] {self.done}/{self.total} {rate:.3g} {self.unit}/s ETA {format_eta(eta)}"
        return text + (f"  {detail}" if detail else "")

    def _draw(self, text: str) -> None:
        if self.tty:
            self._width = max(self._width, len(text))  # blank what a longer line left behind
            end = "\n" if self.done >= self.total else ""
            self.stream.write("\r" + text.ljust(self._width) + end)
            self._open = not end
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line that stays (a validation's result): on a terminal it goes above the bar, which
        is drawn again below it at the next update."""
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width) + "\n")
            self._open = False
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End an unfinished terminal line (a stop, an error), so what follows starts on its own line."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def elapsed(self) -> float:
        """Seconds since the bar started."""
        return time.perf_counter() - self.start
