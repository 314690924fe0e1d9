"""Walk-forward windows: durations (``2y``, ``6m``, ``3w``, ``20d``) and the train/test spans they cut.

Pure arithmetic on int64 nanosecond timestamps (naive wall time, or UTC, as the loaders keep
them); nothing here reads files. Months and years are calendar months: ``2012-01-31 + 1m`` is
``2012-02-29`` (the day is clamped to the month's length).

For window ``k`` (0-based), with ``anchor`` the start of the data (or ``run.start``)::

    test_start  = anchor + train + k * step
    test_end    = test_start + test                                (exclusive; the last may lie past the data)
    train_start = anchor                       with --anchored (an expanding window)
                = test_start - train           otherwise (a rolling window)
    train_end   = the timestamp of the embargo-th bar before test_start (exclusive; = test_start
                  with embargo 0): the last ``embargo`` bars before the test span are used by
                  nobody, so no training label can overlap the test span
    fit_end     = where the validation split starts: the last ``val`` of [train_start, train_end)
    warmup_start= max(test_start - warmup, anchor): the backtest reads bars from here, orders only
                  from test_start

Bars are counted on the union of every input's timestamps. Windows run while ``test_start`` is at
or before the last bar; ``step`` must be at least ``test`` (test spans never overlap, so they can
be stitched into one account).
"""
from __future__ import annotations

import calendar
import datetime as _dt
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tradeloop.data.schema import NS_PER_DAY

from tradeloop.errors import ConfigError

_UNITS = {"y": "years", "m": "months", "w": "weeks", "d": "days"}
_DURATION = re.compile(r"^\s*(\d+)\s*([ymwdYMWD])\s*$")
_HELP = "expected a whole number and a unit, e.g. 2y, 6m, 3w or 20d (years, months, weeks, days)"
_EPOCH = _dt.date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class Duration:
    """A calendar span: ``n`` years, months, weeks or days."""

    n: int
    unit: str  # "y", "m", "w" or "d"

    def __str__(self) -> str:
        return f"{self.n}{self.unit}"

    def times(self, k: int) -> Duration:
        """This span ``k`` times over (``3m`` x 4 = ``12m``)."""
        return Duration(self.n * k, self.unit)


def parse_duration(text: Any, what: str = "duration") -> Duration:
    """``"2y"`` -> Duration(2, "y"); a ConfigError naming ``what`` and the text when it is not one."""
    m = _DURATION.match(str(text)) if isinstance(text, str) else None
    if m is None:
        raise ConfigError(f"{what} {text!r}: not a duration; {_HELP}")
    n = int(m.group(1))
    if n < 1:
        raise ConfigError(f"{what} {text!r}: must be longer than zero; {_HELP}")
    return Duration(n, m.group(2).lower())


def shift(ts: int, d: Duration, sign: int = 1) -> int:
    """``ts`` moved by ``d`` forward (``sign`` 1) or back (-1) on the calendar; the time of day is kept."""
    day, rem = divmod(int(ts), NS_PER_DAY)
    date = _dt.date.fromordinal(_EPOCH + day)
    try:
        if d.unit in ("y", "m"):
            months = d.n * (12 if d.unit == "y" else 1) * sign
            y, m0 = divmod(date.year * 12 + date.month - 1 + months, 12)
            date = _dt.date(y, m0 + 1, min(date.day, calendar.monthrange(y, m0 + 1)[1]))
        else:
            date = date + _dt.timedelta(days=d.n * (7 if d.unit == "w" else 1) * sign)
    except (ValueError, OverflowError):
        raise ConfigError(f"{d} from {iso(ts)} leaves the calendar (years 1..9999)") from None
    return (date.toordinal() - _EPOCH) * NS_PER_DAY + rem


def iso(ts: int) -> str:
    """int64 ns -> ``2012-01-04`` (midnight) or ``2012-01-04T09:30:00``."""
    t = np.datetime64(int(ts), "ns")
    return str(t.astype("datetime64[D]")) if int(ts) % NS_PER_DAY == 0 else str(t.astype("datetime64[s]"))


def to_ns(text: str, what: str) -> int:
    """An ISO date/time -> int64 ns; a ConfigError naming ``what`` when it is not one."""
    try:
        return int(np.datetime64(str(text), "ns").astype(np.int64))
    except ValueError:
        raise ConfigError(f"{what} {text!r}: not a date (use YYYY-MM-DD)") from None


@dataclass(frozen=True)
class Window:
    """One walk-forward window: its training span (and validation split) and its test span, int64 ns."""

    index: int
    train_start: int
    fit_end: int
    train_end: int
    warmup_start: int
    test_start: int
    test_end: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> Window:
        return cls(**d)

    def describe(self) -> dict[str, Any]:
        """The spans as ISO text (train and test ends exclusive), for manifests, metadata and people."""
        return {"window": self.index + 1, "train_start": iso(self.train_start), "validation_start": iso(self.fit_end),
                "train_end": iso(self.train_end), "warmup_start": iso(self.warmup_start),
                "test_start": iso(self.test_start), "test_end": iso(self.test_end)}


