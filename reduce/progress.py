"""Progress of a phase of work, fit for a terminal and for a batch log.

On a terminal (the stream's ``isatty()``) a one-line bar with counts and rate is redrawn
in place (carriage returns, at most ~5 times a second) and ended with a newline. Anywhere
else (a pipe, a batch system's log file) exactly one line per phase is written when the
phase ends, with no carriage return::

    checking 27 files: 3/3 tasks in 1.2 s (2.5 tasks/s)

Disabled (``enabled=False``, e.g. ``-q``), nothing is written. The stream defaults to
``sys.stderr`` so that results on stdout stay clean.

    with Progress("writing 27 files", len(futures), unit="tasks") as bar:
        for future in track(futures, bar):
            ...
"""
from __future__ import annotations

import sys
import time

REDRAW_S = 0.2  # at most ~5 frames a second on a terminal
BAR_WIDTH = 24


def _number(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


class Progress:
    """Context manager for one phase of ``total`` units of work; call ``advance`` as they finish."""

    def __init__(self, label: str, total: int, *, unit: str = "items", enabled: bool = True, stream=None):
        self.label = label
        self.total = int(total)
        self.unit = unit
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self.tty = bool(enabled and getattr(self.stream, "isatty", lambda: False)())
        self._t0 = None
        self._drawn_at = None
        self._width = 0  # of the last frame drawn, to blank a longer one

    # -- context manager
    def __enter__(self) -> Progress:
        self._t0 = time.monotonic()
        if self.tty:
            self._draw()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.enabled:
            return
        stopped = "" if exc_type is None else f" (stopped: {exc_type.__name__})"
        if self.tty:
            self._draw(end=stopped + "\n")
        else:
            self.stream.write(self.summary() + stopped + "\n")
            self.stream.flush()

    # -- progress
    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.tty and (self.done >= self.total or self._drawn_at is None
                         or time.monotonic() - self._drawn_at >= REDRAW_S):
            self._draw()

    @property
    def elapsed(self) -> float:
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        """``<label>: <done>/<total> <unit> in <elapsed> s (<rate> <unit>/s)``"""
        return (f"{self.label}: {self.done}/{self.total} {self.unit} in {self.elapsed:.1f} s "
                f"({_number(self.rate)} {self.unit}/s)")

    def _draw(self, end: str = "") -> None:
        filled = BAR_WIDTH if self.total <= 0 else min(BAR_WIDTH, BAR_WIDTH * self.done // self.total)
        frame = (f"{self.label}: [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.done}/{self.total} "
                 f"{self.unit}, {self.elapsed:.1f} s, {_number(self.rate)} {self.unit}/s")
        pad = " " * max(0, self._width - len(frame))
        self.stream.write("\r" + frame + pad + end)
        self.stream.flush()
        self._width = len(frame)
        self._drawn_at = time.monotonic()


def track(futures, progress: Progress):
    """Yield dask futures as they complete (``distributed.as_completed``), advancing ``progress``.

    A future that failed is yielded too (its ``result()`` raises), as by as_completed.
    """
    futures = list(futures)
    if not futures:
        return
    from distributed import as_completed

    for future in as_completed(futures):
        progress.advance()
        yield future
