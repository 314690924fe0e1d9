"""The one event loop body shared by the backtest and live drivers.

``Engine.step(ts, bars)`` handles everything that happens at one timestamp, in this order:
(0) corporate actions at the ex-date's open, when the timestamp has any (dividends, splits:
``Engine._corporate``), (1) the venue matches working orders against the new bars, (2) the portfolio is marked to
market (lazily: equity reads each symbol's last close), (3) risk state updates (halts, drawdown
stop: only when such a check is configured), (4) the
predictor would run once for all symbols (models issue), (5) the strategy's callbacks run
(order and fill notices, timers, then bars), (6) the orders placed in (5) pass risk and go
to the venue. An order placed at t therefore trades at t+1 at the earliest. An order the
risk layer holds for review waits in ``Engine.held``, away from the venue, until answered.
``Engine.tick(tick)`` runs the same order for one trade: match, risk state, notices, timers, ``on_tick``.

The engine talks to its venue only through ``brokers.base.Venue`` (it binds itself as the venue's
fill sink and account) and takes "now" only from its clock (``tradeloop.engine.loop.clock``); its callers
build both.
"""
from __future__ import annotations

import functools
from bisect import bisect_left
from typing import Any, Callable, Sequence

import structlog

from tradeloop.brokers.orders import Fill, Order, OrderEvent, OrderStatus, OrderType, Side, TimeInForce
from tradeloop.brokers.base import Venue
from tradeloop.brokers.profiles import round_half_up
from tradeloop.brokers.settlement import Settlement
from tradeloop.brokers.sim import FillRules
from tradeloop.data.schema import Bar, Bars, OneBar, Tick
from tradeloop.risk.pipeline import Decision, RiskPipeline

from tradeloop.engine.loop.clock import Clock, SimulatedClock, Timers
from tradeloop.engine.loop.context import Context
from tradeloop.engine.loop.market import HistoricalMarket, Market
from tradeloop.engine.loop.portfolio import Portfolio
from tradeloop.engine.loop.strategy import PredictorSpec, Strategy


_NAN, _INF = float("nan"), float("inf")


