"""The forecaster in the engine's loop: what ``open_predictor`` returns for a forecaster model.

``ForecastPredictor`` keeps each symbol's last ``lookback`` raw bars (OHLCV + amount; the amount
filled as ``spec.fill_amount`` says where a bar has none) and, per timestamp, runs the model once
over every symbol with a full window (``step``), as the classifier ``Predictor`` does; a
backtest ``precompute``s every bar's forecast of every series in tasks of ``batch_task``
windows and ``step(bars, rows=...)`` looks them up. ``ctx.predictions[symbol]`` is a
:class:`Forecast` (expected return of the close over the model's horizon, its q10/q50/q90 and
P(up)). With a health monitor, each forecast's direction (P(up) > 0.5) is scored ``horizon`` bars
later against the close, so live accuracy can switch to the backup version.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from tradeloop.data.schema import Bar, BarSeries

from tradeloop.models.batching import precomputed_rows, resolve_workers, run_tasks
from tradeloop.models.errors import ModelError
from tradeloop.models.kline.spec import CLOSE, N_FIELDS, OUTPUTS, KlineSpec, bar_matrix, fill_amount

BATCH_TASK = 256


class Forecast(NamedTuple):
    """One symbol's forecast at one bar: simple returns of the close ``horizon`` bars ahead."""

    exp_return: float
    q10: float
    q50: float
    q90: float
    p_up: float


def _forecasts(syms: list[str], out: np.ndarray) -> dict[str, Forecast]:
    return {s: Forecast(*(float(x) for x in row)) for s, row in zip(syms, out)}


