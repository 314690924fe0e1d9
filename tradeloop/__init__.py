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

from pathlib import Path
from typing import TYPE_CHECKING, Any

# In a source checkout this folder holds only the package's own files and the subpackages are the
# repository's top-level folders (installed, pyproject's package-dir maps them here). Python run from
# the checkout finds this folder first, so point the package at the checkout too, or `tradeloop.engine`
# would not import there. An installed tradeloop has engine/ inside and is left as it is.
_here = Path(__file__).resolve().parent
if not (_here / "engine").is_dir() and (_here.parent / "engine" / "__init__.py").is_file() \
        and (_here.parent / "pyproject.toml").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 (the package's own __path__)

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
