"""Quote-aware matching for tick data: orders fill against the level-1 quote (or the trades) they can see.

``QuoteVenue`` is a :class:`tradeloop.brokers.sim.SimulatedVenue` that also takes ticks
(:meth:`QuoteVenue.on_tick`); bars keep the bar rules of ``sim.py`` unchanged (and bars of a symbol
that has ticks are not matched at all: its fills come from its ticks). Rules (docs/fills.md, "Ticks"):

- Latency: an order placed while the strategy handles the tick stamped ``t`` reaches the venue at
  ``t + data_ns + entry_ns (+ jitter)`` (:class:`Latency`). It can first trade on the first tick of
  its symbol that comes after the tick it was placed on, is stamped at or after that arrival time and
  is stamped later than the order (ticks sharing a stamp: the order sees none of the ones after the tick
  it was placed on, as at a real venue, and as in paper, where a stamp's ticks all reach the exchange
  before an order placed on one of them). Zero latency: the next tick with a later stamp.
- Market: a buy fills at the ask, a sell at the bid, for at most the displayed size
  (``size_limit``); the rest keeps working and takes the next quotes (each tick's displayed size is
  fresh liquidity), unless the order is IOC (the rest is cancelled after the first quote it saw).
  Without a quote (a trade-only tick) it fills at the trade price, for at most the trade's size.
- Limit: on the first tick it can see, a marketable limit takes the quote (a buy fills at the ask
  if ask <= limit). Afterwards it rests and fills at its limit when the opposite quote reaches it
  (``limit_on="quote"``), or when a trade prints through it (``limit_on="trade"``: price < limit for
  a buy, ``<=`` with ``trade_through=False``), for at most the quote's (or trade's) size.
- Queue position (``queue``, default ``"none"``: the rules above). In the spirit of hftbacktest's queue
  models, a limit order that rests (it was not marketable on the first tick it saw) joins the queue at
  its price: behind the displayed size when its price is the best on its side, at the front when it
  improves the best price, and behind an unknown queue when it is below the best (it joins behind the
  displayed size once its price becomes the best). Then, per tick, the trade first (it happened before
  the snapshot): a trade through the limit (a sell below a buy's limit) fills it (the level was cleared,
  queue ahead 0), a trade at the limit consumes the queue ahead and fills the order for what exceeds it;
  then the quote: the opposite quote reaching the limit fills it as before (``limit_on="quote"``); the best
  price moving past the limit on its side (a buy's bid below its price) puts it at the front; a displayed
  size at its price shrinking beyond the trades is cancellations: ``"risk_averse"`` never counts them as
  ahead of the order (the queue ahead only drops to the displayed size), ``"prob"`` counts the share
  ``ahead / (ahead + behind)`` of them as ahead of it (hftbacktest's linear ``ProbQueueModel``), then also
  at most the displayed size. Fills are at the limit, for at most the excess (``size_limit``).
- Stop: triggers when a trade (or, without trades, the opposite quote) reaches the stop, then works
  as a market order (stop) or a limit order (stop-limit) on that same tick.
- No slippage model (the quote is the price); commission and the account's cash check as in sim.py;
  DAY orders expire as in sim.py. A market profile's price limits are not applied to tick fills.

The tick benchmark's rules (fill at the next tick's ask/bid, no latency, no size limit) are
``QuoteRules(size_limit=False)``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from tradeloop.brokers.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from tradeloop.brokers.instruments import floor_step
from tradeloop.brokers.sim import FillRules, SimulatedVenue
from tradeloop.data.schema import NS_PER_DAY

__all__ = ["Latency", "LatencySampler", "QuoteRules", "QuoteVenue"]

_INF = math.inf
QUEUE_MODELS = ("none", "risk_averse", "prob")


@dataclass(frozen=True)
class Latency:
    """Order-entry and market-data delay, in ns: constant, plus an optional seeded random part.

    ``jitter``: None, ``"uniform"`` (0..jitter_ns) or ``"exponential"`` (mean jitter_ns), drawn per
    order from ``numpy.random.default_rng(seed)``, so a run is repeatable.
    """

    entry_ns: int = 0
    data_ns: int = 0
    jitter: str | None = None
    jitter_ns: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.entry_ns < 0 or self.data_ns < 0 or self.jitter_ns < 0:
            raise ValueError("latencies must be >= 0")
        if self.jitter not in (None, "uniform", "exponential"):
            raise ValueError(f"jitter must be None, 'uniform' or 'exponential', not {self.jitter!r}")

    def sampler(self) -> LatencySampler:
        """A function giving each new order's total delay (ns), its RNG state readable and settable."""
        return LatencySampler(int(self.entry_ns + self.data_ns), None if self.jitter_ns == 0 else self.jitter,
                              float(self.jitter_ns), self.seed)