class ForecastPredictor:
    """Batched forecasts for many symbols, fed bar by bar (see the module docs)."""

    kind = "forecast"

    def __init__(self, model: Any, symbols: Iterable[str], spec: KlineSpec, *, horizon: int | None = None,
                 max_batch: int = 4096, batch_workers: int | None = 1, batch_task: int = BATCH_TASK) -> None:
        self.model = model
        self.spec = spec
        self.outputs = OUTPUTS
        self.symbols = sorted(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        L = spec.lookback
        self.rings = np.zeros((len(self.symbols), L, N_FIELDS), np.float64)
        self.counts = np.zeros(len(self.symbols), np.int64)
        self.max_batch = max_batch
        self.batch_workers = resolve_workers(batch_workers)
        self.batch_task = max(1, int(batch_task))
        self.last: dict[str, Forecast] = {}
        self._pre: dict[str, np.ndarray] | None = None
        self.calls = 0
        self.horizon = horizon
        self._track = horizon is not None and hasattr(model, "record_outcomes")
        self._pending: dict[str, deque[tuple[int, float, int, Any]]] = {s: deque() for s in self.symbols}
        self._close: dict[str, float] = {}

    # -- feeding bars --------------------------------------------------------------------
    def update_bars(self, bars: list[Bar], amounts: Mapping[str, float] | None = None) -> None:
        """Feed one timestamp's bars (one per symbol)."""
        L = self.spec.lookback
        for b in bars:
            i = self.index.get(b.symbol)
            if i is None:
                raise ModelError(f"ForecastPredictor: unknown symbol {b.symbol!r}")
            a = amounts.get(b.symbol, math.nan) if amounts else math.nan
            row = fill_amount(np.array([b.open, b.high, b.low, b.close, b.volume, a], np.float64))
            self.rings[i, self.counts[i] % L] = row
            self.counts[i] += 1
            self._after_bar(b.symbol, b.close, b.ts)

    def _after_bar(self, symbol: str, close: float, ts: int) -> None:
        self._close[symbol] = close
        if not self._track:
            return
        q = self._pending[symbol]
        n = int(self.counts[self.index[symbol]])
        active = getattr(self.model, "active", None)
        pred, actual = [], []
        while q and q[0][0] + self.horizon <= n:  # type: ignore[operator]
            _, c0, p, made_by = q.popleft()
            if close != c0 and made_by is active:
                pred.append(p)
                actual.append(int(close > c0))
        if pred:
            self.model.record_outcomes(pred, actual, ts)

    def ready(self, symbol: str) -> bool:
        """True once ``symbol`` has a full window."""
        return bool(self.counts[self.index[symbol]] >= self.spec.lookback)

    def windows(self, symbols: list[str]) -> np.ndarray:
        """float32 [n, lookback, 6]: each symbol's last ``lookback`` bars, oldest first."""
        L = self.spec.lookback
        idx = np.array([self.index[s] for s in symbols], np.int64)
        order = (self.counts[idx, None] + np.arange(L)) % L
        return self.rings[idx[:, None], order].astype(np.float32)

    # -- forecasts -------------------------------------------------------------------------
    def run(self, symbols: list[str], ts: int | None = None) -> dict[str, Forecast]:
        """Forecasts of every symbol in ``symbols`` with a full window, in one batched model call."""
        syms = [s for s in symbols if self.ready(s)]
        if not syms:
            return {}
        made_by = getattr(self.model, "active", None)
        monitored = hasattr(self.model, "record_outcomes")
        w = self.windows(syms)
        parts = [self.model.predict(w[a:a + self.max_batch], ts) if monitored else self.model.predict(w[a:a + self.max_batch])
                 for a in range(0, len(w), self.max_batch)]
        self.calls += 1
        out = _forecasts(syms, np.concatenate(parts))
        self.last.update(out)
        if self._track:
            for s, f in out.items():
                if f.p_up == f.p_up:
                    self._pending[s].append((int(self.counts[self.index[s]]), self._close[s], int(f.p_up > 0.5),
                                             made_by))
        return out

    def step(self, bars: list[Bar], amounts: Mapping[str, float] | None = None, *,
             symbols: Iterable[str] | None = None, rows: Mapping[str, int] | None = None) -> dict[str, Forecast]:
        """One timestamp: feed ``bars`` and forecast their symbols (or ``symbols``); after
        ``precompute``, pass ``rows`` (each symbol's row in its series) to look them up instead."""
        wanted = [b.symbol for b in bars] if symbols is None else list(symbols)
        if self._pre is not None and rows is not None:
            out = {s: Forecast(*(float(x) for x in row)) for s, row in precomputed_rows(self._pre, rows, wanted).items()}
            self.last.update(out)
            return out
        self.update_bars(bars, amounts)
        return self.run(wanted, bars[0].ts if bars else None)

    def warm_up(self) -> int:
        """Run every model the predictor may use once at the symbol count, untimed; the calls made."""
        L = self.spec.lookback
        w = np.ones((min(len(self.symbols), self.max_batch) or 1, L, N_FIELDS), np.float32)
        models = getattr(self.model, "models", [self.model])
        for m in models:
            m.predict(w)
        return len(models)

    # -- backtests -------------------------------------------------------------------------
    def precompute(self, series: Iterable[BarSeries]) -> dict[str, np.ndarray]:
        """Forecast outputs [N, 5] per series (NaN before a full window), kept for ``step``."""
        model = getattr(self.model, "active", self.model)    # untimed: batch calls are not live latency
        L = self.spec.lookback
        pre: dict[str, np.ndarray] = {}

        def tasks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            for s in series:
                bars = bar_matrix(s)
                out = pre[s.symbol] = np.full((len(s), len(OUTPUTS)), np.nan)
                ends = np.arange(L - 1, len(s))
                yield from ((out, bars, ends[a:a + self.batch_task]) for a in range(0, len(ends), self.batch_task))

        def work(task: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
            out, bars, ends = task
            view = np.lib.stride_tricks.sliding_window_view(bars, (L, N_FIELDS))[:, 0]
            out[ends] = model.predict(np.ascontiguousarray(view[ends - (L - 1)], np.float32))

        safe = getattr(getattr(model, "runtime", None), "device", None) == "cpu"
        run_tasks(work, tasks(), self.batch_workers if safe else 1)
        self._pre = pre
        return pre


def open_forecast_predictor(monitor: Any, symbols: Iterable[str], *, batch_workers: int | None = 1) -> ForecastPredictor:
    """A ForecastPredictor over a health monitor whose active model is a LoadedForecaster."""
    primary = monitor.active
    return ForecastPredictor(monitor, symbols, primary.spec, horizon=primary.horizon, batch_workers=batch_workers)


__all__ = ["CLOSE", "Forecast", "ForecastPredictor", "open_forecast_predictor"]