class Engine:
    """Strategy + market view + portfolio + risk + venue, advanced one event at a time on one clock.

    ``venue``: any :class:`tradeloop.brokers.base.Venue` (the caller builds it: ``SimulatedVenue(rules)`` for a
    backtest or paper run, a ``RemoteVenue`` live); the engine binds itself to it as fill sink and
    account. ``clock``: the only source of "now" (default: event time, a :class:`SimulatedClock`).
    """

    def __init__(self, strategy: Strategy, market: Market, portfolio: Portfolio, rules: FillRules,
                 risk: RiskPipeline, *, venue: Venue, clock: Clock | None = None, order_prefix: str = "O",
                 log: Any = None, trade_from: int | None = None,
                 actions: dict[int, list[tuple[str, float, float]]] | None = None,
                 rolls: Sequence[Any] | None = None) -> None:
        self.strategy = strategy
        # futures rolls (engine/loop/rolls.py): pending, earliest first; rolls_log: what was done
        self.rolls = sorted(rolls or ())
        self.rolls_log: list[dict[str, Any]] = []
        # corporate actions (data.actions): bar ts -> [(symbol, dividend per share, split ratio)], applied
        # at step (0) of that timestamp; what was done is kept in actions_log (the run's actions table)
        self.actions = actions or {}
        self.actions_log: list[dict[str, Any]] = []
        self.trade_from = trade_from  # strategy orders placed before this timestamp are refused (warm-up)
        self.market = market
        self.portfolio = portfolio
        self.rules = rules
        self.lot_size = rules.lot_size
        self.risk = risk
        self.log = log or structlog.get_logger("tradeloop.engine")
        self.clock: Clock = clock if clock is not None else SimulatedClock()
        self.venue = venue
        venue.bind(self, self)   # fills and order events come back here; matching asks this account
        self.timers = Timers()
        self.ctx = Context(self)
        self.step_index = -1
        self.orders: dict[str, Order] = {}
        self.held: dict[str, Order] = {}                    # held for review, not at the venue
        self.fills: list[Fill] = []
        self.order_events: list[OrderEvent] = []
        self.cash_log: list[tuple[int, float]] = []        # (step, cash) after each step with fills
        self.qty_log: list[tuple[int, str, float]] = []    # (step, symbol, quantity) after each fill
        self._notes: list[tuple[str, Any]] = []
        self._dirty = False
        self._order_seq = 0
        self._order_prefix = order_prefix
        self._per_bar = type(strategy).on_bars is Strategy.on_bars
        self._wants_notes = (type(strategy).on_fill is not Strategy.on_fill
                             or type(strategy).on_order is not Strategy.on_order)
        self._at_close = rules.fill_at == "close"
        self._rows = market.rows if isinstance(market, HistoricalMarket) else None
        self.settlement = Settlement(rules.market is not None and rules.market.t_plus_1)   # T+1: today's buys
        self.mark = functools.partial(portfolio.equity, market.price)   # equity now, as one cheap call
        portfolio.use_futures(rules.instruments)   # futures: margin, multiplier, marked to market (portfolio.py)
        self._futures = portfolio.instruments is not None
        self._liquidating: list[Order] = []        # the orders of a margin call still working
        # futures settled daily (settlement = "daily"): the stamps of each trading day's last step (the driver sets
        # them: day_ends_of); mark_log: (step, symbol, mark, pending) of those futures after each step that moved them
        self.day_ends: set[int] | None = None
        self.mark_log: list[tuple[int, str, float, float]] = []
        self.log_all_marks = False   # the tick driver: every future's mark (the fast path does not settle)
        # daily price limits outside a market profile: per-bar limit_up/limit_down columns of the data, else an
        # instrument's ``limit`` x the previous close (brokers/sim.py asks price_limits when limits_active)
        cols = getattr(market, "cols", {})
        self._limit_cols = (cols.get("limit_up", {}), cols.get("limit_down", {}))
        self.limits_active = rules.market is None and (
            bool(self._limit_cols[0] or self._limit_cols[1])
            or any(e.limit for e in rules.instruments.entries))
        risk.attach(self)
        self.predictor: Any = None   # models.predictor.Predictor once a strategy asks for one
        self.models: list[dict[str, Any]] = []   # what use_predictor loaded: the run manifest's "models"
        self.step = self._make_step()

    @property
    def now(self) -> int:
        """The current time (int64 ns), from the clock."""
        return self.clock.now

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        validate = getattr(self.strategy, "validate", None)
        if validate is not None:   # its parameters together (also checked when the assembly made it)
            validate()
        declared = getattr(self.strategy, "predictor", None)
        if declared is not None:
            spec = PredictorSpec.of(declared, type(self.strategy).__name__)
            self.use_predictor(spec.model, registry=spec.registry, runtime=spec.runtime, backup=spec.backup,
                               batch_workers=spec.batch_workers, endpoint=spec.endpoint, timeout_ms=spec.timeout_ms,
                               on_failure=spec.on_failure)
        self.ctx._subs.declare(getattr(self.strategy, "timeframes", None))   # Strategy.timeframes
        self.strategy.on_start(self.ctx)
        self.ctx._subs.started()    # ctx.subscribe wraps self.step: only before the driver takes it
        self._route()

    def stop(self) -> None:
        self.strategy.on_stop(self.ctx)
        self.ctx._new.clear()

    def next_order_id(self) -> str:
        self._order_seq += 1
        return f"{self._order_prefix}{self._order_seq:08d}"

    # -- the loop body -------------------------------------------------------------------
    def use_predictor(self, model: str, *, registry: str = "runs/models", runtime: str = "onnx-cpu",
                      backup: str | None = None, limits: Any = None, batch_workers: int | None = 1,
                      endpoint: str | None = None, timeout_ms: float = 100.0, on_failure: str = "local") -> None:
        """Run registry model ``model`` at step (4) of every timestamp; results in ``ctx.predictions``.

        A backtest computes every symbol's probabilities once, in big batches, from features that
        read no later bar, and looks them up per step; a live run calls the model once per
        timestamp for all symbols that got a bar. torch/ONNX Runtime are imported only here.

        ``endpoint="tcp://HOST:PORT"``: a prediction server (``tradeloop serve``) answers instead,
        with the same outputs; when it does not answer within ``timeout_ms``, ``on_failure="local"``
        falls back to the same version loaded here, ``"halt"`` refuses new entries (risk check
        ``model_server``) until it answers again; each is a ``model_server`` risk event.
        """
        from tradeloop.models.runtime.base import runtime_detail
        ticks = getattr(self.market, "_ticks", None)   # a tick backtest's TickMarket: its tick series
        if endpoint is not None:
            from tradeloop.models.serve.remote import open_remote_predictor
            predictor = open_remote_predictor(registry, model, self.market.symbols, endpoint=endpoint,
                                              timeout_ms=timeout_ms, on_failure=on_failure, runtime=runtime,
                                              backup=backup, limits=limits, batch_workers=batch_workers,
                                              on_switch=self._model_breach, on_event=self._model_server)
        else:
            from tradeloop.models.predictor import open_predictor
            predictor = open_predictor(registry, model, self.market.symbols, runtime=runtime, backup=backup,
                                       limits=limits, batch_workers=batch_workers, on_switch=self._model_breach)
        if getattr(predictor, "kind", "bars") == "ticks":   # a model on tick windows (models/tick_predictor.py)
            if ticks is not None:   # backtest: batch precompute; ctx.predictions looks up each symbol's tick row
                from tradeloop.models.tick_predictor import TickPredictions

                predictor.precompute(ticks.values())
                self.market._declare_ticks()   # the driver keeps market.tick_rows per tick
                self.ctx.predictions = TickPredictions(predictor, self.market.tick_rows)
                self._tick_predictor = "pre"
            else:                   # live: Engine.tick feeds every tick (_predict_tick)
                predictor.warm_up()
                self.ctx.predictions = predictor.latest
                self._tick_predictor = "live"
        elif isinstance(self.market, HistoricalMarket):
            predictor.precompute(self.market.series[s] for s in self.market.symbols)
        else:
            try:
                predictor.warm_up()   # live: no first-call kernel builds inside the timed calls
            except self._remote_unavailable():
                pass                  # policy halt: entries are halted from the start (recorded)
        self.predictor = predictor
        active = predictor.model.active
        detail = runtime_detail(active.runtime)
        entry = {"requested": model, "version": str(active.ref), "backup": backup or None,
                 "registry": str(registry), "runtime": runtime, "feature_hash": active.spec.hash,
                 "created_at": active.info.metadata.get("created_at"), **detail}
        if endpoint is not None:   # live counts: versions that answered, outages, windows the local copy took
            entry.update(endpoint=endpoint, timeout_ms=float(timeout_ms), on_failure=on_failure, served=active.stats)
            self._remote = True
        self.models.append(entry)
        self.log.info("predictor_loaded", model=str(active), runtime=runtime, **detail)

    _remote = False          # the predictor is answered by a prediction server (endpoint=)
    _entry_halt: Any = None  # its EntryHalt risk check, once a halt policy fired

    @staticmethod
    def _remote_unavailable() -> type[Exception]:
        from tradeloop.models.serve.remote import RemoteUnavailable
        return RemoteUnavailable

    def _model_server(self, event: Any) -> None:
        """The prediction server was lost (``fallback`` to the local copy, or ``halt`` of new entries)
        or answers again (``resume``): a ``model_server`` risk event; halts go through the risk
        pipeline's ``EntryHalt`` check (added to the pipeline on the first halt)."""
        if event.action == "halt" and self._entry_halt is None:
            from tradeloop.models.serve.remote import EntryHalt
            self._entry_halt = EntryHalt()
            self.risk.add_check(self._entry_halt)
        if self._entry_halt is not None and event.action in ("halt", "resume"):
            self._entry_halt.halted, self._entry_halt.why = event.action == "halt", event.reason
        self.risk.record(int(self.now), "model_server", event.action, event.reason)

    def _model_breach(self, event: Any) -> None:
        """The predictor's health monitor saw a limit breached (and switched to the backup, if any):
        an event of the run's risk audit trail, so it is logged, written and shown in the report."""
        ts = event.ts if event.ts is not None else self.now
        self.risk.record(int(ts), "model_health", "switch" if event.to_model else "breach", str(event),
                         value=float(event.value))

    _tick_predictor: str | None = None   # "pre" (tick backtest) / "live": a model on tick windows

    def _predict_tick(self, tick: Tick) -> None:
        """A tick model, live: feed the tick; ``ctx.predictions`` holds each symbol's latest probabilities."""
        if self._tick_predictor == "live":
            self.predictor.update_tick(tick)
            self.ctx.predictions = self.predictor.latest

    def _predict(self, bars: list[Bar]) -> None:
        """Step (4): the predictor's outputs for this timestamp's symbols, as ``ctx.predictions``."""
        if self._tick_predictor is not None:
            return   # a tick model: bars do not feed it
        # live bars carry their amount (wire v2) for the VWAP feature; a backtest looks up precomputed outputs
        amounts = {b.symbol: b.amount for b in bars if b.amount is not None} if self._rows is None else None
        if not self._remote:
            self.ctx.predictions = self.predictor.step(bars, amounts or None, rows=self._rows)
            return
        try:
            self.ctx.predictions = self.predictor.step(bars, amounts or None, rows=self._rows)
        except self._remote_unavailable():   # policy halt: no predictions now, entries halted (_model_server)
            self.ctx.predictions = {}

    def _make_step(self) -> Callable[[int, Sequence[Bar]], None]:
        """Build ``step(ts, bars)``: every bar stamped ``ts`` (one per symbol), steps (1)-(6).

        The loop body runs once per timestamp, a million times in a long backtest, so the
        parts it uses are bound once here as closure variables instead of being looked up
        on ``self`` at every call. The behaviour is that of the numbered steps above.
        ``bars`` is a list of Bar (live) or a backtest's lazy ``Bars``, whose columns only
        ``match`` and the market's row update read directly; everything else iterates it.
        """
        market = self.market
        enter = market.enter
        rows = market.rows
        clock = self.clock
        advance = clock.advance
        inline = clock.__class__ is SimulatedClock   # its advance is inlined in step: one call less per step
        venue = self.venue
        working = venue.working          # read-only view: symbol -> its working orders
        venue_bar = venue.on_bar
        ctx = self.ctx
        new = ctx._new
        strategy = self.strategy
        on_bar = strategy.on_bar
        on_bars = strategy.on_bars
        per_bar = self._per_bar
        notes = self._notes
        deliver = self._deliver
        heap = self.timers.heap
        due = self.timers.due
        route = self._route
        at_close = self._at_close
        watch = self.risk.watcher()
        acts = self.actions
        futures = self._futures
        multipliers = self.portfolio.multipliers

        def match(ts: int, bars: Sequence[Bar]) -> None:
            """Step (1): the venue matches the working orders of each symbol with a bar now, in symbol order."""
            cls = bars.__class__
            if cls is OneBar:
                s = bars.symbol
                if s in working:
                    c, lo = bars.chunk, bars.lo
                    venue_bar(s, ts, c.open.item(lo), c.high.item(lo), c.low.item(lo), c.close.item(lo),
                              c.volume.item(lo))
                return
            if cls is Bars:
                c, lo, hi = bars.chunk, bars.lo, bars.hi
                syms = c.symbol
                for s in sorted(working) if len(working) > 1 else list(working):  # few symbols have orders
                    j = bisect_left(syms, s, lo, hi)
                    if j < hi and syms[j] == s:
                        venue_bar(s, ts, c.open.item(j), c.high.item(j), c.low.item(j), c.close.item(j),
                                  c.volume.item(j))
                return
            for bar in bars:
                if bar.symbol in working:
                    venue_bar(bar.symbol, ts, bar.open, bar.high, bar.low, bar.close, bar.volume)

        def step(ts: int, bars: Sequence[Bar]) -> None:
            if inline and ts >= clock.now:                              # the clock's time: event time
                clock.now = now = ts                                    # (SimulatedClock.advance inlined)
            else:
                now = advance(ts)
            market.now = ts                                             # the bars' own stamp, whatever the clock
            self.step_index += 1
            if bars.__class__ is OneBar:                                # the bars become 'now' (the
                rows[bars.symbol] = bars.row                            # OneBar case of market.enter)
            else:
                enter(bars)
            if acts and ts in acts:                                     # (0) corporate actions at the open
                self._corporate(ts, acts[ts])
            if working:                                                 # (1) match
                match(ts, bars)
            if futures and multipliers:                                 # (2) futures: settle to the close
                self._settle_futures(ts)
            if watch is not None:                                       # (3) risk state
                watch(ts, bars)
            if self.predictor is not None:                              # (4) one batched model call
                self._predict(bars)
            if notes:                                                   # (5) callbacks
                deliver()
            if heap:
                for name in due(now):
                    strategy.on_timer(ctx, name)
            if per_bar:
                for bar in bars:
                    on_bar(ctx, bar)
            else:
                on_bars(ctx, bars)
            if self.rolls and ts >= self.rolls[0].ts:                   # futures rolls (rolls.py)
                self._roll(ts)
            if new:                                                     # (6) risk, venue
                route()
                if at_close:
                    for bar in bars:
                        if bar.symbol in working:
                            venue.on_close(bar.symbol, ts, bar.close, bar.volume)
                    if notes:
                        deliver()
                        route()
            if self._dirty:
                self._snapshot()

        return step

    def tick(self, tick: Tick) -> None:
        """Process one tick: its price becomes the symbol's price, working orders match at it, risk
        state updates, then order and fill notices, due timers and ``on_tick`` (the order of ``step``)."""
        now = self.clock.advance(tick.ts)
        self.market.now = tick.ts
        self.market.on_tick(tick)
        self.step_index += 1
        if tick.symbol in self.venue.working:
            on_quote = getattr(self.venue, "on_tick", None)   # a quote-aware venue (brokers.quotes) matches on quotes
            if on_quote is not None:
                on_quote(tick.symbol, tick.ts, tick.price, tick.size, tick.bid, tick.ask, tick.bid_size, tick.ask_size)
            else:
                p = tick.price
                self.venue.on_bar(tick.symbol, tick.ts, p, p, p, p, tick.size)
        if self._futures and self.portfolio.multipliers:
            self._settle_futures(tick.ts)
        if self.risk.monitors:
            p = tick.price
            self.risk.watch(tick.ts, [Bar(tick.symbol, tick.ts, p, p, p, p, tick.size)])
        if self.predictor is not None:
            self._predict_tick(tick)
        if self._notes:
            self._deliver()
        if self.timers.heap:
            for name in self.timers.due(now):
                self.strategy.on_timer(self.ctx, name)
        self.strategy.on_tick(self.ctx, tick)
        if self.ctx._new:
            self._route()
        if self._dirty:
            self._snapshot()

    # -- order routing -------------------------------------------------------------------
    def _route(self) -> None:
        """Pass the orders placed by the strategy through risk to the venue (step 6)."""
        new = self.ctx._new
        for _ in range(100):
            if not new:
                return
            batch = new[:]
            new.clear()
            if self.trade_from is not None and self.now < self.trade_from:
                self._refuse_before_trade_from(batch)
            else:
                self._apply(self.risk.screen(batch, self))
            if self.held:
                self._settle(self.now)
            if self._notes:
                self._deliver()
        raise RuntimeError("strategy keeps placing orders from its order callbacks (100 rounds)")

    def _apply(self, decisions: list[Decision]) -> None:
        """Act on the risk layer's decisions: send, hold for review, or reject."""
        orders, submit = self.orders, self.venue.submit
        for decision in decisions:
            order = decision.order
            orders[order.id] = order
            action = decision.action
            if action == "accept":
                submit(order, self.now)
            elif action == "hold":
                order.status = OrderStatus.HELD
                order.reason = f"{decision.check}: {decision.reason}"
                self.held[order.id] = order
                self.on_order_event(OrderEvent(self.now, order.id, order.symbol, OrderStatus.HELD, order.reason), order)
            else:
                self._reject(order, f"{decision.check}: {decision.reason}")

    def _refuse_before_trade_from(self, batch: list[Order]) -> None:
        """Reject orders placed before ``trade_from``: those bars only warm up indicators and features."""
        import numpy as np
        reason = f"trade_from: no orders before {np.datetime64(self.trade_from, 'ns').astype('datetime64[s]')}"
        for order in batch:
            self.orders[order.id] = order
            self._reject(order, reason)

    def _reject(self, order: Order, reason: str) -> None:
        order.status = OrderStatus.REJECTED
        order.reason = reason
        self.on_order_event(OrderEvent(self.now, order.id, order.symbol, OrderStatus.REJECTED, reason), order)

    def _settle(self, now: int) -> None:
        """Act on the answers to held orders: approved ones pass the other checks again and go out."""
        for order_id, action, reason in self.risk.poll(now):
            order = self.held.pop(order_id, None)
            if order is None:
                continue
            if action == "approve":
                order.status = OrderStatus.NEW
                order.reason = ""
                self._apply(self.risk.screen([order], self, review=False))
            else:
                self._reject(order, f"review: {reason}")

    def poll_risk(self, ts: int) -> None:
        """Live runs, before each step: answers to reviews, expiries, operator commands."""
        self._settle(self.clock.advance(ts))

    def cancel_held(self, order: Order, reason: str) -> bool:
        """Withdraw an order held for review; False if it is not held."""
        if self.held.pop(order.id, None) is None:
            return False
        self.risk.cancel_review(order)
        order.status = OrderStatus.CANCELLED
        order.reason = reason
        self.on_order_event(OrderEvent(self.now, order.id, order.symbol, OrderStatus.CANCELLED, reason), order)
        return True

    # -- Desk: what the risk layer may do on its own -------------------------------------
    def cancel_open(self, symbol: str | None, reason: str) -> list[Order]:
        """Cancel every working and held order (in ``symbol``, or all); returns them."""
        out = [o for o in self.venue.open_orders(symbol) if self.venue.cancel(o, self.now, reason)]
        out += [o for o in list(self.held.values()) if symbol in (None, o.symbol) and self.cancel_held(o, reason)]
        return out

    def cancel_order(self, order_id: str, reason: str) -> Order | None:
        """Cancel one working (or held) order by id (an operator's cancel); None when it is not open."""
        order = self.orders.get(order_id)
        if order is None:
            return None
        if order_id in self.held:
            return order if self.cancel_held(order, reason) else None
        return order if order.is_open and self.venue.cancel(order, self.now, reason) else None

    def flatten(self, reason: str) -> list[Order]:
        """Send a market order closing each open position, straight to the venue; returns them."""
        out = []
        for symbol in sorted(self.portfolio.positions):
            qty = self.portfolio.positions[symbol].qty
            if not qty:
                continue
            order = Order(self.next_order_id(), symbol, Side.SELL if qty > 0 else Side.BUY, abs(qty),
                          OrderType.MARKET, None, None, TimeInForce.GTC, self.now, self.market.price(symbol),
                          tag="risk:flatten", reason=reason)
            self.orders[order.id] = order
            self.venue.submit(order, self.now)
            out.append(order)
        return out

    def cancel_unsent(self, order: Order) -> None:
        order.status = OrderStatus.CANCELLED
        order.reason = "cancelled by strategy before it was sent"
        self.orders[order.id] = order
        self.order_events.append(OrderEvent(self.now, order.id, order.symbol, order.status, order.reason))

    def _deliver(self) -> None:
        notes = self._notes[:]
        self._notes.clear()
        strategy, ctx = self.strategy, self.ctx
        for kind, obj in notes:
            if kind == "fill":
                strategy.on_fill(ctx, obj)
            else:
                strategy.on_order(ctx, obj)

    # -- brokers.base.Account: what the venue asks while matching -------------------------
    def affordable(self, symbol: str, side: Side, qty: float, price: float, commission: float) -> str | None:
        if self._futures:
            fut = self.rules.instruments.future(symbol)
            if fut is not None:
                return self._margin_for(symbol, fut, side, qty, price, commission)
        if side is Side.SELL:
            return None
        held = self.portfolio.position(symbol)
        opening = qty > max(0.0, -held)
        cash = self.portfolio.cash
        if opening and cash - qty * price - commission < 0:
            return f"insufficient cash at fill: needs {qty * price + commission:.2f}, has {cash:.2f}"
        return None

    def pre_close(self, symbol: str) -> float:
        return self.market.prev_close(symbol)

    def price_limits(self, symbol: str, ts: int) -> tuple[float, float] | None:
        """(limit-down, limit-up) of ``symbol`` now: the bar's limit_down/limit_up columns where the data has them
        (NaN: that side has none), else its instrument's ``limit`` around the previous close (rounded half up to
        the tick); None: no limits."""
        up_col, down_col = self._limit_cols
        up = down = _NAN
        if symbol in up_col or symbol in down_col:
            r = self.market.rows.get(symbol, -1)
            if r >= 0:
                if symbol in up_col:
                    up = float(up_col[symbol][r])
                if symbol in down_col:
                    down = float(down_col[symbol][r])
        if up != up and down != down:
            inst = self.rules.instruments.resolve(symbol) if self.rules.instruments else None
            if inst is None or not inst.limit:
                return None
            pc = self.market.prev_close(symbol)
            if not pc > 0:
                return None
            down, up = pc * (1.0 - inst.limit), pc * (1.0 + inst.limit)
            if inst.tick > 0:
                down, up = round_half_up(down, inst.tick), round_half_up(up, inst.tick)
        return (down if down == down else -_INF), (up if up == up else _INF)

    # -- futures: margin, settlement, margin calls ---------------------------------------
    def margin_in_use(self) -> float:
        """Initial margin of the open futures positions at the last prices (0.0 without futures)."""
        return self.portfolio.margin(self.market.price) if self._futures else 0.0

    def _margin_for(self, symbol: str, fut: Any, side: Side, qty: float, price: float, commission: float) -> str | None:
        """A futures fill (long or short): None when the equity less the fee covers the initial margin of every
        futures position after it (this one at the fill price); a fill that only reduces a position passes."""
        q0 = self.portfolio.position(symbol)
        q1 = q0 + (qty if side is Side.BUY else -qty)
        if abs(q1) <= abs(q0) + 1e-12:
            return None
        price_of = self.market.price
        used = self.portfolio.margin(price_of)
        rate = fut.margin_rate
        mult = fut.multiplier
        held = abs(q0) * price_of(symbol) * mult * rate if q0 else 0.0
        after = used - held + abs(q1) * price * mult * rate
        equity = self.portfolio.equity(price_of)
        if equity - commission < after - 1e-9:
            return (f"insufficient margin at fill: {side.value.lower()} {qty:g} {symbol} @ {price:g} needs margin "
                    f"{after - used:,.2f} + fee {commission:,.2f}, available {equity - used:,.2f} "
                    f"(equity {equity:,.2f} - margin in use {used:,.2f})")
        return None

    def _settle_futures(self, ts: int) -> None:
        """Step (2) with futures: settle the open positions to the last prices (variation into cash, logged
        for the equity curve), then the margin call: when equity falls below the maintenance margin
        (|qty| x price x multiplier x maintenance_margin, summed), every futures position is closed by a market
        order (filled at the next bar's open) and a risk event ``liquidation`` records the figures."""
        portfolio = self.portfolio
        if portfolio.settle(self.market.price, self.day_ends is not None and ts in self.day_ends):
            self._dirty = True
        if self._liquidating:
            self._liquidating = [o for o in self._liquidating if o.is_open]
            if self._liquidating:
                return
        if not portfolio.open_futures():
            return
        maintenance = portfolio.margin(self.market.price, "maintenance")
        equity = portfolio.equity(self.market.price)
        if not maintenance or equity >= maintenance:
            return
        reason = (f"equity {equity:,.2f} below maintenance margin {maintenance:,.2f}: futures positions closed "
                  f"at the next bar's open")
        for symbol in sorted(portfolio.multipliers):
            qty = portfolio.position(symbol)
            if not qty:
                continue
            for o in self.cancel_open(symbol, f"liquidation: {reason}"):
                self.risk.record(ts, "liquidation", "cancel", reason, order=o)
            order = Order(self.next_order_id(), symbol, Side.SELL if qty > 0 else Side.BUY, abs(qty),
                          OrderType.MARKET, None, None, TimeInForce.GTC, self.now, self.market.price(symbol),
                          tag="risk:liquidation", reason=f"liquidation: {reason}")
            self.orders[order.id] = order
            self.venue.submit(order, self.now)
            self._liquidating.append(order)
            self.risk.record(ts, "liquidation", "flatten", f"{reason} ({symbol} {qty:g} @ {self.market.price(symbol):g})",
                             order=order, value=equity)

    def _roll(self, ts: int) -> None:
        """The rolls due at ``ts``: cancel the old contract's working orders, then market orders tagged ``roll``
        close its position and open the same signed quantity in the new contract (both fill at the next bar's
        open, straight to the venue like a flatten; recorded in ``rolls_log``)."""
        while self.rolls and ts >= self.rolls[0].ts:
            roll = self.rolls.pop(0)
            qty = self.portfolio.position(roll.old)
            self.cancel_open(roll.old, f"roll to {roll.new}")
            entry = {**roll.describe(), "at": str(__import__("numpy").datetime64(ts, "ns")), "qty": qty,
                     "orders": []}
            if qty:
                for symbol, side in ((roll.old, Side.SELL if qty > 0 else Side.BUY),
                                     (roll.new, Side.BUY if qty > 0 else Side.SELL)):
                    order = Order(self.next_order_id(), symbol, side, abs(qty), OrderType.MARKET, None, None,
                                  TimeInForce.GTC, self.now, self.market.price(symbol), tag="roll",
                                  reason=f"roll {roll.old} -> {roll.new}")
                    self.orders[order.id] = order
                    self.venue.submit(order, self.now)
                    entry["orders"].append(order.id)
            self.rolls_log.append(entry)
            self.log.info("futures_roll", **{k: v for k, v in entry.items() if k != "orders"})

    def sellable(self, symbol: str) -> float:
        """The position, less (with T+1) what was bought today."""
        return self.settlement.sellable(symbol, self.portfolio.position(symbol), self.clock.now)

    # -- brokers.base.FillSink: what the venue reports -----------------------------------
    def on_fill(self, fill: Fill, order: Order) -> None:
        self.settlement.on_fill(fill)
        qty = self.portfolio.apply(fill)
        self.fills.append(fill)
        self.qty_log.append((self.step_index, fill.symbol, qty))
        self._dirty = True
        if self._wants_notes:
            self._notes.append(("fill", fill))

    def on_order_event(self, event: OrderEvent, order: Order) -> None:
        self.order_events.append(event)
        if self._wants_notes:
            self._notes.append(("order", order))

    # -- AccountView for risk ------------------------------------------------------------
    @property
    def cash(self) -> float:
        return self.portfolio.cash

    def position(self, symbol: str) -> float:
        return self.portfolio.position(symbol)

    def price(self, symbol: str) -> float:
        return self.market.price(symbol)

    @property
    def equity(self) -> float:
        return self.portfolio.equity(self.market.price)

    def working(self, symbol: str) -> float:
        return sum(o.remaining if o.side is Side.BUY else -o.remaining for o in self.venue.working.get(symbol, ()))

    def working_sells(self, symbol: str) -> float:
        return sum(o.remaining for o in self.venue.working.get(symbol, ()) if o.side is Side.SELL)

    def exposures(self) -> dict[str, float]:
        out = {s: p.qty for s, p in self.portfolio.positions.items() if p.qty}
        for symbol in self.venue.working:
            out[symbol] = out.get(symbol, 0.0) + self.working(symbol)
        return out

    def _corporate(self, ts: int, items: list[tuple[str, float, float]]) -> None:
        """Step (0) at an ex-date, before any matching: per symbol (sorted), the cash dividend on the shares
        held at the previous close (debited for a short), then a split: the position's quantity x ratio and
        average cost / ratio, and every working or held order of the symbol cancelled with reason "split"
        (its quantity and prices were set in pre-split shares). Cash and quantity go to the logs the equity
        curve is rebuilt from, so the curve stays cash + sum(qty x close) at every step."""
        for symbol, dividend, ratio in items:
            cancelled = [o.id for o in self.cancel_open(symbol, "split")] if ratio != 1.0 else []
            q0, q1, paid = self.portfolio.corporate_action(symbol, dividend, ratio)
            if q1 != q0:
                self.qty_log.append((self.step_index, symbol, q1))
            if paid or q1 != q0:
                self._dirty = True
            entry = {"ts": ts, "symbol": symbol, "dividend": dividend, "split": ratio, "qty_before": q0,
                     "qty_after": q1, "cash": paid, "cancelled": len(cancelled)}
            self.actions_log.append(entry)
            import numpy as np
            self.log.info("corporate_action", **{**entry, "ts": str(np.datetime64(ts, "ns"))})

    def _snapshot(self) -> None:
        """Record cash after a step with fills (the equity curve is rebuilt from these logs)."""
        self._dirty = False
        log = self.cash_log
        if log and log[-1][0] == self.step_index:
            log[-1] = (self.step_index, self.portfolio.cash)
        else:
            log.append((self.step_index, self.portfolio.cash))
        daily = self.portfolio.multipliers if self.log_all_marks else self.portfolio.daily
        if daily:   # futures settled daily: their mark and pending variation (rebuild_equity adds them)
            pos, marks, step = self.portfolio.positions, self.mark_log, self.step_index
            while marks and marks[-1][0] == step:
                marks.pop()
            for symbol in sorted(daily):
                p = pos.get(symbol)
                if p is not None:
                    marks.append((step, symbol, p.mark, p.pending))