class LatencySampler:
    """Each new order's total delay (ns): the constant part plus a seeded draw. :meth:`state` /
    :meth:`set_state` read and set the RNG, so an undone order entry or a restart from a state file
    leaves every later order's delay as in an uninterrupted run."""

    def __init__(self, base: int, jitter: str | None, scale: float, seed: int) -> None:
        self.base, self.jitter, self.scale = base, jitter, scale
        self._rng = None if jitter is None else np.random.default_rng(seed)
        self.draws = 0       # delays given so far (a cheap "has the state changed" check)

    def __call__(self) -> int:
        self.draws += 1
        if self._rng is None:
            return self.base
        if self.jitter == "uniform":
            return self.base + int(self._rng.uniform(0.0, self.scale))
        return self.base + int(self._rng.exponential(self.scale))

    def state(self) -> dict | None:
        """The RNG's state (numpy's ``bit_generator.state``: JSON-able, 128-bit ints); None without jitter."""
        return None if self._rng is None else self._rng.bit_generator.state

    def set_state(self, state: dict | None) -> None:
        """Continue from a state :meth:`state` gave (None, or no jitter: nothing to set)."""
        if self._rng is not None and state is not None:
            self._rng.bit_generator.state = state


@dataclass(frozen=True)
class QuoteRules:
    """How a :class:`QuoteVenue` fills orders on ticks (``FillRules`` still gives commission and lots)."""

    size_limit: bool = True          # fill at most the displayed (or traded) size per tick
    limit_on: str = "quote"          # resting limits fill when the opposite "quote" reaches them, or on a "trade"
    trade_through: bool = True       # limit_on="trade": the trade must print strictly through the limit
    latency: Latency = field(default_factory=Latency)
    queue: str = "none"              # queue position of resting limits: "none", "risk_averse" or "prob" (module doc)

    def __post_init__(self) -> None:
        if self.limit_on not in ("quote", "trade"):
            raise ValueError(f"limit_on must be 'quote' or 'trade', not {self.limit_on!r}")
        if self.queue not in QUEUE_MODELS:
            raise ValueError(f"queue must be one of {', '.join(map(repr, QUEUE_MODELS))}, not {self.queue!r}")


