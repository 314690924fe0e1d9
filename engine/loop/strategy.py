"""The ``Strategy`` base class that strategy authors subclass, and its declared parameters.

A strategy declares parameters as class attributes (``fast = Param(10, "fast SMA period")``),
and the model it reads, if any (``predictor = "qbot@latest"`` or a :class:`PredictorSpec`),
overrides the callbacks it needs, and places orders through the context it is handed. It
never sees event plumbing: the same subclass runs in backtests and live trading.
"""
from __future__ import annotations

import math
import os
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tradeloop.errors import ConfigError, Range, StrategyError

if TYPE_CHECKING:  # pragma: no cover
    from tradeloop.brokers.orders import Fill, Order
    from tradeloop.data.schema import Bar, Tick

    from tradeloop.engine.loop.context import Context


class Param:
    """A strategy parameter: default value, its type (taken from the default), a doc line and its range.

    ``min``/``max`` bound a number (inclusive), ``choices`` lists the allowed values:
    ``Param(10, "fast SMA", min=1)``, ``Param("fixed", "sizing", choices=("fixed", "allin"))``.
    A value out of range is a ConfigError naming the parameter; a float must also be finite.
    """

    def __init__(self, default: Any, doc: str = "", type: type | None = None, *, min: float | None = None,
                 max: float | None = None, choices: tuple[Any, ...] | list[Any] | None = None) -> None:
        self.default = default
        self.doc = doc
        self.type = type or (float if isinstance(default, float) else builtin_type(default))
        self.name = ""
        self.range = Range(lo=min, hi=max, choices=tuple(choices or ())) if (
            min is not None or max is not None or choices) else None

    def check(self, value: Any) -> Any:
        """``value`` if it is in this parameter's range (and finite); else a ConfigError naming the parameter."""
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"parameter {self.name!r} must be a finite number, got {value!r}")
        if self.range is not None and value is not None and not self.range.allows(value):
            raise ConfigError(f"parameter {self.name!r} must be {self.range.describe()}, not {value!r}")
        return value

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        return obj.params[self.name]

    def coerce(self, value: Any) -> Any:
        """Convert a CLI/TOML value (often a string) to the parameter's type, naming it on failure."""
        if isinstance(value, str) and self.type is not str:
            text = value.strip()
            try:
                if self.type is bool:
                    if text.lower() in ("1", "true", "yes", "on"):
                        return True
                    if text.lower() in ("0", "false", "no", "off"):
                        return False
                    raise ValueError(text)
                if self.type is int:
                    f = float(text)
                    if not f.is_integer():
                        raise ValueError(text)
                    return int(f)
                return self.type(text)
            except ValueError:
                raise ConfigError(f"parameter {self.name!r} expects {self.type.__name__}, got {value!r}") from None
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if self.type is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if value is not None and self.default is not None and (
                not isinstance(value, self.type) or (isinstance(value, bool) and self.type is not bool)):
            raise ConfigError(f"parameter {self.name!r} expects {self.type.__name__}, got {value!r}")
        return value


@dataclass(frozen=True)
class PredictorSpec:
    """The registry model a strategy reads at step (4), its runtime, batch policy and server (if any).

    Declared on the class (``predictor = PredictorSpec("qbot@latest", runtime="onnx-cpu")``; a
    plain ``"NAME@VERSION"`` string means the defaults), the engine opens it before ``on_start``.
    A model chosen by a parameter is opened in ``on_start`` with ``ctx.use_predictor`` instead.
    """

    model: str
    registry: str = "runs/models"
    runtime: str = "onnx-cpu"
    backup: str | None = None
    batch_workers: int | None = 1   # threads of a backtest's batch precompute (None: every core)
    endpoint: str | None = None     # "tcp://HOST:PORT": a prediction server answers (docs/serving.md)
    timeout_ms: float = 100.0       # ... within this, else on_failure applies:
    on_failure: str = "local"       # "local" (the same version run here) or "halt" (no new entries)

    def __post_init__(self) -> None:
        if self.on_failure not in ("local", "halt"):
            raise ValueError(f"PredictorSpec.on_failure must be 'local' or 'halt', got {self.on_failure!r}")
        if not self.timeout_ms > 0:
            raise ValueError(f"PredictorSpec.timeout_ms must be > 0, got {self.timeout_ms!r}")

    @classmethod
    def of(cls, declared: "str | PredictorSpec", owner: str) -> "PredictorSpec":
        """A strategy's ``predictor`` attribute as a spec, or a ValueError naming the strategy."""
        if isinstance(declared, cls):
            return declared
        if isinstance(declared, str) and declared:
            return cls(declared)
        raise ValueError(f"{owner}.predictor must be 'NAME@VERSION' or a PredictorSpec, got {declared!r}")


