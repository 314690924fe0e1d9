"""Trade on the K-line forecaster: long when the expected return over its horizon is high enough.

The strategy asks for a forecaster from the registry in ``on_start`` (``ctx.use_predictor``);
the engine forecasts every symbol with a full context at step (4) of each timestamp, in one
batched call (a backtest precomputes all of them), and ``ctx.predictions[symbol]`` is a
``Forecast(exp_return, q10, q50, q90, p_up)`` of the close ``horizon`` bars ahead
(``models/kline/``, docs/forecaster.md). Equal weights across symbols.
"""
from __future__ import annotations

from tradeloop.data.schema import Bar
from tradeloop import Context, Param, Strategy


class ForecastTrend(Strategy):
    """Long when E[return] >= enter and P(up) >= min_p_up; flat when E[return] <= exit or q90 < 0."""

    model = Param("", "registry forecaster NAME@VERSION or NAME@latest")
    registry = Param("runs/models", "registry root folder")
    runtime = Param("torch-cpu", "torch-cpu or torch-cuda (forecasters run on torch)", choices=("torch-cpu", "torch-cuda"))
    enter = Param(0.005, "buy when the expected return over the horizon >= enter", min=-1.0, max=1.0)
    exit = Param(-0.002, "sell when the expected return <= exit", min=-1.0, max=1.0)
    min_p_up = Param(0.55, "and P(up) >= min_p_up to buy", min=0.0, max=1.0)
    p99_ms = Param(250.0, "health limit: rolling p99 latency per forecast call (ms); sampling paths is slower "
                   "than a classifier", min=0.0)
    exposure = Param(0.95, "share of equity invested, split equally over the symbols", min=0.0, max=1.0)
    batch_workers = Param(1, "threads of the backtest's batch forecasts (0: every core)", min=0)

    def validate(self) -> None:
        if not self.model:
            raise ValueError("forecast_trend: set --param model=NAME@VERSION (a forecaster in the registry)")
        if self.exit > self.enter:
            raise ValueError(f"forecast_trend: need exit <= enter, got exit={self.exit} enter={self.enter}")

    def on_start(self, ctx: Context) -> None:
        from tradeloop.models.health import HealthLimits  # torch is imported only with a model

        ctx.use_predictor(self.model, registry=self.registry, runtime=self.runtime,
                          limits=HealthLimits(p99_ms=self.p99_ms), batch_workers=self.batch_workers or None)
        self.weight = self.exposure / max(1, len(ctx.symbols))
        self.decisions = 0

    def on_bars(self, ctx: Context, bars: list[Bar]) -> None:
        forecasts = ctx.predictions   # {symbol: Forecast}, one batched model call per timestamp
        for symbol in sorted(forecasts):
            f = forecasts[symbol]
            held = ctx.position(symbol)
            self.decisions += 1
            if not held and f.exp_return >= self.enter and f.p_up >= self.min_p_up:
                ctx.order_target_percent(symbol, self.weight)
            elif held > 0 and (f.exp_return <= self.exit or f.q90 < 0):
                ctx.close(symbol)
