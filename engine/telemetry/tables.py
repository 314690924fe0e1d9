"""One table style for every terminal summary (backtest, sweep, walk-forward, runs list/compare).

Rules (the same for every command):

* plain text, no colours or box characters: a title line, a header, a rule of ``-``, one line per
  row; columns are two spaces apart, numbers right-aligned, text left-aligned;
* the table fits the terminal width (:func:`terminal_width`: ``COLUMNS``, else the terminal's
  width, else :data:`PIPE_WIDTH` when stdout is not a terminal);
* a cell is never cut: when the table is too wide the least important columns (highest
  ``drop`` rank; 0 = never dropped) are dropped first and a footnote names them; when it is still
  too wide, the widest text column wraps at spaces (folds a single long word), showing every character;
* the values come formatted from the caller (``engine.metrics.format.format_metric``:
  percentages, money, counts, ratios to 3 decimals); :func:`ns_date` turns nanosecond stamps into dates.

This module is layout only (the telemetry floor), so runs/, research/ and cli/ all use it.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any, Sequence

PIPE_WIDTH = 160   # stdout not a terminal and no COLUMNS: wide enough for one line per row
MIN_WIDTH = 40
SOFT_WRAP = 24   # a text column wraps down to this before a column is dropped
HARD_WRAP = 8    # and down to this (a long word folds) when nothing more can be dropped
GAP = "  "


def terminal_width() -> int:
    """``COLUMNS`` when set, else the terminal's width, else :data:`PIPE_WIDTH` (a pipe or a file)."""
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) > 0:
        return max(MIN_WIDTH, int(env))
    try:
        if sys.stdout.isatty():
            return max(MIN_WIDTH, shutil.get_terminal_size((80, 24)).columns)
    except (AttributeError, ValueError, OSError):
        pass
    return PIPE_WIDTH


@dataclass(frozen=True)
class Column:
    """A column: its header, ``align`` ("left"/"right"), and ``drop`` rank (0 = kept; higher goes first)."""

    name: str
    align: str = "left"
    drop: int = 0


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width``: at spaces where possible, a long word folded."""
    out: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            while len(word) > width:   # fold: every character is kept
                if line:
                    out.append(line)
                    line = ""
                out.append(word[:width])
                word = word[width:]
            if not line:
                line = word
            elif len(line) + 1 + len(word) <= width:
                line += " " + word
            else:
                out.append(line)
                line = word
        out.append(line)
    return out


def _widths(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(c.name)] + [max(map(len, r[i].split("\n"))) for r in rows]) for i, c in enumerate(columns)]


def _token(rows: Sequence[Sequence[str]], i: int, limit: int) -> int:
    """The longest word of column ``i`` no longer than ``limit`` (kept whole when the column wraps)."""
    return max([len(w) for r in rows for w in r[i].split() if len(w) <= limit] or [0])


def render_table(title: str | None, columns: Sequence[Column | str], rows: Sequence[Sequence[Any]],
                 width: int | None = None, notes: Sequence[str] = (), header: bool = True) -> str:
    """The table as text whose every line fits ``width`` (default :func:`terminal_width`); see the module rules."""
    width = max(MIN_WIDTH, width or terminal_width())
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    cells = [["" if v is None else str(v) for v in r] for r in rows]
    keep = list(range(len(cols)))
    dropped: list[str] = []
    natural = _widths(cols, cells)
    soft = [n if c.align == "right" else min(n, max(SOFT_WRAP, len(c.name), _token(cells, i, 16)))
            for i, (c, n) in enumerate(zip(cols, natural))]
    hard = [max(HARD_WRAP, max([len(r[i]) for r in cells] or [0])) if c.align == "right"   # a number stays whole
            else min(n, max(HARD_WRAP, _token(cells, i, 16)))                               # a header may wrap
            for i, (c, n) in enumerate(zip(cols, natural))]

    def need(idx: list[int], mins: list[int]) -> int:
        return sum(mins[i] for i in idx) + len(GAP) * (len(idx) - 1)

    while need(keep, soft) > width:   # drop the least important columns while even wrapping won't fit
        candidates = [i for i in keep if cols[i].drop > 0]
        if not candidates:
            break
        worst = max(candidates, key=lambda i: (cols[i].drop, i))
        keep.remove(worst)
        dropped.append(cols[worst].name)
    kcols = [cols[i] for i in keep]
    kcells = [[r[i] for i in keep] for r in cells]
    widths = [natural[i] for i in keep]
    for mins in ([soft[i] for i in keep], [hard[i] for i in keep]):   # then wrap the widest text columns
        while sum(widths) + len(GAP) * (len(widths) - 1) > width:
            j = max(range(len(widths)), key=lambda k: (widths[k] - mins[k] > 0, widths[k]))
            if widths[j] <= mins[j]:
                break
            widths[j] -= 1
    lines: list[str] = []
    if title:
        lines.extend(_wrap(title, width))

    def emit(row: Sequence[str]) -> None:
        parts = [_wrap(v, w) for v, w in zip(row, widths)]
        for k in range(max(len(p) for p in parts)):
            segs = []
            for p, w, c in zip(parts, widths, kcols):
                s = p[k] if k < len(p) else ""
                segs.append(s.rjust(w) if c.align == "right" else s.ljust(w))
            lines.append(GAP.join(segs).rstrip())

    if header:
        emit([c.name for c in kcols])
        lines.append("-" * min(width, sum(widths) + len(GAP) * (len(widths) - 1)))
    for r in kcells:
        emit(r)
    if dropped:
        lines.extend(_wrap(f"(not shown, too narrow: {', '.join(dropped)}; widen the terminal or set COLUMNS)",
                           width))
    for note in notes:
        lines.extend(_wrap(note, width))
    return "\n".join(lines) + "\n"


def render_pairs(title: str | None, pairs: Sequence[tuple[str, Any]], width: int | None = None) -> str:
    """A two-column ``name  value`` table (no header), e.g. the backtest summary."""
    return render_table(title, [Column("name"), Column("value")], pairs, width=width, header=False)


def ns_date(value: Any, sep: str = " ") -> str:
    """A nanosecond UTC stamp as ``YYYY-MM-DD`` (midnight) or ``YYYY-MM-DD HH:MM:SS`` (``sep`` between); other
    values as text."""
    if isinstance(value, bool) or not isinstance(value, int):
        return "n/a" if value is None else str(value)
    try:
        d = datetime.fromtimestamp(value / 1e9, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return str(value)
    return d.strftime("%Y-%m-%d") if value % 86_400_000_000_000 == 0 else d.strftime(f"%Y-%m-%d{sep}%H:%M:%S")


def plain(value: Any) -> Any:
    """``value`` made strict-JSON-safe: NaN/inf become null, paths and other objects their text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def print_json(obj: Any, file: IO[str] | None = None) -> None:
    """One JSON object on one line of stdout (``--json``)."""
    print(json.dumps(plain(obj), allow_nan=False, ensure_ascii=False), file=file or sys.stdout)
