"""A predictor fed ticks: training on tick windows, batch precompute for backtests, per-tick live.

``train_ticks`` labels each tick by the sign of the mid's move over the next ``horizon`` ticks
beyond ``threshold`` (log return; no label inside the dead zone or when the move reads past the
split), splits each series by tick count (training, then validation, then test), trains a small
network with :func:`tradeloop.models.train._epochs` and stores it in the registry with its
:class:`TickFeatureSpec` (``features.json`` has ``kind: ticks``).

``TickPredictor`` (what ``open_predictor`` returns for such a model):

- backtest: ``precompute(tick_series)`` computes every series' features with the batch kernel
  (rows read only ticks <= t) and runs the model over all full windows in tasks of
  ``batch_task`` windows; ``at(symbol, row)`` looks a tick's probabilities up.
- live: ``update_tick(tick)`` feeds the tick to the symbol's streaming state (same kernel, bit for
  bit) and, once its window is full, runs the model on that one window; ``latest`` holds each
  symbol's probabilities at its last tick (absent while it warms up).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from tradeloop.data.schema import TickSeries

from tradeloop.models.batching import resolve_workers, run_tasks
from tradeloop.models.dataset import Samples, require
from tradeloop.models.errors import ModelError, TrainingError
from tradeloop.models.features import windows_at
from tradeloop.models.labels import NO_LABEL, make_labels, previous_sign
from tradeloop.models.tick_features import TickFeatureSpec, TickFeatureStream, compute_tick_features

BATCH_TASK = 512


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (predictor.softmax's operations; that module imports this one)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def tick_mids(ticks: TickSeries) -> np.ndarray:
    """The mid the feature kernel uses at every tick (quotes' mean, else trade price, else carried)."""
    b = np.asarray(ticks.bid, np.float64)
    a = np.asarray(ticks.ask, np.float64)
    p = np.asarray(ticks.price, np.float64)
    q = (b > 0) & (a > 0) & np.isfinite(b) & np.isfinite(a) & (a >= b)
    mid = np.where(q, (b + a) * 0.5, np.where((p > 0) & np.isfinite(p), p, np.nan))
    idx = np.where(np.isfinite(mid), np.arange(len(mid)), 0)
    np.maximum.accumulate(idx, out=idx)
    return mid[idx]


# -- training ------------------------------------------------------------------------------

def _split(items: list[tuple[TickSeries, np.ndarray, np.ndarray]], spec: TickFeatureSpec, horizon: int,
           threshold: float, lo_frac: float, hi_frac: float) -> Samples:
    xs, ys, tss, syms, prevs = [], [], [], [], []
    for k, (s, feats, mid) in enumerate(items):
        n = len(s)
        lo, hi = max(int(n * lo_frac), spec.min_bars - 1), int(n * hi_frac)
        if hi <= lo:
            continue
        labels = make_labels(mid, horizon, threshold, end=hi)
        t = np.arange(lo, hi)
        t = t[labels[lo:hi] != NO_LABEL]
        if not len(t):
            continue
        xs.append(windows_at(feats, t, spec.lookback))
        ys.append(labels[t].astype(np.int64))
        tss.append(s.ts[t])
        syms.append(np.full(len(t), k, np.int32))
        prevs.append(previous_sign(mid, horizon)[t].astype(np.int64))
    if not xs:
        return Samples(np.empty((0, spec.lookback, spec.n_features), np.float32), np.empty(0, np.int64),
                       np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int64))
    return Samples(np.concatenate(xs), np.concatenate(ys), np.concatenate(tss), np.concatenate(syms),
                   np.concatenate(prevs))


