"""Inline SVG charts for the HTML reports: no JavaScript, no dependency, a few kB per chart.

Every chart is one ``<svg class="chart">`` string sized by its viewBox (it scales with the page).
Long series are reduced to at most :data:`MAX_POINTS` points by keeping each bucket's minimum
and maximum, so peaks and troughs (and drawdowns) survive downsampling.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["Line", "MAX_POINTS", "downsample", "line_chart", "heatmap", "histogram", "box_plot", "bar_chart", "fmt_pct",
           "fmt_num", "fmt_x"]

W = 960                      # viewBox width
ML, MR, MT, MB = 70, 16, 30, 28
MAX_POINTS = 2 * (W - ML - MR)  # two points (min and max) per horizontal pixel
PALETTE = ("#1f5fbf", "#8a8a8a", "#1a9850", "#d62728", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
NS_PER_DAY = 86_400_000_000_000


@dataclass(frozen=True)
class Line:
    """One series of a line chart: x in int64 ns, y in data units (NaN leaves a gap)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    color: str | None = None
    fill: bool = False       # shade between the line and zero (drawdown, exposure)


def fmt_pct(v: float, digits: int = 1) -> str:
    """``0.1234`` -> ``12.3%`` (never ``-0.0%``)."""
    text = f"{v * 100:.{digits}f}%"
    return text[1:] if text.startswith("-") and not text.strip("-0.%") else text


def fmt_num(v: float) -> str:
    """A compact number: ``1.2M``, ``950k``, ``12.5``, ``0.031``."""
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.3g}B"
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.4g}"


def fmt_x(v: float) -> str:
    """A multiple: ``1.5x``."""
    return f"{v:.3g}x"


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points: the first and last point, and each bucket's min and max in x order."""
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max(max_points // 2, 1)
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    keep = [0, n - 1]
    yy = np.where(np.isnan(y), np.inf, y)
    yz = np.where(np.isnan(y), -np.inf, y)
    for a, b in zip(edges[:-1], edges[1:]):
        if b > a:
            keep.append(a + int(np.argmin(yy[a:b])))
            keep.append(a + int(np.argmax(yz[a:b])))
    idx = np.unique(np.array(keep, dtype=np.int64))
    return x[idx], y[idx]


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _y_ticks(lo: float, hi: float, target: int = 5) -> tuple[float, float, list[float]]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        pad = abs(hi) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo, target)
    lo2, hi2 = math.floor(lo / step) * step, math.ceil(hi / step) * step
    ticks = [lo2 + i * step for i in range(int(round((hi2 - lo2) / step)) + 1)]
    return lo2, hi2, ticks


_TIME_UNITS = (  # (numpy unit, step, approx ns per step, label format)
    ("h", 1, 3600e9, "%m-%d %H:00"), ("h", 6, 6 * 3600e9, "%m-%d %H:00"), ("D", 1, 86400e9, "%Y-%m-%d"),
    ("D", 7, 7 * 86400e9, "%Y-%m-%d"), ("M", 1, 30.4 * 86400e9, "%Y-%m"), ("M", 3, 91.3 * 86400e9, "%Y-%m"),
    ("M", 6, 182.6 * 86400e9, "%Y-%m"), ("Y", 1, 365.25 * 86400e9, "%Y"), ("Y", 2, 730.5 * 86400e9, "%Y"),
    ("Y", 5, 1826 * 86400e9, "%Y"), ("Y", 10, 3652 * 86400e9, "%Y"),
)


def _time_ticks(lo: int, hi: int, max_ticks: int = 10) -> list[tuple[int, str]]:
    span = max(hi - lo, 1)
    for unit, step, ns, fmt in _TIME_UNITS:
        if span / ns <= max_ticks:
            break
    t0 = np.datetime64(int(lo), "ns").astype(f"datetime64[{unit}]")
    t1 = np.datetime64(int(hi), "ns").astype(f"datetime64[{unit}]") + 1
    ticks = np.arange(t0, t1, dtype=f"datetime64[{unit}]")
    ticks = ticks[ticks.astype(np.int64) % step == 0]
    out = []
    for t in ticks:
        v = int(t.astype("datetime64[ns]").astype(np.int64))
        if lo <= v <= hi:
            out.append((v, t.astype("datetime64[s]").item().strftime(fmt)))
    return out


