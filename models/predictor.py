"""The in-loop predictor: streaming features per symbol, one batched model call per timestamp.

Live and in a backtest alike, the engine (or, until the engine calls it, a strategy) does, per
timestamp::

    probs = predictor.step(bars, amounts)    # update features of every symbol with a bar,
                                             # request each, run once over the full windows

or, in pieces: ``update_bars(bars)``, ``request(symbol)`` for the symbols that want a
prediction, ``run() -> {symbol: probabilities [p_down, p_up]}`` over every requested symbol
whose window is full, batched into one model call. Symbols still warming up are left out.

Backtests may instead ``precompute(series)``: features are computed once per series (batch
kernel, equal to the streaming one bit for bit) and the model runs over all windows in tasks of
``batch_task`` windows, on ``batch_workers`` threads (default 1; None: every available core;
``models/batching.py``); ``step(bars, rows=...)`` then looks the probabilities up by row. The two
paths agree (tested). Precompute calls the health monitor's active model directly: batch calls
are not live latency.

Pass ``amounts`` (symbol -> the bar's amount) when the data has an amount column: the model's
``vwap_distance`` feature was computed from it in training, and is 0 without it. ``Bar`` has no
amount field; a strategy reads it with ``ctx.field("amount")`` (as ``model_signal`` does).

With a ``HealthMonitor`` as the model, each call is timed, and each prediction is scored
``horizon`` bars later against what the close did (beyond the label threshold), so live
accuracy and latency can switch the monitor to its backup.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from tradeloop.data.schema import Bar, BarSeries

from tradeloop.models.batching import precomputed_rows, resolve_workers, run_tasks
from tradeloop.models.errors import ModelError
from tradeloop.models.features import (
    N_FEATURES,
    FeatureBank,
    FeatureSpec,
    compute_features,
    window_ends,
    windows_at,
)

MAX_BATCH = 4096
BATCH_TASK = 512  # windows per precompute task: several tasks per thread balance the load
# Live calls are padded up to one of these batch sizes (repeating the first window), and
# ``warm_up`` runs each size once before trading: a runtime's first call at a new batch size
# builds kernels for it (oneDNN: ~10 ms vs ~2 ms after), and timestamps with 1..N symbols would
# otherwise bring up to N such first calls into the health monitor's latency window.
BUCKETS = tuple(2 ** k for k in range(13))   # 1 .. 4096


def bucket(n: int) -> int:
    """The smallest bucket batch size holding ``n`` windows (n itself beyond the largest)."""
    return next((b for b in BUCKETS if b >= n), n)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [n, classes] logits (float64)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_series(model: Any, series: BarSeries, spec: FeatureSpec | None = None,
                   batch: int = MAX_BATCH) -> np.ndarray:
    """Batch path: probabilities [N, 2] for every bar of a series (NaN rows before a full window)."""
    spec = spec or model.spec
    feats = compute_features(series, spec)
    ends = window_ends(len(series), spec)
    out = np.full((len(series), 2), np.nan)
    for a in range(0, len(ends), batch):
        e = ends[a:a + batch]
        out[e] = softmax(model.predict(windows_at(feats, e, spec.lookback)))
    return out


def _thread_safe(model: Any) -> bool:
    """True for a registry model on a CPU runtime (safe to call from several threads at once).

    GPU runtimes replay CUDA graphs through shared buffers, and unknown model objects promise
    nothing: they run on one thread.
    """
    return getattr(getattr(model, "runtime", None), "device", None) == "cpu"


class Predictor:
    """Batched predictions for many symbols, fed bar by bar (see the module docs)."""

    def __init__(self, model: Any, symbols: Iterable[str], spec: FeatureSpec | None = None, *,
                 horizon: int | None = None, threshold: float = 0.0, max_batch: int = MAX_BATCH,
                 device_ring: Any = None, batch_workers: int | None = 1, batch_task: int = BATCH_TASK) -> None:
        self.model = model
        self.device_ring = device_ring  # e.g. GpuFeatureRing: rows mirrored on the model's device
        self.spec = spec or model.spec
        if self.spec.n_features != N_FEATURES:
            raise ModelError(f"Predictor: model takes {self.spec.n_features} features, features give {N_FEATURES}")
        self.symbols = sorted(symbols)
        self.bank = FeatureBank(self.symbols, self.spec)
        self.max_batch = max_batch
        self.batch_workers = resolve_workers(batch_workers)
        self.batch_task = max(1, min(int(batch_task), max_batch))
        self._requested: dict[str, None] = {}
        self.last: dict[str, np.ndarray] = {}
        self._pre: dict[str, np.ndarray] | None = None
        self.calls = 0
        self.windows_run = 0
        # live accuracy: (bar count at prediction, close then, predicted class, model) per symbol
        self._track = horizon is not None and hasattr(model, "record_outcomes")
        self.horizon, self.threshold = horizon, threshold
        self._pending: dict[str, deque[tuple[int, float, int, Any]]] = {s: deque() for s in self.symbols}
        self._close: dict[str, float] = {}

    # -- feeding bars --------------------------------------------------------------------
    def update(self, symbol: str, open: float, high: float, low: float, close: float, volume: float,
               amount: float = math.nan, ts: int = 0) -> None:
        """Feed one bar of one symbol."""
        self.bank.update([symbol], np.array([[open, high, low, close, volume, amount]], np.float64), [ts])
        self._mirror([symbol])
        self._after_bar(symbol, close, ts)

    def update_bars(self, bars: list[Bar], amounts: Mapping[str, float] | None = None) -> None:
        """Feed one timestamp's bars (one per symbol) in one kernel call."""
        if not bars:
            return
        syms = [b.symbol for b in bars]
        get = amounts.get if amounts else None
        arr = np.array([(b.open, b.high, b.low, b.close, b.volume, get(b.symbol, math.nan) if get else math.nan)
                        for b in bars], np.float64)
        self.bank.update(syms, arr, [b.ts for b in bars])
        self._mirror(syms)
        for b in bars:
            self._after_bar(b.symbol, b.close, b.ts)

    def _mirror(self, symbols: list[str]) -> None:
        """Push the symbols' newest feature rows to the device ring, if there is one."""
        if self.device_ring is None:
            return
        idx = self.bank._idx(symbols)
        L = self.spec.lookback
        self.device_ring.push(idx, self.bank.rings[idx, (self.bank.counts[idx] - 1) % L])

    def _after_bar(self, symbol: str, close: float, ts: int) -> None:
        self._close[symbol] = close
        if not self._track:
            return
        q = self._pending[symbol]
        n = int(self.bank.counts[self.bank.index[symbol]])
        active = getattr(self.model, "active", None)
        pred, actual = [], []
        while q and q[0][0] + self.horizon <= n:  # type: ignore[operator]
            _, c0, p, made_by = q.popleft()
            r = math.log(close / c0)
            if abs(r) > self.threshold and made_by is active:  # score only the active model's calls
                pred.append(p)
                actual.append(int(r > 0))
        if pred:
            self.model.record_outcomes(pred, actual, ts)

    # -- asking for predictions ------------------------------------------------------------
    def request(self, symbol: str) -> None:
        """Ask for ``symbol``'s prediction in the next ``run``."""
        if symbol not in self.bank.index:
            raise ModelError(f"Predictor: unknown symbol {symbol!r}")
        self._requested[symbol] = None

    def ready(self, symbol: str) -> bool:
        """True once ``symbol`` has a full window."""
        return self.bank.ready(symbol)

    def run(self, ts: int | None = None) -> dict[str, np.ndarray]:
        """Probabilities [p_down, p_up] for every requested symbol with a full window (one batch)."""
        syms = list(self._requested)
        self._requested.clear()
        if not syms:
            return {}
        mask = self.bank.ready_mask(syms)
        syms = [s for s, ok in zip(syms, mask) if ok]
        if not syms:
            return {}
        made_by = getattr(self.model, "active", None)  # a monitor may switch during the call
        monitored = hasattr(self.model, "record_outcomes")
        if self.device_ring is not None and getattr(self.model, "on_device", False):
            windows = self.device_ring.gather(self.bank._idx(syms))
            fn = self.model.predict_device
        else:
            windows = self.bank.windows(syms)
            fn = self.model.predict
            n = len(windows)
            if n < self.max_batch and bucket(n) > n:   # pad to a warmed-up batch size (module docs)
                windows = np.concatenate([windows, np.repeat(windows[:1], bucket(n) - n, axis=0)])
        parts = [fn(windows[a:a + self.max_batch], ts) if monitored else fn(windows[a:a + self.max_batch])
                 for a in range(0, len(windows), self.max_batch)]
        logits = np.concatenate(parts)[:len(syms)]
        self.calls += 1
        self.windows_run += len(syms)
        return self._emit(syms, softmax(logits), made_by)

    def _emit(self, syms: list[str], probs: np.ndarray, made_by: Any) -> dict[str, np.ndarray]:
        out = dict(zip(syms, probs))
        self.last.update(out)
        if self._track:
            for s, p in out.items():
                n = int(self.bank.counts[self.bank.index[s]])
                self._pending[s].append((n, self._close[s], int(p[1] > p[0]), made_by))
        return out

    def step(self, bars: list[Bar], amounts: Mapping[str, float] | None = None, *,
             symbols: Iterable[str] | None = None, rows: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """One timestamp: feed ``bars``, request their symbols (or ``symbols``), run once.

        After ``precompute``, pass ``rows`` (each symbol's current row in its series) to look
        the probabilities up instead of running the model.
        """
        wanted = [b.symbol for b in bars] if symbols is None else list(symbols)
        if self._pre is not None and rows is not None:
            out = precomputed_rows(self._pre, rows, wanted)
            self.last.update(out)
            return out
        self.update_bars(bars, amounts)
        for s in wanted:
            self.request(s)
        return self.run(bars[0].ts if bars else None)

    def warm_up(self) -> int:
        """Run every model the predictor may use (the active one and its backups) once at each
        batch size a live call can take, untimed; returns the calls made. Call it before trading."""
        sizes = [b for b in BUCKETS if b <= bucket(min(len(self.symbols), self.max_batch))]
        calls = 0
        for m in getattr(self.model, "models", [self.model]):
            if getattr(m, "on_device", False) and self.device_ring is not None:
                continue   # device runtimes capture their own batch buckets
            for b in sizes:
                m.predict(np.zeros((b, self.spec.lookback, N_FEATURES), np.float32))
            calls += len(sizes)
        return calls

    # -- backtests -------------------------------------------------------------------------
    def precompute(self, series: Iterable[BarSeries]) -> dict[str, np.ndarray]:
        """Batch path: probabilities [N, 2] per series (NaN before a full window), kept for ``step``."""
        model = getattr(self.model, "active", self.model)  # the monitor's model, untimed (module docs)
        L = self.spec.lookback
        pre: dict[str, np.ndarray] = {}

        def tasks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            # features series by series, each series' windows handed out as soon as they exist
            for s in series:
                feats = compute_features(s, self.spec)
                ends = window_ends(len(s), self.spec)
                out = pre[s.symbol] = np.full((len(s), 2), np.nan)
                yield from ((out, feats, ends[a:a + self.batch_task]) for a in range(0, len(ends), self.batch_task))

        def work(task: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
            out, feats, ends = task
            out[ends] = softmax(model.predict(windows_at(feats, ends, L)))

        run_tasks(work, tasks(), self.batch_workers if _thread_safe(model) else 1)
        self._pre = pre
        return pre


def open_predictor(registry: Any, model: str, symbols: Iterable[str], *, runtime: str = "onnx-cpu",
                   backup: str | None = None, limits: Any = None, threads: int = 1,
                   batch_workers: int | None = 1, on_switch: Any = None) -> Predictor:
    """A Predictor over registry model ``model`` (``NAME@VERSION``), with a health monitor and backup.

    A forecaster (``models/kline/``) gives a ``ForecastPredictor``: ``step`` returns
    ``{symbol: Forecast(exp_return, q10, q50, q90, p_up)}`` instead of class probabilities.

    The backup must take the same features (hash) as the primary; outcomes are scored at the
    primary's label horizon and threshold; ``on_switch(HealthEvent)`` hears of every breach (the
    engine records it in the run). ``threads``: intra-op threads of each model call;
    ``batch_workers``: threads of ``precompute`` (None: every available core). One by default: on
    the shared 2-core machine two gave no speed-up (the other core was busy with other work).
    """
    from tradeloop.models.health import HealthLimits, HealthMonitor
    from tradeloop.models.registry import Registry

    reg = registry if isinstance(registry, Registry) else Registry(registry)
    primary = reg.load(model, runtime, threads=threads)
    spare = None
    if backup:
        spare = reg.load(backup, runtime, spec=primary.spec, lookback=primary.spec.lookback, threads=threads)
        if getattr(spare, "kind", "classifier") != getattr(primary, "kind", "classifier"):
            raise ModelError(f"backup {backup} is a {spare.kind}, the primary {model} a {primary.kind}")
    label = primary.info.metadata.get("label", {})
    monitor = HealthMonitor(primary, spare, limits or HealthLimits(), on_switch=on_switch)
    symbols = sorted(symbols)
    if getattr(primary, "kind", "classifier") == "forecaster":   # a K-line forecaster (models/kline/loop.py)
        from tradeloop.models.kline.loop import open_forecast_predictor

        return open_forecast_predictor(monitor, symbols, batch_workers=batch_workers)  # type: ignore[return-value]
    if getattr(primary.spec, "kind", "bars") == "ticks":   # a model on tick windows (models/tick_predictor.py)
        from tradeloop.models.tick_predictor import TickPredictor

        return TickPredictor(monitor, symbols, primary.spec, batch_workers=batch_workers)  # type: ignore[return-value]
    ring = None
    if primary.on_device:  # torch-cuda: keep each symbol's feature rows on the GPU too
        from tradeloop.models.runtime.torch_cuda import GpuFeatureRing

        ring = GpuFeatureRing(len(symbols), primary.spec.lookback, N_FEATURES, device=primary.runtime.device)
    return Predictor(monitor, symbols, primary.spec, horizon=label.get("horizon"),
                     threshold=float(label.get("threshold", 0.0)), device_ring=ring, batch_workers=batch_workers)