@dataclass(frozen=True)
class WindowSpec:
    """How to cut windows; serializable into the run manifest as given (``to_dict``)."""

    train: str
    test: str
    step: str | None = None      # default: test
    embargo: int = 0             # bars between the training span's end and the test span's start
    anchored: bool = False       # expanding training span from the start of the data
    warmup: str = "6m"           # bars before the test span the backtest reads to warm up
    val: Any = 0.2               # validation split: a fraction of the training span, or a duration

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def durations(self) -> tuple[Duration, Duration, Duration, Duration]:
        """(train, test, step, warmup), parsed and checked."""
        train = parse_duration(self.train, "--train")
        test = parse_duration(self.test, "--test")
        step = parse_duration(self.step, "--step") if self.step is not None else test
        warmup = parse_duration(self.warmup, "--warmup")
        if _shorter(step, test):
            raise ConfigError(f"--step {step} is shorter than --test {test}: test spans would overlap and could "
                              "not be stitched into one account; use a step at least as long as the test span")
        if isinstance(self.embargo, bool) or not isinstance(self.embargo, int) or self.embargo < 0:
            raise ConfigError(f"--embargo {self.embargo!r}: expected a whole number of bars >= 0")
        return train, test, step, warmup


def _shorter(a: Duration, b: Duration) -> bool:
    """True when ``a`` is shorter than ``b`` from every start date (compared from a fixed reference day)."""
    ref = (_dt.date(2001, 1, 1).toordinal() - _EPOCH) * NS_PER_DAY
    return shift(ref, a) < shift(ref, b)


def _val_start(spec: WindowSpec, timeline: np.ndarray, start: int, end: int) -> int:
    """Start of the validation split inside [start, end): a bar time (a fraction counts bars)."""
    val = spec.val
    if isinstance(val, str) and _DURATION.match(val):
        at = shift(end, parse_duration(val, "--val"), -1)
    else:
        try:
            frac = float(val)
        except (TypeError, ValueError):
            raise ConfigError(f"--val {val!r}: expected a fraction of the training span (0.2) or a duration "
                              f"(3m); {_HELP}") from None
        if not 0.0 < frac < 1.0:
            raise ConfigError(f"--val {val!r}: a fraction must lie strictly between 0 and 1")
        lo, hi = np.searchsorted(timeline, [start, end], "left")
        k = int(lo) + round((hi - lo) * (1.0 - frac))
        at = int(timeline[k]) if lo < k < hi else start
    if not start < at < end:
        raise ConfigError(f"--val {val!r}: the validation split must lie inside the training span "
                          f"{iso(start)} .. {iso(end)} and leave room for training before it")
    return at


def make_windows(spec: WindowSpec, timeline: np.ndarray, anchor: int | None = None) -> list[Window]:
    """Every window of ``spec`` over ``timeline`` (sorted unique int64 ns bar times of all inputs)."""
    train, test, step, warmup = spec.durations()
    timeline = np.asarray(timeline, dtype=np.int64)
    if not len(timeline):
        raise ConfigError("walk-forward: the inputs have no bars (check the files and run.start / run.end)")
    first, last = int(timeline[0]), int(timeline[-1])
    anchor = first if anchor is None else int(anchor)
    out: list[Window] = []
    k = 0
    while True:
        test_start = shift(shift(anchor, train), step.times(k)) if k else shift(anchor, train)
        if test_start > last:
            break
        test_end = shift(test_start, test)
        k += 1
        at = int(np.searchsorted(timeline, test_start, "left"))
        if at >= len(timeline) or timeline[at] >= test_end:
            continue  # no bar in this test span (a gap in the data)
        if at - spec.embargo <= 0:
            raise ConfigError(f"walk-forward: an embargo of {spec.embargo} bars leaves no training bar before "
                              f"the test span starting {iso(test_start)}")
        train_end = int(timeline[at - spec.embargo]) if spec.embargo else test_start
        train_start = anchor if spec.anchored else shift(test_start, train, -1)
        if not train_start < train_end:
            raise ConfigError(f"walk-forward: the embargo of {spec.embargo} bars swallows the whole training span "
                              f"before {iso(test_start)}")
        out.append(Window(len(out), train_start, _val_start(spec, timeline, train_start, train_end), train_end,
                          max(shift(test_start, warmup, -1), anchor), test_start, test_end))
    if not out:
        raise ConfigError(f"walk-forward: the data ({iso(first)} .. {iso(last)}) is too short for a {train} "
                          f"training span followed by a test span")
    return out