def _esc(text: str) -> str:
    return html.escape(str(text), quote=True)


def _svg_open(kind: str, height: int, title: str, extra: str = "") -> str:
    return (f'<svg class="chart" data-kind="{kind}" viewBox="0 0 {W} {height}" role="img" '
            f'aria-label="{_esc(title)}" preserveAspectRatio="xMidYMid meet"{extra}>'
            f'<text class="title" x="{ML}" y="18">{_esc(title)}</text>')


def _path(px: np.ndarray, py: np.ndarray) -> str:
    parts, pen = [], "M"
    for a, b in zip(px.tolist(), py.tolist()):
        if math.isnan(b):
            pen = "M"
            continue
        parts.append(f"{pen}{a:.1f} {b:.1f}")
        pen = "L"
    return "".join(parts)


def line_chart(lines: Sequence[Line], *, title: str, height: int = 260, y_fmt: Callable[[float], str] = fmt_num,
               zero_line: bool = False, empty: str = "no data", log_y: bool = False,
               warmup_until: int | None = None) -> str:
    """Time-series lines (shared time axis) with axes, grid, legend; optional shading to zero or a log y axis.

    ``warmup_until`` (int ns): the time before it is shaded grey and labelled warm-up.
    """
    lines = [ln for ln in lines if len(ln.x)]
    if not lines:
        return _empty(title, height, empty)
    xs = np.concatenate([np.asarray(ln.x, np.int64) for ln in lines])
    ys = np.concatenate([_scale(ln.y, log_y) for ln in lines])
    finite = ys[np.isfinite(ys)]
    if finite.size == 0:
        return _empty(title, height, empty)
    x0, x1 = int(xs.min()), int(xs.max())
    lo, hi = float(finite.min()), float(finite.max())
    if log_y:
        yt = [math.log10(t) for t in _log_ticks(10 ** lo, 10 ** hi)]
        pad = max((hi - lo) * 0.03, 0.01)
        lo, hi = min([lo - pad, *yt]), max([hi + pad, *yt])
    else:
        if zero_line or any(ln.fill for ln in lines):
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        lo, hi, yt = _y_ticks(lo, hi)
    pw, ph = W - ML - MR, height - MT - MB
    sx = pw / max(x1 - x0, 1)
    sy = ph / (hi - lo)

    def X(v: np.ndarray) -> np.ndarray:
        return ML + (np.asarray(v, np.float64) - x0) * sx

    def Y(v: np.ndarray) -> np.ndarray:
        return MT + (hi - np.asarray(v, np.float64)) * sy

    out = [_svg_open("line", height, title, f' data-series="{len(lines)}"')]
    out.append('<g class="grid">')
    for t in yt:
        y = float(Y(t))
        out.append(f'<line x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="yl" x="{ML - 6}" y="{y + 4:.1f}">{_esc(y_fmt(10 ** t if log_y else t))}</text>')
    for v, label in _time_ticks(x0, x1):
        x = float(X(v))
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MT}" y2="{height - MB}"/>'
                   f'<text class="xl" x="{x:.1f}" y="{height - MB + 16}">{_esc(label)}</text>')
    out.append("</g>")
    if warmup_until is not None and warmup_until > x0:
        wx = float(X(min(warmup_until, x1))) - ML
        out.append(f'<rect class="warmup" x="{ML}" y="{MT}" width="{wx:.1f}" height="{ph}" fill="#bdbdbd" '
                   f'fill-opacity="0.45"><title>warm-up (not traded, not counted)</title></rect>'
                   f'<text class="wl" x="{ML + 4}" y="{MT + 12}">warm-up</text>')
    if lo < 0 < hi and not log_y:
        y = float(Y(0.0))
        out.append(f'<line class="zero" x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}"/>')
    points = 0
    for i, ln in enumerate(lines):
        color = ln.color or PALETTE[i % len(PALETTE)]
        x, y = downsample(np.asarray(ln.x, np.int64), _scale(ln.y, log_y))
        points += len(x)
        px, py = X(x), Y(y)
        d = _path(px, py)
        if ln.fill and d:
            ok = ~np.isnan(py)
            z = float(Y(0.0))
            area = f"{d}L{px[ok][-1]:.1f} {z:.1f}L{px[ok][0]:.1f} {z:.1f}Z"
            out.append(f'<path class="area" d="{area}" fill="{color}" fill-opacity="0.25" stroke="none"/>')
        out.append(f'<path class="series" data-name="{_esc(ln.name)}" d="{d}" fill="none" stroke="{color}" '
                   f'stroke-width="1.4"><title>{_esc(ln.name)}</title></path>')
    if len(lines) > 1:                                    # legend: right-aligned on the title's row
        lx = W - MR - sum(24 + 7 * len(ln.name) for ln in lines)
        for i, ln in enumerate(lines):
            color = ln.color or PALETTE[i % len(PALETTE)]
            out.append(f'<rect x="{lx}" y="9" width="10" height="10" fill="{color}"/>'
                       f'<text class="legend" x="{lx + 14}" y="18">{_esc(ln.name)}</text>')
            lx += 24 + 7 * len(ln.name)
    out.append(f'<rect class="frame" x="{ML}" y="{MT}" width="{pw}" height="{ph}"/></svg>')
    out[0] = out[0].replace(' data-series=', f' data-points="{points}" data-series=', 1)
    return "".join(out)