def builtin_type(value: Any) -> type:
    return type(value) if value is not None else object


class Strategy:
    """Base class: override the callbacks you need; place orders with ``ctx``.

    Callbacks, in the order the engine calls them at each timestamp: ``on_order`` and
    ``on_fill`` for what the venue did with earlier orders, ``on_timer`` for due timers, then
    ``on_bar`` once per symbol with a new bar (or ``on_bars`` once with all of them, if
    overridden), ``on_tick`` for ticks. ``on_start`` runs before the first event (declare
    indicators there; a declared ``predictor`` is already open), ``on_stop`` after the last.
    """

    name: str = ""
    predictor: "str | PredictorSpec | None" = None   # the model step (4) runs for this strategy, if any
    # higher timeframes of every symbol, delivered to on_timeframe_bar once closed: ("5m", "30m") or
    # {"5m": {"sessions": "cn-a"}} (the options of ctx.subscribe); docs/strategies.md
    timeframes: "tuple[str, ...] | dict[str, dict[str, Any]]" = ()

    def __init__(self, **params: Any) -> None:
        declared = self.declared_params()
        unknown = sorted(set(params) - set(declared))
        if unknown:
            known = ", ".join(declared) or "none"
            raise ConfigError(f"{type(self).__name__}: unknown parameter(s) {', '.join(unknown)} (known: {known})")
        self.params: dict[str, Any] = {k: p.default for k, p in declared.items()}
        for key, value in params.items():
            self.params[key] = declared[key].check(declared[key].coerce(value))

    def validate(self) -> None:
        """Check the parameters together (``fast < slow``); raise ValueError naming them. Override it.

        Each parameter's own type and range are checked when the strategy is made; the assembly
        calls this right after (a one-line error before any data is read) and the engine again
        when a run starts (a strategy made in code and run directly).
        """

    @classmethod
    def declared_params(cls) -> dict[str, Param]:
        out: dict[str, Param] = {}
        for klass in reversed(cls.__mro__):
            for key, value in vars(klass).items():
                if isinstance(value, Param):
                    out[key] = value
        return out

    # -- callbacks (all optional) ------------------------------------------------------
    def on_start(self, ctx: "Context") -> None: ...

    def on_bar(self, ctx: "Context", bar: "Bar") -> None: ...

    def on_bars(self, ctx: "Context", bars: "list[Bar]") -> None:
        for bar in bars:
            self.on_bar(ctx, bar)

    def on_timeframe_bar(self, ctx: "Context", timeframe: str, bar: "Bar") -> None:
        """A closed bar of a subscribed higher ``timeframe`` (``ctx.subscribe``), after the step's ``on_bar``."""

    def on_tick(self, ctx: "Context", tick: "Tick") -> None: ...

    def on_order(self, ctx: "Context", order: "Order") -> None: ...

    def on_fill(self, ctx: "Context", fill: "Fill") -> None: ...

    def on_timer(self, ctx: "Context", name: str) -> None: ...

    def on_stop(self, ctx: "Context") -> None: ...


def _source_files(cls: type) -> set[str]:
    """The files defining ``cls`` and its bases, below Strategy (the user's code)."""
    out = set()
    for klass in cls.__mro__:
        if klass in (Strategy, object):
            continue
        path = getattr(sys.modules.get(klass.__module__), "__file__", None)
        if path:
            out.add(os.path.realpath(path))
        for value in vars(klass).values():   # a file loaded by path is not in sys.modules: its functions say
            code = getattr(getattr(value, "__func__", value), "__code__", None)
            if code is not None:
                out.add(os.path.realpath(code.co_filename))
    return out


def shown_path(path: str) -> str:
    """``path`` relative to the working folder when it is inside it, else as it is."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def one_line(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def strategy_failure(strategy: "Strategy | type[Strategy]", exc: BaseException) -> StrategyError | None:
    """A StrategyError for ``exc`` naming the last line of the strategy's own code it passed through
    (``strategy error: my_strat.py:14 in on_bar: ZeroDivisionError: division by zero``), with the full
    traceback as its ``detail``; None when the traceback never passed through the strategy's code."""
    cls = strategy if isinstance(strategy, type) else type(strategy)
    files = _source_files(cls)
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if os.path.realpath(f.filename) in files]
    if not frames:
        return None
    f = frames[-1]
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return StrategyError(f"strategy error: {shown_path(f.filename)}:{f.lineno} in {f.name}: {one_line(exc)}", detail)