def train_ticks(name: str, ticks: list[TickSeries], spec: TickFeatureSpec | None = None, *,
                registry: str = "runs/models", horizon: int = 10, threshold: float = 0.0,
                net: dict[str, Any] | None = None, epochs: int = 3, batch_size: int = 256, lr: float = 3e-3,
                seed: int = 0, threads: int | None = 1, splits: tuple[float, float] = (0.6, 0.8),
                onnx: bool = True) -> str:
    """Train a network on tick windows and store it; ``NAME@VERSION`` (module docs)."""
    from tradeloop.models._deps import require_torch
    from tradeloop.models.nets import NetConfig, build_net
    from tradeloop.models.registry import Registry
    from tradeloop.models.train import TrainConfig, _epochs, _metrics, _reporter

    torch = require_torch("training")
    spec = spec or TickFeatureSpec()
    a, b = splits
    if not 0.0 < a < b < 1.0:
        raise TrainingError(f"train_ticks: splits must be 0 < train_end < val_end < 1, got {splits!r}")
    cfg = TrainConfig(name=name, data=[t.source or t.symbol for t in ticks], train_end=f"{a:.0%} of ticks",
                      val_end=f"{b:.0%} of ticks", registry=registry, horizon=horizon, threshold=threshold,
                      features=spec.to_dict(), net=net or {"kind": "conv_transformer", "sizes": {}}, epochs=epochs,
                      batch_size=batch_size, lr=lr, seed=seed, device="cpu", amp=False, threads=threads,
                      progress=False, patience=epochs)
    items = [(s, compute_tick_features(s, spec), tick_mids(s)) for s in ticks]
    train = _split(items, spec, horizon, threshold, 0.0, a)
    val = _split(items, spec, horizon, threshold, a, b)
    test = _split(items, spec, horizon, threshold, b, 1.0)
    hint = f"each series needs {spec.min_bars} ticks before a full window, plus {horizon} for a label"
    require(train, "training", max(batch_size // 4, 8), hint)
    require(val, "validation", 4, hint)
    if len(np.unique(train.y)) < 2:
        raise TrainingError("the training split has labels of one class only; lower the threshold or add data")
    net_config = NetConfig.from_dict(cfg.net)
    prev_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(int(threads))
        torch.manual_seed(seed)
        model = build_net(net_config, spec.n_features, spec.lookback)
        model.norm_in.fit(torch.from_numpy(train.x))
        history: list[dict[str, float]] = []
        with _reporter(False, None) as rep:
            _, state = _epochs(model, cfg, train, val, "cpu", lr, epochs, "train", rep, history, epochs)
        model.load_state_dict(state)
        model = model.eval()
        metrics = _metrics(model, train, val, test if len(test) else None, cfg, history)
    finally:
        torch.set_num_threads(prev_threads)
    meta = {"label": {"horizon": horizon, "threshold": threshold, "on": "mid", "unit": "ticks"},
            "data": [{"symbol": s.symbol, "path": s.source, "rows": len(s)} for s in ticks],
            "metrics": metrics, "history": history}
    ref = Registry(registry).save(name, model, spec, net_config, train_config=cfg.to_dict(), metadata=meta,
                                  onnx=onnx, check_windows=(test if len(test) else val).x)
    return str(ref)


# -- prediction ----------------------------------------------------------------------------

class TickPredictor:
    """Probabilities [p_down, p_up] per tick for tick symbols (module docs)."""

    kind = "ticks"

    def __init__(self, model: Any, symbols: Iterable[str], spec: TickFeatureSpec | None = None, *,
                 batch_workers: int | None = 1, batch_task: int = BATCH_TASK) -> None:
        self.model = model
        self.spec = spec or model.spec
        if getattr(self.spec, "kind", "bars") != "ticks":
            raise ModelError("TickPredictor: the model's features are not tick features")
        self.symbols = sorted(symbols)
        self.streams = {s: TickFeatureStream(self.spec, s) for s in self.symbols}
        self.batch_workers = resolve_workers(batch_workers)
        self.batch_task = max(1, int(batch_task))
        self.latest: dict[str, np.ndarray] = {}
        self._pre: dict[str, np.ndarray] | None = None
        self._monitored = hasattr(model, "record_outcomes")
        self.calls = 0

    # -- live ------------------------------------------------------------------------------
    def update_tick(self, tick: Any) -> np.ndarray | None:
        """Feed one tick (a ``Tick``); its symbol's probabilities now, or None while warming up."""
        s = tick.symbol
        st = self.streams.get(s)
        if st is None:
            return None   # not a symbol the predictor serves (a bar symbol)
        st.update(tick.price, tick.size, tick.bid, tick.ask, tick.bid_size, tick.ask_size)
        if not st.ready:
            self.latest.pop(s, None)
            return None
        w = st.window()
        logits = self.model.predict(w, tick.ts) if self._monitored else self.model.predict(w)
        self.calls += 1
        p = _softmax(logits)[0]
        self.latest[s] = p
        return p

    def warm_up(self) -> int:
        """Run every model once on a zero window (batch 1, the live size), untimed."""
        models = getattr(self.model, "models", [self.model])
        for m in models:
            m.predict(np.zeros((1, self.spec.lookback, self.spec.n_features), np.float32))
        return len(models)

    # -- backtests -------------------------------------------------------------------------
    def precompute(self, series: Iterable[TickSeries]) -> dict[str, np.ndarray]:
        """Probabilities [N, 2] per tick series (NaN before a full window), kept for ``at``."""
        model = getattr(self.model, "active", self.model)
        L = self.spec.lookback
        pre: dict[str, np.ndarray] = {}

        def tasks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            for s in series:
                if s.symbol not in self.streams:
                    continue
                feats = compute_tick_features(s, self.spec)
                ends = np.arange(self.spec.min_bars - 1, len(s), dtype=np.int64)
                out = pre[s.symbol] = np.full((len(s), 2), np.nan)
                yield from ((out, feats, ends[a:a + self.batch_task]) for a in range(0, len(ends), self.batch_task))

        def work(task: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
            out, feats, ends = task
            out[ends] = _softmax(model.predict(windows_at(feats, ends, L)))

        safe = getattr(getattr(model, "runtime", None), "device", None) == "cpu"
        run_tasks(work, tasks(), self.batch_workers if safe else 1)
        self._pre = pre
        return pre

    def at(self, symbol: str, row: int) -> np.ndarray | None:
        """The precomputed probabilities of ``symbol``'s tick ``row`` (None before a full window)."""
        p = self._pre.get(symbol) if self._pre is not None else None
        if p is None or not 0 <= row < len(p) or p[row, 0] != p[row, 0]:
            return None
        return p[row]


class TickPredictions(Mapping):
    """``ctx.predictions`` in a tick backtest: each symbol's precomputed probabilities at its current
    tick (the driver's ``tick_rows``), looked up when read; absent while the symbol warms up."""

    def __init__(self, predictor: TickPredictor, rows: Mapping[str, int]) -> None:
        self._p, self._rows = predictor, rows

    def __getitem__(self, symbol: str) -> np.ndarray:
        p = self._p.at(symbol, self._rows.get(symbol, -1))
        if p is None:
            raise KeyError(symbol)
        return p

    def get(self, symbol: str, default: Any = None) -> Any:
        p = self._p.at(symbol, self._rows.get(symbol, -1))
        return default if p is None else p

    def __iter__(self) -> Iterator[str]:
        return (s for s in self._p.symbols if self.get(s) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"TickPredictions({dict(self)!r})"
