"""Trade on a registry model's prediction: buy when P(up) is high, sell when it is low.

The strategy asks for its model in ``on_start`` (``ctx.use_predictor``); the engine runs it at
step (4) of every timestamp, one batched call over every symbol with a full window, and the
strategy reads ``ctx.predictions`` in ``on_bars``. The same code runs in backtests and live.

``train_and_backtest`` is the worked example: train on one period of bar files, backtest the
model on the next (the qbot A-share files: train 2010-2016, backtest 2017-2020).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tradeloop.data.schema import Bar
from tradeloop import Context, Param, Strategy


class ModelSignal(Strategy):
    """Long when P(up) >= enter, flat when P(up) <= exit; equal weights across symbols."""

    model = Param("", "registry model NAME@VERSION or NAME@latest")
    registry = Param("runs/models", "registry root folder")
    runtime = Param("onnx-cpu", "onnx-cpu, onnx-cpu-int8, torch-cpu, torch-cpu-bf16, torch-cuda or tensorrt")
    backup = Param("", "backup model version the health monitor switches to ('' = none)")
    p99_ms = Param(50.0, "health limit: rolling p99 latency per model call (ms)", min=0.0)
    min_accuracy = Param(0.0, "health limit: rolling live accuracy (0 = off)", min=0.0, max=1.0)
    enter = Param(0.55, "buy when P(up) >= enter", min=0.0, max=1.0)
    exit = Param(0.45, "sell when P(up) <= exit", min=0.0, max=1.0)
    exposure = Param(0.95, "share of equity invested, split equally over the symbols", min=0.0, max=1.0)
    batch_workers = Param(1, "threads of the backtest's batch inference (0: every core)", min=0)
    endpoint = Param("", "a prediction server (tradeloop serve) tcp://HOST:PORT answers instead ('' = in-process)")
    timeout_ms = Param(100.0, "with endpoint: how long to wait for the server before on_failure applies", min=0.001)
    on_failure = Param("local", "with endpoint: server lost -> run the same version here, or halt new entries",
                       choices=("local", "halt"))

    def validate(self) -> None:
        if not self.model:
            raise ValueError("model_signal: set --param model=NAME@VERSION (a model in the registry)")
        if self.exit > self.enter:
            raise ValueError(f"model_signal: need exit <= enter, got exit={self.exit} enter={self.enter}")

    def on_start(self, ctx: Context) -> None:
        from tradeloop.models.health import HealthLimits  # torch / ONNX Runtime are imported only with a model

        ctx.use_predictor(self.model, registry=self.registry, runtime=self.runtime, backup=self.backup or None,
                          limits=HealthLimits(p99_ms=self.p99_ms, min_accuracy=self.min_accuracy),
                          batch_workers=self.batch_workers or None, endpoint=self.endpoint or None,
                          timeout_ms=self.timeout_ms, on_failure=self.on_failure)
        self.weight = self.exposure / max(1, len(ctx.symbols))
        self.decisions = 0
        self.health_events: list = []

    def on_bars(self, ctx: Context, bars: list[Bar]) -> None:
        probs = ctx.predictions  # the engine ran the model once for every symbol at step (4)
        for symbol in sorted(probs):
            up = float(probs[symbol][1])
            held = ctx.position(symbol)
            self.decisions += 1
            if not held and up >= self.enter:
                ctx.order_target_percent(symbol, self.weight)
            elif held > 0 and up <= self.exit:
                ctx.close(symbol)

    def on_stop(self, ctx: Context) -> None:
        self.health_events = ctx.predictor_events


def train_and_backtest(data: list[str], registry: str, *, name: str = "qbot", train_start: str = "2010-01-01",
                       train_end: str = "2016-01-01", val_end: str = "2017-01-01", test_end: str = "2021-01-01",
                       warmup_from: str = "2016-06-01", cash: float = 1_000_000.0, runtime: str = "onnx-cpu",
                       train_overrides: dict[str, Any] | None = None, strategy_params: dict[str, Any] | None = None
                       ) -> tuple[str, Any]:
    """Train on [train_start, val_end) (validation = the last year), backtest [val_end, test_end).

    The backtest reads bars from ``warmup_from`` so the features are warm on the first trading
    day; orders start at ``val_end``. Returns (model reference, BacktestResult).
    """
    from tradeloop.data.loaders import load_bars
    from tradeloop.engine.drivers.backtest import run_backtest
    from tradeloop.models.train import TrainConfig, train

    series = [load_bars(p) for p in data]
    cfg = TrainConfig.from_dict({"name": name, "data": list(data), "registry": registry,
                                 "train_start": train_start, "train_end": train_end, "val_end": val_end,
                                 "test_end": test_end, **(train_overrides or {})})
    ref = train(cfg, series)
    lo = int(np.datetime64(warmup_from, "ns").astype(np.int64))
    hi = int(np.datetime64(test_end, "ns").astype(np.int64))
    window = [s.between(lo, hi) for s in series]
    strategy = ModelSignal(model=ref, registry=registry, runtime=runtime, **(strategy_params or {}))
    return ref, run_backtest(strategy, window, cash=cash,   # warm-up bars trade nothing (the engine refuses)
                             trade_from=int(np.datetime64(val_end, "ns").astype(np.int64)))
