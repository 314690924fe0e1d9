"""Progress of long work on stderr: shown within a second of starting, then at least every few seconds.

On a terminal it is a rich bar (drawn once ``delay`` has passed, removed at the end); on a pipe or
a file it is one plain line every ``every`` seconds (``backtest: 1,200/5,000 (24%) 3s, about 9s left``).
A background thread keeps it going while no unit finishes (a first sweep point, a first training
window). ``set_quiet(True)`` (``--quiet``) turns every progress off.

The callable takes an optional ``info`` text (``epoch 3/30: val loss 0.69``, ``read a.csv``): it is
appended to the lines, and on a pipe a change of ``info`` after ``delay`` prints a line at once
(one line per epoch or per file, besides the timed ones). ``TRADELOOP_PROGRESS_DELAY`` (seconds)
changes the default ``delay``; 0 reports from the start.
"""
from __future__ import annotations

import os
import sys
import threading
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """``--quiet``: no progress of any kind in this process."""
    global _QUIET
    _QUIET = bool(quiet)


def default_delay() -> float:
    """Seconds before the first report: ``TRADELOOP_PROGRESS_DELAY`` when set to a number >= 0, else 1."""
    try:
        value = float(os.environ.get("TRADELOOP_PROGRESS_DELAY", ""))
    except ValueError:
        return 1.0
    return value if value >= 0 else 1.0


def _seconds(s: float) -> str:
    s = int(round(s))
    return f"{s}s" if s < 120 else f"{s // 60}m{s % 60:02d}s"


class LazyProgress:
    """Callable ``(done, total)``; reports on stderr once ``delay`` seconds have passed (see the module).

    ``enabled``: None (default) shows it unless quiet; False never; True always (even quiet).
    ``lines``: None (default) plain lines unless stderr is a terminal; True plain lines; False a rich bar.
    """

    def __init__(self, label: str, delay: float | None = None, enabled: bool | None = None, every: float = 2.0,
                 lines: bool | None = None) -> None:
        self.label = label
        self.delay = default_delay() if delay is None else delay
        self.every = every
        self.enabled = (not _QUIET) if enabled is None else enabled
        try:
            tty = sys.stderr.isatty()
        except (AttributeError, ValueError):
            tty = False
        self.lines = (not tty) if lines is None else lines
        self._t0 = time.perf_counter()
        self._bar: Progress | None = None
        self._task = None
        self._done, self._total = 0, 0
        self._info: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._printed = False
        self._thread: threading.Thread | None = None
        if self.enabled:
            self._thread = threading.Thread(target=self._beat, name=f"progress-{label}", daemon=True)
            self._thread.start()

    def __call__(self, done: int, total: int, info: str | None = None) -> None:
        with self._lock:
            self._done, self._total = done, total
            changed = info is not None and info != self._info
            if changed:
                self._info = info
            if self._bar is not None:
                self._bar.update(self._task, completed=done, total=total,
                                 **({"description": f"{self.label} {info}"} if changed else {}))
            elif (changed and self.enabled and self.lines and not self._stop.is_set()
                  and time.perf_counter() - self._t0 >= self.delay):
                self._line()   # one line per epoch / per file

    def _beat(self) -> None:
        if self._stop.wait(self.delay):
            return
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                if self.lines:
                    self._line()
                elif self._bar is None:
                    self._bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                         TimeRemainingColumn(), transient=True)
                    self._bar.start()
                    desc = self.label if self._info is None else f"{self.label} {self._info}"
                    self._task = self._bar.add_task(desc, total=self._total or None, completed=self._done)
            if self._stop.wait(self.every):
                return

    def _line(self, final: bool = False) -> None:
        elapsed = time.perf_counter() - self._t0
        done, total = self._done, self._total
        text = f"{self.label}: "
        if total:
            text += f"{done:,}/{total:,} ({done / total:.0%}) {_seconds(elapsed)}"
            if 0 < done < total and not final:
                text += f", about {_seconds(elapsed * (total - done) / done)} left"
        else:
            text += f"started, {_seconds(elapsed)}"
        if final:
            text += ", done"
        elif self._info:
            text += f"; {self._info}"
        try:
            print(text, file=sys.stderr, flush=True)
        except (ValueError, OSError):   # stderr closed under us: stop reporting
            self._stop.set()
        self._printed = True

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            if self._bar is not None:
                self._bar.stop()
                self._bar = None
            elif self.lines and self._printed:
                self._line(final=True)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
            self._thread = None

    def __enter__(self) -> "LazyProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