class QuoteVenue(SimulatedVenue):
    """A simulated venue that matches working orders on ticks (quotes and trades) as well as on bars.

    ``tick_symbols``: symbols whose fills come from ticks only (their bars are not matched).
    """

    def __init__(self, rules: FillRules | None = None, quotes: QuoteRules | None = None, *,
                 tick_symbols: Iterable[str] = (), sink=None, account=None) -> None:
        super().__init__(rules or FillRules(), sink, account)
        self.quotes = quotes or QuoteRules()
        self.tick_symbols = frozenset(tick_symbols)
        self._delay = self.quotes.latency.sampler()
        self._state: bytes | None = None      # venue_state() as of the sampler's draw count _state_at
        self._state_at = -1
        self._arrive: dict[str, int] = {}     # order id -> the time it reaches the venue
        self._rested: set[str] = set()        # limit orders that have seen a quote (no longer takers)
        self._queue: dict[str, list[float]] = {}   # order id -> [size ahead (inf: unknown), size shown at its price]

    # -- order entry -------------------------------------------------------------------
    def submit(self, order: Order, ts: int) -> None:
        """Take an order; it reaches the venue after a latency draw (an order put back with its state keeps its arrival)."""
        if order.id not in self._arrive:
            self._arrive[order.id] = order.created_ts + self._delay()
        super().submit(order, ts)

    # -- per-order and venue-wide state (brokers.base.ResumableVenue) --------------------
    def order_state(self, order_id: str) -> tuple | None:
        """``(first trading day, arrival, rested, (queue ahead, shown) or None)``; None if it has none yet."""
        arrive, q, day = self._arrive.get(order_id), self._queue.get(order_id), self._valid_day.get(order_id)
        rested = order_id in self._rested
        if arrive is None and q is None and day is None and not rested:
            return None
        return (day, arrive, rested, None if q is None else (q[0], q[1]))

    def restore_order_state(self, order_id: str, state: Sequence | None) -> None:
        """Set an order's state back to what :meth:`order_state` gave (None forgets it): a later
        :meth:`submit` keeps its arrival, draws no latency."""
        super().restore_order_state(order_id, state[:1] if state else None)
        arrive, rested, queue = state[1:4] if state and len(state) >= 4 else (None, False, None)
        if arrive is None:
            self._arrive.pop(order_id, None)
        else:
            self._arrive[order_id] = int(arrive)
        if rested:
            self._rested.add(order_id)
        else:
            self._rested.discard(order_id)
        if queue is None:
            self._queue.pop(order_id, None)
        else:
            self._queue[order_id] = [float(queue[0]), float(queue[1])]

    def venue_state(self) -> bytes | None:
        """The latency sampler's RNG state as JSON bytes (None without jitter); encoded again only after a draw."""
        draws = self._delay.draws
        if draws != self._state_at:
            state = self._delay.state()
            self._state, self._state_at = (None if state is None else json.dumps(state).encode()), draws
        return self._state

    def restore_venue_state(self, state: bytes | None) -> None:
        """Continue the latency sampler from a :meth:`venue_state` (None: leave it)."""
        if state is not None:
            self._delay.set_state(json.loads(state))
            self._state_at = -1

    def _remove(self, order: Order) -> None:
        super()._remove(order)
        if not order.is_open:
            self._arrive.pop(order.id, None)
            self._rested.discard(order.id)
            self._queue.pop(order.id, None)

    # -- bars: the bar rules, except for symbols that trade on ticks --------------------
    def on_bar(self, symbol: str, ts: int, o: float, h: float, l: float, c: float, v: float) -> None:
        if symbol not in self.tick_symbols:
            super().on_bar(symbol, ts, o, h, l, c, v)

    def on_close(self, symbol: str, ts: int, c: float, v: float) -> None:
        if symbol not in self.tick_symbols:
            super().on_close(symbol, ts, c, v)

    # -- ticks ---------------------------------------------------------------------------
    def on_tick(self, symbol: str, ts: int, price: float, size: float, bid: float, ask: float,
                bid_size: float, ask_size: float) -> None:
        """Match the symbol's working orders that have reached the venue against this tick."""
        orders = self._book.get(symbol)
        if not orders:
            return
        for order in orders[:]:
            self.on_tick_order(order, ts, price, size, bid, ask, bid_size, ask_size)

    def on_tick_order(self, order: Order, ts: int, price: float, size: float, bid: float, ask: float,
                      bid_size: float, ask_size: float) -> None:
        """Match one working order against this tick (what :meth:`on_tick` does for each order of the symbol;
        the exchange simulator calls it per order, to contain a failure to its order)."""
        if ts < self._arrive.get(order.id, 0) or order.created_ts >= ts:   # only later stamps (module doc)
            return
        tif = order.tif
        if tif is TimeInForce.DAY:
            day = ts // NS_PER_DAY
            if day > self._valid_day.setdefault(order.id, day):
                self._finish(order, OrderStatus.EXPIRED, ts, "DAY order expired")
                return
        self._match_tick(order, ts, price, size, bid, ask, bid_size, ask_size)
        if tif is TimeInForce.IOC and order.is_open:
            self._finish(order, OrderStatus.CANCELLED, ts, "IOC remainder cancelled")

    def _match_tick(self, order: Order, ts: int, price: float, size: float, bid: float, ask: float,
                    bid_size: float, ask_size: float) -> None:
        buy = order.side is Side.BUY
        q = self.quotes
        opp, opp_size = (ask, ask_size) if buy else (bid, bid_size)
        quoted = opp == opp                      # not NaN
        traded = price == price and (size > 0 or not q.size_limit)
        kind = order.type
        if kind is OrderType.STOP or kind is OrderType.STOP_LIMIT:
            if not order.triggered:
                ref = price if price == price else opp
                if ref != ref or (ref < order.stop_price if buy else ref > order.stop_price):
                    return
                order.triggered = True
            kind = OrderType.MARKET if kind is OrderType.STOP else OrderType.LIMIT
        if kind is OrderType.MARKET:
            if quoted:
                px, avail = opp, opp_size
            elif traded:
                px, avail = price, size
            else:
                return
        else:
            lim = order.limit_price
            first = order.id not in self._rested
            self._rested.add(order.id)
            if q.queue != "none":
                if not first:
                    return self._match_queued(order, ts, buy, lim, price, size, bid, ask, bid_size, ask_size)
                self._join(order.id, buy, lim, bid, ask, bid_size, ask_size)
            if quoted and (first or q.limit_on == "quote"):
                if not (opp <= lim if buy else opp >= lim):
                    if not (traded and q.limit_on == "trade"):
                        return
                    return self._limit_on_trade(order, ts, buy, lim, price, size)
                px, avail = (opp if first else lim), opp_size
            elif traded:
                return self._limit_on_trade(order, ts, buy, lim, price, size)
            else:
                return
        if not q.size_limit:
            avail = _INF
        self._fill(order, ts, px, avail)

    def _join(self, oid: str, buy: bool, lim: float, bid: float, ask: float, bid_size: float, ask_size: float) -> None:
        """A limit order's place in the queue at its price, from the first tick it sees."""
        best, shown = (bid, bid_size) if buy else (ask, ask_size)
        if best == lim:
            self._queue[oid] = [float(shown), float(shown)]
        elif best == best and (best < lim if buy else best > lim):
            self._queue[oid] = [0.0, 0.0]            # it improves the best price: first in the queue
        else:
            self._queue[oid] = [_INF, math.nan]      # below the best (or no quote): unknown queue ahead

    def _match_queued(self, order: Order, ts: int, buy: bool, lim: float, price: float, size: float, bid: float,
                      ask: float, bid_size: float, ask_size: float) -> None:
        """A resting limit order under a queue model (module doc): the trade, then the quote."""
        q = self.quotes
        opp, opp_size = (ask, ask_size) if buy else (bid, bid_size)
        if q.limit_on == "quote" and opp == opp and (opp <= lim if buy else opp >= lim):
            return self._fill(order, ts, lim, opp_size if q.size_limit else _INF)
        st = self._queue.get(order.id)
        if st is None:
            st = self._queue[order.id] = [_INF, math.nan]
        ahead, shown = st
        avail = at = 0.0
        if price == price and size > 0:
            if price < lim if buy else price > lim:     # printed through the limit: the level was cleared
                ahead, avail = 0.0, size
            elif price == lim and ahead != _INF:
                at = size
                ahead -= size
                if ahead < 0.0:
                    avail, ahead = -ahead, 0.0
        best, best_size = (bid, bid_size) if buy else (ask, ask_size)
        if best == lim:
            if ahead == _INF:
                ahead = best_size                       # its price became the best: behind what is shown
            else:
                if q.queue == "prob" and shown == shown:
                    cancelled = shown - at - best_size
                    total = shown - at                   # ahead + behind, after the trades
                    if cancelled > 0.0 and total > 0.0:
                        ahead -= cancelled * min(ahead, total) / total
                ahead = max(0.0, min(ahead, best_size))
            shown = best_size
        elif best == best and (best < lim if buy else best > lim):
            ahead, shown = 0.0, 0.0                     # the best moved past its price: it is at the front
        else:
            shown = math.nan
        st[0], st[1] = ahead, shown
        if avail > 0.0:
            self._fill(order, ts, lim, avail if q.size_limit else _INF)

    def _limit_on_trade(self, order: Order, ts: int, buy: bool, lim: float, price: float, size: float) -> None:
        through = self.quotes.trade_through
        if buy:
            hit = price < lim if through else price <= lim
        else:
            hit = price > lim if through else price >= lim
        if hit:
            self._fill(order, ts, lim, size if self.quotes.size_limit else _INF)

    def _fill(self, order: Order, ts: int, price: float, avail: float) -> None:
        """Fill what ``avail`` (the displayed or traded size) allows of the order's remainder, in whole steps."""
        rules = self.rules
        remaining = order.qty - order.filled_qty
        qty = remaining if avail >= remaining else float(avail)
        step = rules.qty_step(order.symbol) if rules.instruments else rules.lot_size
        if step > 0:
            qty = floor_step(qty, step)
        if qty <= 0:
            return
        self._record_fill(order, ts, qty, price)
