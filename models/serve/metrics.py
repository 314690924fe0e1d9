"""Prometheus metrics of the prediction service, kept per model and rendered in the text format.

Everything is updated on the server's event loop thread only (the batcher hands results back to
it), so no locks. Per model: requests and errors (by code) counted, queue depth, a histogram of
batch sizes (windows per model call) and of request latency (receipt to reply), rolling
p50/p90/p99 latency (a summary over the last ``window`` requests), the version in service and
switches to the backup. ``render`` writes exposition format 0.0.4 (``text/plain; version=0.0.4``).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
QUANTILES = (0.5, 0.9, 0.99)


@dataclass
class Histogram:
    """Cumulative-bucket histogram (Prometheus semantics)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float, times: int = 1) -> None:
        """Count ``value`` ``times`` times."""
        for i, b in enumerate(self.bounds):
            if value <= b:
                self.counts[i] += times
                break
        self.total += value * times
        self.n += times

    def lines(self, name: str, labels: str) -> list[str]:
        out, acc = [], 0
        for b, c in zip(self.bounds, self.counts):
            acc += c
            out.append(f'{name}_bucket{{{labels},le="{_num(b)}"}} {acc}')
        out += [f'{name}_bucket{{{labels},le="+Inf"}} {self.n}', f"{name}_sum{{{labels}}} {_num(self.total)}",
                f"{name}_count{{{labels}}} {self.n}"]
        return out


@dataclass
class ModelMetrics:
    """The counters of one served model."""

    window: int = 2048
    requests: int = 0
    windows: int = 0
    batches: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    queue_depth: int = 0
    switches: int = 0
    swaps: int = 0
    version: str = ""
    backup_active: bool = False
    batch_sizes: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    recent: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.window)

    def error(self, code: str) -> None:
        """Count one failed request."""
        self.errors[code] = self.errors.get(code, 0) + 1

    def answered(self, seconds: float) -> None:
        """One request answered, ``seconds`` after it was read."""
        self.requests += 1
        self.latency.observe(seconds)
        self.recent.append(seconds)

    def batch(self, size: int) -> None:
        """One model call over ``size`` windows."""
        self.batches += 1
        self.windows += size
        self.batch_sizes.observe(size)

    def quantiles(self) -> dict[float, float]:
        """Rolling latency quantiles in seconds (NaN before any request)."""
        if not self.recent:
            return {q: math.nan for q in QUANTILES}
        v = np.percentile(np.fromiter(self.recent, float), [q * 100 for q in QUANTILES])
        return dict(zip(QUANTILES, map(float, v)))


def _num(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    return repr(float(v)) if not float(v).is_integer() else str(int(v)) if abs(v) < 1e15 else repr(float(v))


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(models: dict[str, ModelMetrics], *, ready: bool, connections: int, rejected: int) -> str:
    """Every metric of the server as Prometheus exposition text."""
    P = "tradeloop_serve_"
    out = [f"# HELP {P}ready 1 when every model is loaded and warmed up", f"# TYPE {P}ready gauge",
           f"{P}ready {int(ready)}",
           f"# HELP {P}connections open binary-protocol connections", f"# TYPE {P}connections gauge",
           f"{P}connections {connections}",
           f"# HELP {P}connections_rejected_total connections closed for a protocol violation, a slow or "
           "idle peer, or the connection limit", f"# TYPE {P}connections_rejected_total counter",
           f"{P}connections_rejected_total {rejected}"]

    def family(name: str, kind: str, text: str, rows: list[str]) -> None:
        out.extend([f"# HELP {P}{name} {text}", f"# TYPE {P}{name} {kind}", *rows])

    items = sorted(models.items())
    lab = {n: f'model="{_esc(n)}"' for n, _ in items}
    family("requests_total", "counter", "requests answered", [f"{P}requests_total{{{lab[n]}}} {m.requests}"
                                                              for n, m in items])
    family("windows_total", "counter", "windows run", [f"{P}windows_total{{{lab[n]}}} {m.windows}"
                                                       for n, m in items])
    family("errors_total", "counter", "requests answered with an error, by code",
           [f'{P}errors_total{{{lab[n]},code="{_esc(c)}"}} {k}' for n, m in items for c, k in sorted(m.errors.items())])
    family("queue_depth", "gauge", "requests waiting for a batch", [f"{P}queue_depth{{{lab[n]}}} {m.queue_depth}"
                                                                    for n, m in items])
    rows: list[str] = []
    for n, m in items:
        rows += m.batch_sizes.lines(f"{P}batch_size", lab[n])
    family("batch_size", "histogram", "windows per model call", rows)
    rows = []
    for n, m in items:
        rows += m.latency.lines(f"{P}latency_seconds", lab[n])
    family("latency_seconds", "histogram", "request latency, frame read to reply written", rows)
    rows = []
    for n, m in items:
        rows += [f'{P}latency_recent_seconds{{{lab[n]},quantile="{q}"}} {_num(v)}' for q, v in m.quantiles().items()]
        rows += [f"{P}latency_recent_seconds_sum{{{lab[n]}}} {_num(sum(m.recent))}",
                 f"{P}latency_recent_seconds_count{{{lab[n]}}} {len(m.recent)}"]
    family("latency_recent_seconds", "summary", "latency quantiles over the most recent requests", rows)
    family("model_version", "gauge", "the version in service (1) and whether it is the backup",
           [f'{P}model_version{{{lab[n]},version="{_esc(m.version)}",backup="{str(m.backup_active).lower()}"}} 1'
            for n, m in items])
    family("backup_switches_total", "counter", "health-monitor switches to the backup version",
           [f"{P}backup_switches_total{{{lab[n]}}} {m.switches}" for n, m in items])
    family("swaps_total", "counter", "hot swaps and rollbacks", [f"{P}swaps_total{{{lab[n]}}} {m.swaps}"
                                                                for n, m in items])
    return "\n".join(out) + "\n"
