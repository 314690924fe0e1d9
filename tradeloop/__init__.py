"""tradeloop: an event-driven backtesting and live-trading engine.

Strategy authors need only this package's top level::

    from tradeloop import Strategy, Param, Context

The subpackages, one job each (data flows down this list):

- ``tradeloop.data``: market value types, file loaders and validation, the Parquet catalog,
  indicators, MQTT market data.
- ``tradeloop.brokers``: venues behind one contract (``tradeloop.brokers.base``): the simulated fill
  engine, the FIX 4.4 adapter, the exchange simulator; commission, slippage and market rules.
- ``tradeloop.risk``: pre-trade checks, review of large orders, halts, drawdown stops.
- ``tradeloop.models``: features, networks, training, runtimes, the registry, the predictor.
- ``tradeloop.engine``: the event loop, its drivers, run recording, metrics, reports, research
  runs, live trading and the command line.
- ``tradeloop.strategies``: example strategies.

Names are imported lazily, so ``import tradeloop`` costs nothing and imports no subpackage.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Context", "Param", "PredictorSpec", "Strategy"]

if TYPE_CHECKING:  # pragma: no cover
    from tradeloop.engine.loop.context import Context
    from tradeloop.engine.loop.strategy import Param, PredictorSpec, Strategy


def __getattr__(name: str) -> Any:
    if name == "Context":
        from tradeloop.engine.loop.context import Context
        return Context
    if name in ("Param", "PredictorSpec", "Strategy"):
        from tradeloop.engine.loop import strategy
        return getattr(strategy, name)
    raise AttributeError(f"module 'tradeloop' has no attribute {name!r}")