def _scale(y: np.ndarray, log_y: bool) -> np.ndarray:
    """y as plotted: as is, or log10 with non-positive values left out (NaN)."""
    y = np.asarray(y, np.float64)
    if not log_y:
        return y
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y > 0, np.log10(np.where(y > 0, y, 1.0)), np.nan)


def _log_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round values (1, 2, 5 x 10^k, thinned to about ``target``) between ``lo`` and ``hi`` (> 0)."""
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mults in ((1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in mults if lo <= m * 10.0 ** k <= hi]
        if len(ticks) <= target:
            break
    if len(ticks) > target:
        step = math.ceil(len(ticks) / target)
        ticks = ticks[::step]
    if len(ticks) < 3:                      # a narrow range: round linear steps instead
        ticks = [t for t in _y_ticks(lo, hi, 4)[2] if t > 0 and lo <= t <= hi] or ticks
    return ticks or [lo, hi]


def _empty(title: str, height: int, note: str) -> str:
    return (_svg_open("empty", height, title) +
            f'<text class="note" x="{W / 2}" y="{height / 2}">{_esc(note)}</text></svg>')


def _diverging(v: float, scale: float) -> str:
    """Red for losses, green for gains, white at zero; saturates at ``scale``."""
    if not math.isfinite(v):
        return "#f4f4f4"
    t = max(-1.0, min(1.0, v / scale)) if scale > 0 else 0.0
    r0, g0, b0 = (215, 48, 39) if t < 0 else (26, 152, 80)
    a = abs(t)
    return "#%02x%02x%02x" % (round(255 + (r0 - 255) * a), round(255 + (g0 - 255) * a), round(255 + (b0 - 255) * a))


def heatmap(rows: Sequence[str], cols: Sequence[str], values: np.ndarray, *, title: str,
            fmt: Callable[[float], str] = fmt_pct) -> str:
    """A table of colored cells (e.g. years x months of returns); NaN cells are blank."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return _empty(title, 120, "no data")
    cw, ch, left = (W - ML - MR) / len(cols), 22, ML
    height = MT + 20 + ch * len(rows) + 8
    finite = np.abs(values[np.isfinite(values)])
    scale = float(np.quantile(finite, 0.95)) if finite.size else 0.0
    out = [_svg_open("heatmap", height, title, f' data-cells="{int(np.isfinite(values).sum())}"')]
    for j, c in enumerate(cols):
        out.append(f'<text class="hl" x="{left + (j + 0.5) * cw:.1f}" y="{MT + 14}">{_esc(c)}</text>')
    for i, r in enumerate(rows):
        y = MT + 20 + i * ch
        out.append(f'<text class="yl" x="{left - 6}" y="{y + 15}">{_esc(r)}</text>')
        for j, c in enumerate(cols):
            v = values[i, j]
            x = left + j * cw
            label = fmt(v) if math.isfinite(v) else ""
            out.append(f'<rect class="cell" x="{x:.1f}" y="{y}" width="{cw - 2:.1f}" height="{ch - 2}" '
                       f'fill="{_diverging(v, scale)}"><title>{_esc(r)} {_esc(c)}: {_esc(label or "n/a")}</title></rect>')
            if label:
                out.append(f'<text class="cl" x="{x + cw / 2 - 1:.1f}" y="{y + 15}">{_esc(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def histogram(values: np.ndarray, *, title: str, bins: int = 60, height: int = 240,
              x_fmt: Callable[[float], str] = fmt_pct) -> str:
    """Bars of a distribution, with lines at zero and at the mean."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return _empty(title, height, "no data")
    lo, hi = float(np.quantile(v, 0.001)), float(np.quantile(v, 0.999))
    if hi - lo < 1e-15:
        lo, hi = lo - 1e-3, hi + 1e-3
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    _, top, yt = _y_ticks(0.0, float(counts.max()), 4)
    pw, ph = W - ML - MR, height - MT - MB
    sx, sy = pw / (hi - lo), ph / top

    def X(x: float) -> float:
        return ML + (x - lo) * sx

    out = [_svg_open("histogram", height, title, f' data-bars="{int((counts > 0).sum())}"'), '<g class="grid">']
    for t in yt:
        y = MT + ph - t * sy
        out.append(f'<line x1="{ML}" x2="{W - MR}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text class="yl" x="{ML - 6}" y="{y + 4:.1f}">{int(t)}</text>')
    _, _, xt = _y_ticks(lo, hi, 8)
    for t in xt:
        if lo <= t <= hi:
            out.append(f'<text class="xl" x="{X(t):.1f}" y="{height - MB + 16}">{_esc(x_fmt(t))}</text>')
    out.append("</g>")
    for c, a, b in zip(counts.tolist(), edges[:-1].tolist(), edges[1:].tolist()):
        if c:
            h = c * sy
            color = PALETTE[3] if b <= 0 else PALETTE[2] if a >= 0 else PALETTE[1]
            out.append(f'<rect class="bar" x="{X(a):.1f}" y="{MT + ph - h:.1f}" width="{max((b - a) * sx - 1, 0.5):.1f}" '
                       f'height="{h:.1f}" fill="{color}"><title>{_esc(x_fmt(a))} to {_esc(x_fmt(b))}: {c}</title></rect>')
    mean = float(v.mean())
    if lo <= 0 <= hi:
        out.append(f'<line class="zero" x1="{X(0):.1f}" x2="{X(0):.1f}" y1="{MT}" y2="{MT + ph}"/>')
    if lo <= mean <= hi:
        out.append(f'<line class="mean" x1="{X(mean):.1f}" x2="{X(mean):.1f}" y1="{MT}" y2="{MT + ph}">'
                   f'<title>mean {_esc(x_fmt(mean))}</title></line>')
    out.append(f'<rect class="frame" x="{ML}" y="{MT}" width="{pw}" height="{ph}"/></svg>')
    return "".join(out)


def box_plot(groups: Sequence[tuple[str, np.ndarray]], *, title: str, fmt: Callable[[float], str] = fmt_pct) -> str:
    """Horizontal boxes, one per group: whiskers at the 5% and 95% quantiles, box 25%-75%, median line, min/max dots."""
    stats = []
    for name, v in groups:
        v = np.asarray(v, np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            stats.append((name, v.size, np.quantile(v, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0])))
    rh = 34
    height = MT + rh * max(len(stats), 1) + MB
    if not stats:
        return _empty(title, height, "no data")
    lo = min(float(q[0]) for _, _, q in stats)
    hi = max(float(q[-1]) for _, _, q in stats)
    lo, hi, xt = _y_ticks(min(lo, 0.0), max(hi, 0.0), 8)
    left, pw = ML + 20, W - ML - 20 - MR
    sx = pw / (hi - lo)

    def X(x: float) -> float:
        return left + (x - lo) * sx

    out = [_svg_open("box", height, title, f' data-boxes="{len(stats)}"'), '<g class="grid">']
    for t in xt:
        out.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{MT}" y2="{height - MB}"/>'
                   f'<text class="xl" x="{X(t):.1f}" y="{height - MB + 16}">{_esc(fmt(t))}</text>')
    out.append("</g>")
    if lo < 0 < hi:
        out.append(f'<line class="zero" x1="{X(0):.1f}" x2="{X(0):.1f}" y1="{MT}" y2="{height - MB}"/>')
    for i, (name, n, q) in enumerate(stats):
        y = MT + i * rh + rh / 2
        color = PALETTE[i % len(PALETTE)]
        tip = (f"{name} ({n:,}): min {fmt(q[0])}, 5% {fmt(q[1])}, 25% {fmt(q[2])}, median {fmt(q[3])}, "
               f"75% {fmt(q[4])}, 95% {fmt(q[5])}, max {fmt(q[6])}")
        out.append(f'<text class="yl" x="{left - 6}" y="{y + 4:.1f}">{_esc(name)}</text>'
                   f'<line x1="{X(q[1]):.1f}" x2="{X(q[5]):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{color}"/>'
                   f'<rect class="bar" x="{X(q[2]):.1f}" y="{y - 9:.1f}" width="{max(X(q[4]) - X(q[2]), 1):.1f}" '
                   f'height="18" fill="{color}" fill-opacity="0.6"><title>{_esc(tip)}</title></rect>'
                   f'<line x1="{X(q[3]):.1f}" x2="{X(q[3]):.1f}" y1="{y - 9:.1f}" y2="{y + 9:.1f}" stroke="#000" '
                   f'stroke-width="2"/><circle cx="{X(q[0]):.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>'
                   f'<circle cx="{X(q[6]):.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>')
    out.append(f'<rect class="frame" x="{left}" y="{MT}" width="{pw}" height="{height - MT - MB}"/></svg>')
    return "".join(out)


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str, fmt: Callable[[float], str] = fmt_num,
              height: int = 260, highlight: int | None = None) -> str:
    """One vertical bar per category (e.g. a metric per parameter value), from zero; NaN leaves a gap.

    Bars above zero are green, below red; bar ``highlight`` (an index) is drawn in the accent colour.
    """
    v = np.asarray(values, np.float64)
    if v.size == 0 or not np.isfinite(v).any():
        return _empty(title, height, "no data")
    finite = v[np.isfinite(v)]
    lo, hi, yt = _y_ticks(min(float(finite.min()), 0.0), max(float(finite.max()), 0.0), 5)
    if hi - lo <= 0:
        lo, hi = lo - 1.0, hi + 1.0
    pw, ph = W - ML - MR, height - MT - MB
    bw = pw / len(v)
    sy = ph / (hi - lo)

    def Y(y: float) -> float:
        return MT + (hi - y) * sy

    out = [_svg_open("bar", height, title, f' data-bars="{int(np.isfinite(v).sum())}"'), '<g class="grid">']
    for t in yt:
        out.append(f'<line x1="{ML}" x2="{W - MR}" y1="{Y(t):.1f}" y2="{Y(t):.1f}"/>'
                   f'<text class="yl" x="{ML - 6}" y="{Y(t) + 4:.1f}">{_esc(fmt(t))}</text>')
    out.append("</g>")
    for i, (label, y) in enumerate(zip(labels, v.tolist())):
        x = ML + i * bw
        out.append(f'<text class="xl" x="{x + bw / 2:.1f}" y="{height - MB + 16}">{_esc(label)}</text>')
        if not math.isfinite(y):
            continue
        top, bottom = Y(max(y, 0.0)), Y(min(y, 0.0))
        color = PALETTE[0] if i == highlight else PALETTE[2] if y >= 0 else PALETTE[3]
        out.append(f'<rect class="bar" x="{x + bw * 0.15:.1f}" y="{top:.1f}" width="{bw * 0.7:.1f}" '
                   f'height="{max(bottom - top, 0.5):.1f}" fill="{color}"><title>{_esc(label)}: {_esc(fmt(y))}</title>'
                   f'</rect><text class="cl" x="{x + bw / 2:.1f}" y="{top - 4:.1f}">{_esc(fmt(y))}</text>')
    if lo < 0 < hi:
        out.append(f'<line class="zero" x1="{ML}" x2="{W - MR}" y1="{Y(0):.1f}" y2="{Y(0):.1f}"/>')
    out.append(f'<rect class="frame" x="{ML}" y="{MT}" width="{pw}" height="{ph}"/></svg>')
    return "".join(out)
