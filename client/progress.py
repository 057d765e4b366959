"""A progress bar for long client operations, drawn on stderr: items done of the total, the rate in items
per second (over the last few seconds, so it follows the current pace) and the estimated time left.

On a terminal the line is redrawn in place (``\\r``) about ten times a second; otherwise (a log file, a
pipe, CI) one plain line is written every few seconds, so a log stays readable. The first and the last
state are always written.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24
RATE_WINDOW_SECONDS = 10.0
TTY_INTERVAL = 0.1
LOG_INTERVAL = 3.0


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """``update(done)`` as work completes; ``finish()`` once at the end. ``done`` may start above zero
    (a resumed download): the rate counts only what this run did."""

    def __init__(self, total: int, stream: TextIO, *, label: str = "items", interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self.interval = interval if interval is not None else (TTY_INTERVAL if self.tty else LOG_INTERVAL)
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.note = ""
        self._first: int | None = None  # ``done`` at the first update: where this run started
        self._samples: deque[tuple[float, int]] = deque()
        self._last_draw: float | None = None
        self._width = 0

    def update(self, done: int, *, note: str = "") -> None:
        now = self.clock()
        if self._first is None:
            self._first = done
        self.done = done
        self.note = note
        if not self._samples or now - self._samples[-1][0] >= 0.05:
            self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] > RATE_WINDOW_SECONDS:
            self._samples.popleft()
        if self._last_draw is None or now - self._last_draw >= self.interval:
            self._draw(now)

    def finish(self) -> None:
        self._draw(self.clock(), final=True)

    def interrupt(self) -> None:
        """Ends a redrawn line, so that a message written next starts on a line of its own."""
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def rate(self, now: float) -> float | None:
        """Items per second over the window; None before there is anything to measure."""
        if not self._samples or (self.done - (self._first or 0) < 10 and self.done < self.total):
            return None  # too few items yet for a rate worth extrapolating
        t0, d0 = self._samples[0]
        if now - t0 < 0.2:
            return None
        return (self.done - d0) / (now - t0)

    def line(self, now: float, *, final: bool = False) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(BAR_WIDTH * fraction)
        rate = self.rate(now)
        if final:
            # The whole run's average: the window's tail may be the idle wait for the last item.
            elapsed = now - self.started
            run_rate = (self.done - (self._first or 0)) / elapsed if elapsed > 0 else 0.0
            speed, eta = f"{run_rate:.1f} {self.label}/s", f"ETA 0s, took {format_duration(elapsed)}"
        elif rate:
            speed, eta = f"{rate:.1f} {self.label}/s", f"ETA {format_duration((self.total - self.done) / rate)}"
        else:
            speed, eta = f"-- {self.label}/s", "ETA --"
        parts = [f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}]", f"{self.done}/{self.total}",
                 f"{fraction:4.0%}", speed, eta]
        if self.note:
            parts.append(self.note)
        return "  ".join(parts)

    def _draw(self, now: float, *, final: bool = False) -> None:
        self._last_draw = now
        text = self.line(now, final=final)
        if self.tty:
            # Pad over the previous, possibly longer, line.
            self.stream.write("\r" + text.ljust(self._width) + ("\n" if final else ""))
            self._width = 0 if final else len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
