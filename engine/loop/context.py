"""The strategy's handle on the engine: orders, positions, cash, equity, indicators, history.

Orders placed here are collected and, after the strategy's callbacks for the current
timestamp return, pass the risk layer and go to the venue. So an order placed on bar t can
trade on bar t+1 at the earliest (unless the run explicitly fills at the same bar's close).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from tradeloop.brokers.orders import Order, OrderType, Side, TimeInForce
from tradeloop.brokers.instruments import floor_step, round_step
from tradeloop.engine.loop.timeframes import Subscriptions, TimeframeView

if TYPE_CHECKING:  # pragma: no cover
    from tradeloop.engine.loop.core import Engine
    from tradeloop.engine.loop.market import Series


class Context:
    """Passed to every strategy callback; the only way a strategy acts on the world."""

    def __init__(self, engine: "Engine") -> None:
        self._engine = engine
        self._clock = engine.clock
        self._market = engine.market
        self._portfolio = engine.portfolio
        self._new: list[Order] = []
        self.predictions: dict[str, Any] = {}  # symbol -> model outputs at this timestamp (step 4)
        self.log = engine.log
        self._subs = Subscriptions(engine)

    # -- state ---------------------------------------------------------------------------
    @property
    def now(self) -> int:
        """The current timestamp (int64 ns), from the run's clock."""
        return self._clock.now

    @property
    def symbols(self) -> list[str]:
        return self._market.symbols

    @property
    def cash(self) -> float:
        return self._portfolio.cash

    @property
    def equity(self) -> float:
        """Cash plus every position marked at its last close."""
        return self._portfolio.equity(self._market.price)

    @property
    def margin(self) -> float:
        """Initial margin tied up by the open futures positions at the last prices (0.0 without futures);
        ``equity - margin`` is what new futures orders may use."""
        return self._engine.margin_in_use()

    def position(self, symbol: str) -> float:
        """Signed quantity held in ``symbol`` (0 if none)."""
        p = self._portfolio.positions.get(symbol)
        return p.qty if p is not None else 0.0

    def sellable(self, symbol: str) -> float:
        """What may be sold now: the position, less (under T+1, e.g. ``--market cn-a``) what was bought today."""
        return self._engine.sellable(symbol)

    @property
    def positions(self) -> dict[str, float]:
        return {s: p.qty for s, p in self._portfolio.positions.items() if p.qty}

    def price(self, symbol: str) -> float:
        """The last close of ``symbol`` (NaN before its first bar)."""
        return self._market.price(symbol)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Working orders, orders held for review, and orders placed in this callback."""
        held = [o for o in self._engine.held.values() if symbol in (None, o.symbol)]
        return self._engine.venue.open_orders(symbol) + held + [o for o in self._new if symbol in (None, o.symbol)]

    # -- data ----------------------------------------------------------------------------
    def indicator(self, name: str, *sources: Any, **params: Any) -> "Series | tuple[Series, ...]":
        """Declare an indicator (in ``on_start``); read it per bar with ``ind[symbol]``."""
        return self._market.indicator(name, *sources, **params)

    def field(self, name: str) -> "Series":
        """A bar field (``close``, ``volume``, ``pre_close``...) read per symbol like an indicator."""
        return self._market.field(name)

    def history(self, symbol: str, field: str = "close", n: int = 1) -> np.ndarray:
        """The last ``n`` values of a bar field up to the current bar (read-only)."""
        return self._market.history(symbol, field, n)

    def subscribe(self, symbol: str, timeframe: str, sessions: Any = None, *, label: str | None = None,
                  base: str | None = None, source: str = "bars", price: str = "auto",
                  tz: str | None = None) -> TimeframeView:
        """Receive ``symbol``'s bars resampled to ``timeframe`` (``"5m"``, ``"30m"``, ``"1h"``, ``"1d"``) in
        ``on_timeframe_bar(ctx, timeframe, bar)``, each once it has closed (call in ``on_start``).

        ``sessions``: a preset (``"cn-a"``, ``"cn-commodity"``, ``"us-equity"``, ``"crypto"``) or a
        :class:`tradeloop.data.sessions.Sessions`; None: 24/7 from midnight. ``label``: how the run's
        bars are stamped, ``"end"`` or ``"start"`` (default: the sessions'). ``base``: the run's bar
        length (default: read from a backtest's data). Returns the view of the closed bars
        (``.bars``, ``.last``, ``.history(field, n)``), also at ``ctx.timeframe(symbol, timeframe)``.

        ``source="ticks"``: bars built from the symbol's ticks (a tick backtest or a live session fed ticks)
        by :class:`tradeloop.data.resample.BarBuilder` (``price``: ``"auto"``, ``"trade"`` or ``"mid"``;
        ``tz``: the ticks' zone, default the tick data's in a backtest, wall time live), each delivered at
        the first event after its end (engine/loop/timeframes.py)."""
        return self._subs.subscribe(symbol, timeframe, sessions, label=label, base=base, source=source,
                                    price=price, tz=tz)

    def timeframe(self, symbol: str, timeframe: str) -> TimeframeView:
        """The closed higher-timeframe bars of a subscription."""
        try:
            return self._subs.views[(symbol, timeframe)]
        except KeyError:
            raise KeyError(f"no subscription to {symbol} {timeframe}; ctx.subscribe it in on_start") from None

    def use_predictor(self, model: str, *, registry: str = "runs/models", runtime: str = "onnx-cpu",
                      backup: str | None = None, limits: Any = None, batch_workers: int | None = 1,
                      endpoint: str | None = None, timeout_ms: float = 100.0, on_failure: str = "local") -> None:
        """Have the engine run model ``NAME@VERSION`` once per timestamp (in ``on_start``); read
        ``ctx.predictions[symbol]`` (class probabilities) in ``on_bar``/``on_bars``. ``batch_workers``:
        threads of a backtest's batch precompute (None: every core; keep 1 inside sweeps and walk-forwards).
        ``endpoint="tcp://HOST:PORT"``: a prediction server (``tradeloop serve``) answers, with the same
        outputs; past ``timeout_ms`` ``on_failure`` applies: ``"local"`` (the same version run here) or
        ``"halt"`` (no new entries until it answers; docs/serving.md)."""
        self._engine.use_predictor(model, registry=registry, runtime=runtime, backup=backup, limits=limits,
                                   batch_workers=batch_workers, endpoint=endpoint, timeout_ms=timeout_ms,
                                   on_failure=on_failure)

    @property
    def predictor_events(self) -> list:
        """What the predictor's health monitor recorded (breaches, switches to the backup)."""
        p = self._engine.predictor
        return list(p.model.events) if p is not None else []

    def set_timer(self, name: str, every: int, start: int | None = None) -> None:
        """Call ``on_timer(ctx, name)`` every ``every`` ns of the run's clock, first at ``start``."""
        self._engine.timers.add(name, every, self.now if start is None else start)

    # -- orders --------------------------------------------------------------------------
    def buy(self, symbol: str, qty: float, *, limit: float | None = None, stop: float | None = None,
            tif: str | TimeInForce = TimeInForce.GTC, tag: str = "") -> Order:
        return self._place(symbol, Side.BUY, qty, limit, stop, tif, tag)

    def sell(self, symbol: str, qty: float, *, limit: float | None = None, stop: float | None = None,
             tif: str | TimeInForce = TimeInForce.GTC, tag: str = "") -> Order:
        return self._place(symbol, Side.SELL, qty, limit, stop, tif, tag)

    def order(self, symbol: str, qty: float, *, limit: float | None = None, stop: float | None = None,
              tif: str | TimeInForce = TimeInForce.GTC, tag: str = "") -> Order | None:
        """Buy (qty > 0) or sell (qty < 0); None for 0."""
        if qty > 0:
            return self._place(symbol, Side.BUY, qty, limit, stop, tif, tag)
        if qty < 0:
            return self._place(symbol, Side.SELL, -qty, limit, stop, tif, tag)
        return None

    def order_target(self, symbol: str, target: float, **kw: Any) -> Order | None:
        """Trade the difference between ``target`` and the current position."""
        return self.order(symbol, target - self.position(symbol), **kw)

    def order_target_value(self, symbol: str, value: float, **kw: Any) -> Order | None:
        """Hold ``value`` of ``symbol`` at its last close: whole units (whole lots; multiples of the instrument's
        fractional quantity step), rounded toward zero."""
        price = self.price(symbol)
        if not price or math.isnan(price):
            raise ValueError(f"order_target_value({symbol!r}): no price yet")
        if not math.isfinite(value):
            raise ValueError(f"order_target_value({symbol!r}): the value must be a finite number, got {value!r}")
        step = self._engine.rules.qty_step(symbol)
        if step > 0 and not float(step).is_integer():   # an instrument's fractional step (crypto): round down to it
            target = floor_step(abs(value) / price, step) * (1 if value >= 0 else -1)
            return self.order(symbol, round_step(target - self.position(symbol), step), **kw)
        target = math.floor(abs(value) / price) * (1 if value >= 0 else -1)
        lot = step if step > 0 else self._engine.lot_size
        if lot > 0:
            target = math.floor(abs(target) / lot) * lot * (1 if target >= 0 else -1)
        return self.order_target(symbol, target, **kw)

    def order_target_percent(self, symbol: str, pct: float, **kw: Any) -> Order | None:
        """Hold ``pct`` of current equity in ``symbol`` (0.95 = 95%)."""
        return self.order_target_value(symbol, pct * self.equity, **kw)

    def close(self, symbol: str, **kw: Any) -> Order | None:
        """Flatten the position in ``symbol`` (None if flat)."""
        p = self._portfolio.positions.get(symbol)
        return self.order(symbol, -p.qty if p is not None else 0.0, **kw)

    def cancel(self, order: Order) -> bool:
        """Cancel a working order, one held for review, or one placed during this callback."""
        if order in self._new:
            self._new.remove(order)
            self._engine.cancel_unsent(order)
            return True
        if order.id in self._engine.held:
            return self._engine.cancel_held(order, "cancelled by strategy")
        return self._engine.venue.cancel(order, self.now, "cancelled by strategy")

    def cancel_all(self, symbol: str | None = None) -> int:
        return sum(self.cancel(o) for o in self.open_orders(symbol))

    def _place(self, symbol: str, side: Side, qty: float, limit: float | None, stop: float | None,
               tif: str | TimeInForce, tag: str) -> Order:
        if symbol not in self._market.rows:
            raise ValueError(f"unknown symbol {symbol!r}; this run trades {', '.join(self.symbols)}")
        if not qty > 0 or not math.isfinite(qty):
            raise ValueError(f"order quantity must be a positive number, got {qty!r} ({side.value} {symbol})")
        if limit is None and stop is None:  # the common case, checked first: orders are on the hot path
            kind = OrderType.MARKET
        else:
            for label, p in (("limit", limit), ("stop", stop)):
                if p is not None and not (p > 0 and math.isfinite(p)):
                    raise ValueError(f"{label} price must be a positive number, got {p!r} ({side.value} {symbol})")
            kind = (OrderType.STOP_LIMIT if limit is not None and stop is not None else OrderType.LIMIT
                    if limit is not None else OrderType.STOP)
        engine = self._engine
        tif = tif if tif.__class__ is TimeInForce else TimeInForce(tif)
        order = Order(engine.next_order_id(), symbol, side, float(qty), kind, limit, stop, tif,
                      self._clock.now, self._market.price(symbol), tag=tag)
        self._new.append(order)
        return order
