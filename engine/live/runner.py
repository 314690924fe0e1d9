"""``tradeloop live``: bars over MQTT -> the backtest's engine, risk layer and strategy -> a FIX 4.4 broker.

Start-up: open the state file (``live.state``: FIX sequence numbers and the journal of
engine/live/journal.py), refuse one that is empty, truncated or corrupt (``--fresh-state`` moves
such a file aside, never deletes it; a path that does not exist starts fresh) or that belongs to
another run, rebuild cash and positions from the
journaled fills, replay the journaled bars through the strategy with every order refused
(warm-up: indicators and strategy state come back, nothing is sent), log on to the broker (it
resends what we missed; ExecIDs already booked are ignored), and reconcile each order the
journal holds open with an OrderStatusRequest, logging every difference it resolves. Then each
timestamp's bars are journaled and stepped exactly as a backtest steps them.

A group of bars (one timestamp) is stepped when every symbol has reported, when the
publisher's ``$clock`` mark for it arrives, or when a later bar arrives. With ``live.lockstep``
(paper trading and parity tests) a group is stepped only once the exchange has acknowledged
the timestamp (``$ack/exchange``) and a FIX TestRequest round trip has drained its reports, and
the runner acknowledges each step (``$ack/runner``) once the broker has answered every order
it sent, so a replay in lockstep is deterministic. In real trading the time between bars plays
that role. Ticks (``live.ticks``) in lockstep are held like bars: a timestamp's ticks go to the
strategy, in arrival order, only once the exchange has matched them (``$ack/exchange``), so an order
placed on a tick is first matched on the next timestamp's ticks, as in the tick backtest (whose
QuoteVenue lets an order see only ticks stamped later than it: brokers/quotes.py).

Operators (risk/control.py): the runner polls the state file every 50 ms between steps too, so
answers to reviews (which wait in wall-clock time), halts, resumes, cancels and the kill switch apply
even when no data arrives; in lockstep it does not acknowledge a timestamp while an order waits for
review, which pauses a paper replay. After each step it publishes its state for the console
(engine/live/publish.py), and ``live.console`` starts the console beside it (engine/live/consoleproc.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import structlog

from tradeloop.brokers.fix.client import FixBroker
from tradeloop.brokers.fix.secrets import SecretError, load_password
from tradeloop.brokers.fix.session import SessionConfig
from tradeloop.brokers.fix.store import SQLiteSequenceStore, check_state_file
from tradeloop.brokers.orders import Order, OrderStatus, Side
from tradeloop.brokers.remote import RemoteVenue
from tradeloop.data.mqtt import Ack, ClockMark, FutureSkew, MqttFeed
from tradeloop.data.mqtt.conn import Credentials, TlsConfig
from tradeloop.data.schema import Bar, Tick
from tradeloop.risk.pipeline import RiskPipeline, reject
from tradeloop.risk.review import QueueReviewer
from tradeloop.risk.stale import StaleGuard

from tradeloop.engine.runs.result import BacktestResult
from tradeloop.errors import ConfigError
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.live.journal import Journal, Recovered
from tradeloop.engine.live.lagstats import LagStats
from tradeloop.engine.live.consoleproc import ConsoleProcess, parse_bind
from tradeloop.engine.live.publish import Publisher
from tradeloop.engine.drivers.live import LiveDriver
from tradeloop.brokers.instruments import periods_per_year
from tradeloop.engine.metrics.performance import compute_metrics
from tradeloop.engine.metrics.risk_events import risk_metrics
from tradeloop.engine.assembly.build import build_risk, build_rules, build_strategy, load_inputs
from tradeloop.engine.report.walkforward import write_run_report
from tradeloop.engine.runs.recorder import Status, build_manifest, write_run
from tradeloop.engine.telemetry.logs import RunEvents, run_events


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"live.fix: expected HOST:PORT, got {text!r}")
    return host, int(port)


@dataclass
class LiveStats:
    """What the runner did this session (logged at the end, kept in the run folder's metrics)."""

    steps: int = 0
    bars: int = 0
    replayed_bars: int = 0       # journaled bars replayed for warm-up at start
    history_bars: int = 0        # --data history bars replayed for warm-up before them
    recovered_orders: int = 0
    recovered_fills: int = 0
    open_at_start: int = 0       # recovered orders still working at the broker as far as the journal knows
    reconciled: int = 0          # open orders whose status changed when asked at start
    old_bars_dropped: int = 0    # bars at or before the last processed timestamp (resent after a restart)
    ticks: int = 0
    market_data_dropped: dict[str, int] = field(default_factory=dict)   # by the feed, by reason (future, json, ...)


STATE_TABLES = ("fix_session", "live_meta")   # what a live state file holds (FIX store + journal)


def lock_state(state: str) -> IO[str]:
    """An exclusive lock on the state file for this runner, held until :meth:`LiveRunner.close` or
    the process ends (a killed runner releases it). Two runners on one state file would send
    orders with the same ClOrdIDs under one FIX sequence: the second is refused, naming the first."""
    path = Path(f"{state}.lock")
    f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the runner's lifetime
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise ConfigError(f"live.state {state} is in use by another runner ({holder}); stop it before starting "
                          "this one") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    return f


class _WarmUpGate:
    """Refuses every order while history or journaled bars are replayed (history is past; journaled bars were acted on)."""

    name = "warm_up"

    def __call__(self, order: Order, state: Any) -> Any:
        return reject("warm-up replay (history or journaled bars): orders are not sent")


class LiveRunner:
    """One live session of a strategy: recover, connect, reconcile, then trade bar by bar."""

    def __init__(self, cfg: RunConfig, *, log: Any = None, connect_timeout_s: float = 30.0,
                 fresh_state: bool = False) -> None:
        live = cfg.live
        for key in ("mqtt", "fix", "state"):
            if not getattr(live, key):
                raise ConfigError(f"live.{key} is required for a live run (--{key} or [live] {key} = ...)")
        if not live.symbols:
            raise ConfigError("live.symbols is required: which symbols to trade (--symbols A,B or [live] symbols)")
        self.cfg = cfg
        self.live = live
        self.log = log or structlog.get_logger("tradeloop.live")
        self.host, self.port = parse_hostport(live.fix)
        self.connect_timeout_s = connect_timeout_s
        self.stats = LiveStats()
        self.last_ts: int | None = None
        self.tick_lag = LagStats()   # arrival (after on_tick and its orders) minus each tick's ts
        self.ready = asyncio.Event()   # set once logged on, reconciled and subscribed to market data
        self._saved_risk: dict[str, Any] = {}
        self.inputs: list[dict[str, Any]] = []   # manifest entries of the --data history files
        self._feed: MqttFeed | None = None
        self.mode = "live"            # or "paper" (engine/live/paper.py): what the snapshot says
        self.run_id = Path(live.state).stem
        self.hold_open = False        # paper with a console: stay open after the replay until stopped
        self.paused = False           # lockstep: waiting for a person to answer a held order
        self.finished = False         # the market data ended (held open for operators)
        self.publisher: Publisher | None = None
        self.console: ConsoleProcess | None = None
        if live.console:
            parse_bind(live.console)
        self._lock = lock_state(live.state)
        try:
            # an existing file that is no state (empty, truncated, corrupt) is refused, never started over
            moved = check_state_file(live.state, STATE_TABLES, what="live.state", fresh=fresh_state)
            if moved is not None:
                self.log.warning("live.state_moved_aside", state=live.state, moved_to=str(moved))
            self.future = self._future_skew()
            self._build()
        except BaseException:
            self._lock.close()
            raise

    # ------------------------------------------------------------------ assembly
    def _future_skew(self) -> FutureSkew:
        """``live.future_tick_s`` / ``live.future_bar_s`` (None: FutureSkew's defaults) as the feed's setting."""
        live = self.live
        try:
            return FutureSkew(FutureSkew().tick_s if live.future_tick_s is None else live.future_tick_s,
                              live.future_bar_s)
        except ValueError as e:
            raise ConfigError(f"live.future_tick_s / live.future_bar_s: {e}") from None

    def _build(self) -> None:
        cfg, live = self.cfg, self.live
        self.strategy = build_strategy(cfg)
        cls = type(self.strategy)
        self.store = SQLiteSequenceStore(live.state, f"FIX.4.4:{live.sender}->{live.target}")
        self.journal = Journal(self.store)
        self.journal.claim({"strategy": f"{cls.__module__}:{cls.__qualname__}", "params": self.strategy.params,
                            "symbols": sorted(live.symbols), "cash": cfg.run.cash})
        self.rules = build_rules(cfg)
        self.risk = build_risk(cfg, self.rules, live=True)
        self.risk.symbols = sorted(live.symbols)   # an operator's halt of another symbol is refused
        self.stale = StaleGuard(live.stale_after) if live.stale_after else None
        if self.stale is not None:
            self.risk.checks.insert(0, self.stale)
        try:
            password = load_password(live.password_env, live.password_file)
        except SecretError as e:
            raise ConfigError(f"live: {e}") from None
        session = SessionConfig(live.sender, live.target, username=live.username, password=password,
                                heartbeat_s=live.heartbeat_s)
        self.broker = FixBroker(session, self.host, self.port, self.store, log=self.log)
        self.venue = RemoteVenue(self.broker, self.journal, log=self.log)

    # ------------------------------------------------------------------ recovery
    def recover(self) -> Recovered:
        """Cash, positions, orders, strategy and risk state from the journal; builds the live engine.

        After a restart the journaled bars are replayed through the strategy on a separate warm-up
        engine whose risk layer refuses every order and whose venue is simulated: nothing it does can
        reach the broker. Its market (indicators) and the strategy object then carry on in the live
        engine, and the risk checks take back the state journaled after the last step.
        """
        rec = self.journal.load()
        cfg, live = self.cfg, self.live
        orders = {o.id: o for o, _, _ in rec.orders}
        market = None
        history = self._history(rec.bars[0].ts if rec.bars else None)
        if history or not rec.fresh:
            warm = LiveDriver(self.strategy, live.symbols, cash=cfg.run.cash, rules=self.rules,
                              risk=RiskPipeline([_WarmUpGate()]), log=self.log)
            self._book(warm.engine, rec, orders)
            warm.start()
            for bar in history + rec.bars:
                warm.feed(bar)
            warm.flush()
            market = warm.market
            self.stats.replayed_bars = len(rec.bars)
            self.stats.history_bars = len(history)
        self.driver = LiveDriver(self.strategy, live.symbols, cash=cfg.run.cash, rules=self.rules, risk=self.risk,
                                 order_prefix=cfg.run.order_prefix, log=self.log, venue=self.venue, market=market)
        self.engine = engine = self.driver.engine
        self._book(engine, rec, orders)
        engine.orders.update(orders)
        engine._order_seq = rec.order_seq(engine._order_prefix)
        self.broker.restore(rec.orders, (e for e, _ in rec.fills))
        self.venue.restore(list(orders.values()))
        if rec.risk:
            self._restore_risk(rec.risk)
        self._cancel_orphaned_reviews(rec.last_ts or 0)
        self.stats.recovered_orders, self.stats.recovered_fills = len(orders), len(rec.fills)
        self.stats.open_at_start = len(self.venue.open_orders())
        if market is None:
            self.driver.start()
        else:
            self.driver._started = True    # on_start ran in the warm-up (and in the first process)
        self.last_ts = rec.last_ts if rec.last_ts is not None else (history[-1].ts if history else None)
        self.driver.equity.clear()     # the equity log covers this session's steps
        if not rec.fresh:
            self.log.info("live.recovered", orders=len(orders), open=len(self.venue.open_orders()),
                          fills=len(rec.fills), bars=len(rec.bars), last_ts=rec.last_ts,
                          cash=round(engine.portfolio.cash, 6),
                          positions={s: p.qty for s, p in sorted(engine.portfolio.positions.items()) if p.qty})
        return rec

    def _cancel_orphaned_reviews(self, ts: int) -> None:
        """Reviews a previous process left unfinished: its held orders lived only in that process (held
        orders are never sent, so never journaled), so no answer can place them now. Each is cancelled
        in the state file (a late ``tradeloop review approve`` then says so) and recorded as a risk event."""
        reviewer = getattr(self.risk.review, "reviewer", None)
        if not isinstance(reviewer, QueueReviewer):
            return
        why = "the live runner restarted before acting on it; the held order was not placed"
        for row in reviewer.store.cancel_unfinished(why):
            order = Order(row["order_id"], row["symbol"], Side[row["side"]], row["qty"])
            was = row["status"] if row["status"] == "pending" else f"{row['status']} by {row['answered_by']}"
            self.risk.record(ts, "review", "cancel", f"{why} (was {was})", order=order)

    def _history(self, before: int | None) -> list[Bar]:
        """Bars of ``--data`` (history files of the traded symbols) before ``before``, in timestamp order.

        They warm indicators and strategy state up like journaled bars do (every order refused), so a
        fresh session does not start cold; live bars at or before the last of them are dropped.
        """
        if not self.cfg.data:
            return []
        series, self.inputs = load_inputs(self.cfg, hashes=False)
        unknown = sorted({s.symbol for s in series} - set(self.live.symbols))
        if unknown:
            raise ConfigError(f"--data history for {', '.join(unknown)}: not among live.symbols "
                              f"({', '.join(self.live.symbols)})")
        bars = [s.bar(i) for s in series for i in range(len(s)) if before is None or s.ts[i] < before]
        bars.sort(key=lambda b: (b.ts, b.symbol))
        return bars

    @staticmethod
    def _book(engine: Any, rec: Recovered, orders: dict[str, Order]) -> None:
        """Book the journaled fills on ``engine`` (cash, positions, T+1 state) without telling the strategy."""
        for _, fill in rec.fills:
            engine.on_fill(fill, orders.get(fill.order_id) or Order(fill.order_id, fill.symbol, fill.side, fill.qty))
        engine._notes.clear()

    def _risk_state(self) -> dict[str, Any]:
        """The state of the risk checks that keep one (drawdown peak and stop, halts), by check name."""
        return {c.name: c.state() for c in self.risk.checks if hasattr(c, "state")}

    def _save_risk(self) -> None:
        state = self._risk_state()
        if state and state != self._saved_risk:
            self.journal.risk(state)
            self._saved_risk = state

    def _restore_risk(self, saved: dict[str, Any]) -> None:
        for check in self.risk.checks:
            if check.name in saved and hasattr(check, "restore"):
                check.restore(saved[check.name])
        self.log.info("live.risk_state_restored", **{k: v for k, v in saved.items()})

    async def reconcile(self, timeout: float = 10.0) -> None:
        """Ask the broker for the status of every order the journal holds open; log each difference."""
        for order in self.venue.open_orders():
            before = (order.status, order.filled_qty)
            try:
                await self.broker.status(order, timeout)
            except TimeoutError:
                self.log.error("live.reconcile_timeout", order_id=order.id)
                continue
            if (order.status, order.filled_qty) != before:
                self.stats.reconciled += 1
                self.log.warning("live.reconciled", order_id=order.id, status_was=before[0].value,
                                 status_now=order.status.value, filled_was=before[1], filled_now=order.filled_qty,
                                 reason=order.reason)
        positions = {s: p.qty for s, p in sorted(self.engine.portfolio.positions.items()) if p.qty}
        self.log.info("live.reconciled_all", open_orders=len(self.venue.open_orders()), positions=positions)

    # ------------------------------------------------------------------ the session
    async def run(self, stop: asyncio.Event | None = None) -> BacktestResult:
        """Trade until the publisher's end-of-stream mark or ``stop``; returns the session's result."""
        t0 = time.perf_counter()
        self.recover()
        await self.broker.start()
        session = self.broker.session
        deadline = time.monotonic() + self.connect_timeout_s
        while not session.logged_on:   # a refused logon (bad password, unknown CompID) will not heal: stop
            if session.logon_refused or time.monotonic() > deadline:
                await self.broker.stop()
                why = f"logon refused: {session.logon_refused}" if session.logon_refused else \
                    f"no logon within {self.connect_timeout_s:g} s"
                raise ConnectionError(f"FIX session with {self.host}:{self.port}: {why}")
            await self.broker.wait_logged_on(0.05)
        await self.reconcile()
        live = self.live
        feed = MqttFeed(live.mqtt, live.symbols, venue=live.venue, interval=live.interval,
                        ticks=live.ticks, qos=1 if live.lockstep else 0, stale_after=live.stale_after,
                        on_stale=self._on_stale, on_fresh=self._on_fresh, clock=True,
                        acks=("exchange",) if live.lockstep else (), tls=TlsConfig.from_env(),
                        credentials=Credentials.from_env(), client_id=f"tradeloop-live-{os.getpid()}",
                        future=self.future)
        poller = None
        try:
            async with feed:
                self._feed = feed
                await feed.wait_ready()
                self._start_publishing()
                if live.console:   # before ready: the page is up before the first bar is traded
                    self.console = await asyncio.to_thread(ConsoleProcess, live.state, live.console)
                    self.log.info("live.console", url=self.console.url, log=str(self.console.log_path))
                poller = asyncio.create_task(self._poller(), name="live-poll")
                self.ready.set()
                consume = asyncio.create_task(self._consume(feed), name="live-consume")
                waits = {consume, poller} | ({asyncio.ensure_future(stop.wait())} if stop is not None else set())
                done, rest = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for task in rest - {poller}:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if poller in done:
                    poller.result()    # an operator's command that failed the engine fails the run
                if consume in done:
                    consume.result()   # a failure of the loop is this run's failure
                    if self.hold_open and stop is not None and not stop.is_set():
                        self.finished = True
                        self._publish(force=True)
                        self.log.info("live.finished_still_serving", console=self.console.url if self.console else None,
                                      hint="the replay is over; operators may still act; SIGINT/SIGTERM ends it")
                        stopped = asyncio.ensure_future(stop.wait())
                        await asyncio.wait({stopped, poller}, return_when=asyncio.FIRST_COMPLETED)
                        stopped.cancel()
                        if poller.done():
                            poller.result()
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            self.stats.market_data_dropped = dict(feed.stats.dropped)
            self.driver.finish()
            await self._settle()
            await self.broker.stop()
            self.finished = True
            self._publish(force=True)   # the last state: finished, FIX logged out
            if self.console is not None:
                self.console.stop()
        return self.result(time.perf_counter() - t0)

    # ------------------------------------------------------------------ operators
    def _start_publishing(self) -> None:
        """The snapshot and event log the console and ``tradeloop review`` read (engine/live/publish.py)."""
        if self.risk.control is None:
            return
        cls = type(self.strategy)
        self.publisher = Publisher(self.risk.control, self.engine, self.driver.equity, mode=self.mode,
                                   run_id=self.run_id, strategy=f"{cls.__module__}:{cls.__qualname__}",
                                   status=self._status)
        self._publish(force=True)

    def _status(self) -> dict[str, Any]:
        feed = self._feed
        return {"fix": "logged_on" if self.broker.session.logged_on else "down",
                "mqtt": "connected" if feed is not None and feed._client is not None else "down",
                "paused_for_review": self.paused, "finished": self.finished}

    def _publish(self, force: bool = False) -> None:
        if self.publisher is not None:
            self.publisher.flush(force=force)

    def _poll(self) -> None:
        """Between steps: answers to reviews, expiries (wall clock), operator commands; then publish."""
        before = self.engine._order_seq, len(self.risk.events)
        self.engine.poll_risk(self.engine.now)
        if (self.engine._order_seq, len(self.risk.events)) != before:
            self._save_risk()
        self._publish()

    async def _poller(self, every_s: float = 0.05) -> None:
        """Operators act between bars too (a quiet market, a paused replay): poll every ``every_s`` of wall clock."""
        while True:
            await asyncio.sleep(every_s)
            self._poll()

    def _pending_reviews(self) -> list[Any]:
        pending = getattr(getattr(self.risk.review, "reviewer", None), "pending", None)
        return pending() if pending is not None else []

    async def _hold_for_reviews(self, ts: int) -> None:
        """Lockstep: while an order waits for a person, do not acknowledge ``ts``, so the replay does not publish
        the next timestamp (the paper session pauses); go on once every review is answered or expired."""
        held = self._pending_reviews()
        if not held:
            return
        self.paused = True
        self.log.info("live.paused_for_review", ts=ts, orders=[h.order.id for h in held],
                      deadline_s=round(max(h.deadline for h in held) - time.time(), 3))
        self._publish(force=True)
        try:
            while self._pending_reviews():
                await asyncio.sleep(0.02)
                self._poll()
        finally:
            self.paused = False
        self.log.info("live.resumed_after_review", ts=ts)
        self._publish(force=True)
        sent = [o for o in self.venue.open_orders() if o.status is OrderStatus.NEW]
        if sent:   # an approved order reaches the exchange before the next timestamp does
            await self.venue.acknowledged(sent)

    async def _consume(self, feed: MqttFeed) -> None:
        n_symbols = len(self.driver.symbols)
        lockstep = self.live.lockstep
        pending: list[Bar | Tick] = []   # lockstep: bars and ticks of the timestamps not stepped yet
        clock_ts: int | None = None
        exchange_ts = -1
        lag = self.tick_lag
        async for ev in feed:
            if isinstance(ev, Bar):
                if self.last_ts is not None and ev.ts <= self.last_ts:
                    self.stats.old_bars_dropped += 1
                    continue
                if pending and ev.ts != pending[0].ts and not lockstep:
                    await self._step(pending)
                    pending = []
                pending.append(ev)
                if not lockstep and len(pending) == n_symbols:
                    await self._step(pending)
                    pending = []
            elif isinstance(ev, ClockMark):
                if not lockstep:
                    if pending and pending[0].ts <= ev.ts:
                        await self._step(pending)
                        pending = []
                    continue
                clock_ts = ev.ts
                if exchange_ts >= clock_ts:
                    pending = await self._lockstep(pending, clock_ts)
                    clock_ts = None
            elif isinstance(ev, Ack):
                exchange_ts = max(exchange_ts, ev.ts)
                if clock_ts is not None and exchange_ts >= clock_ts:
                    pending = await self._lockstep(pending, clock_ts)
                    clock_ts = None
            elif isinstance(ev, Tick) and lockstep:
                pending.append(ev)   # fed once the exchange has matched its timestamp (_lockstep)
            elif isinstance(ev, Tick):
                if pending:
                    await self._step(pending)
                    pending = []
                self.driver.feed(ev)
                self.stats.ticks += 1
                lag.add(time.time_ns() - ev.ts, ev.ts)   # market-data timestamps are wall-clock times live
        if pending:
            if all(isinstance(b, Bar) for b in pending):
                await self._step(pending)
            else:
                await self._step_ticks(pending)

    async def _lockstep(self, pending: list[Bar | Tick], ts: int) -> list[Bar | Tick]:
        """Step the bars (and ticks) up to ``ts`` once the exchange has acknowledged ``ts``, then acknowledge it
        ourselves."""
        now = [b for b in pending if b.ts <= ts]
        if now:
            bars = [b for b in now if isinstance(b, Bar)]
            if len(bars) == len(now):
                await self._step(bars, sync=True)
            else:
                await self._step_ticks(now)
        await self._hold_for_reviews(ts)
        if self.live.pace:
            await asyncio.sleep(self.live.pace)
        await self._feed.ack("runner", ts)
        return [b for b in pending if b.ts > ts]

    async def _step_ticks(self, events: list[Bar | Tick]) -> None:
        """Lockstep: feed one or more timestamps' bars and ticks in order (bars of a stamp step before its
        ticks), once the exchange's reports for them are in; then wait for the broker's answers to new orders."""
        if self.venue.open_orders():
            await self.broker.session.ping()   # the exchange's reports for these ticks are in
        before = self.engine._order_seq
        bars: list[Bar] = []
        lag = self.tick_lag
        for ev in events:
            if isinstance(ev, Bar):
                bars.append(ev)
                continue
            if bars:
                await self._step(bars)
                bars = []
            self.driver.feed(ev)
            self.stats.ticks += 1
            lag.add(time.time_ns() - ev.ts, ev.ts)
        if bars:
            await self._step(bars)
        self._publish()
        if self.engine._order_seq != before:
            sent = [o for o in self.venue.open_orders() if o.status is OrderStatus.NEW]
            await self.venue.acknowledged(sent)

    async def _step(self, bars: list[Bar], *, sync: bool = False) -> None:
        """Journal one timestamp's bars, step the engine over them, and (lockstep) wait for the broker's answers."""
        if sync and self.venue.open_orders():
            await self.broker.session.ping()   # the exchange's reports for this timestamp are in
        ts = bars[0].ts
        self.journal.bars(bars)
        before = self.engine._order_seq
        for bar in bars:
            self.driver.feed(bar)
        self.driver.flush()
        self.last_ts = ts
        self._save_risk()
        self._publish()
        self.stats.steps += 1
        self.stats.bars += len(bars)
        if sync and self.engine._order_seq != before:
            sent = [o for o in self.venue.open_orders() if o.status is OrderStatus.NEW]
            await self.venue.acknowledged(sent)

    async def _settle(self, timeout: float = 5.0) -> None:
        """At the end: give the broker a moment to answer orders still unacknowledged."""
        sent = [o for o in self.venue.open_orders() if o.status is OrderStatus.NEW]
        if sent and self.broker.session.logged_on:
            with contextlib.suppress(TimeoutError):
                await self.venue.acknowledged(sent, timeout)

    # ------------------------------------------------------------------ staleness
    def _on_stale(self, symbol: str) -> None:
        if self.stale is not None:
            self.stale.halt(self.engine.now, symbol)

    def _on_fresh(self, symbol: str) -> None:
        if self.stale is not None:
            self.stale.resume(self.engine.now, symbol)

    # ------------------------------------------------------------------ output
    def result(self, elapsed_s: float) -> BacktestResult:
        """This session as a run result (the same files as a backtest's run folder)."""
        e, eq = self.engine, self.driver.equity
        ts = np.asarray(eq.ts, dtype=np.int64)
        equity = np.asarray(eq.equity, dtype=np.float64)
        res = BacktestResult(symbols=list(self.driver.symbols), tz=None, start_cash=e.portfolio.start_cash, ts=ts,
                             cash=np.asarray(eq.cash, dtype=np.float64), equity=equity,
                             gross_exposure=np.asarray(eq.gross, dtype=np.float64),
                             fills=list(e.fills), orders=list(e.orders.values()), order_events=list(e.order_events),
                             bars=self.stats.bars, elapsed_s=elapsed_s, risk_events=list(self.risk.events),
                             models=list(e.models))
        if len(ts):
            res.metrics = compute_metrics(ts, equity, res.start_cash, res.fills, gross_exposure=res.gross_exposure,
                                          periods_per_year=periods_per_year(self.rules.instruments, res.symbols))
            res.metrics.update(risk_metrics(res.risk_events, None))
        if self._feed is not None:   # so far (a failed session's result is built before run() ends)
            self.stats.market_data_dropped = dict(self._feed.stats.dropped)
        res.metrics["live"] = dict(vars(self.stats))
        lags = self.tick_lag.summary()   # does the lag grow over the session? (p99 per second)
        if lags is not None:
            res.metrics["live"].update(lags)
        return res

    def details(self) -> dict[str, Any]:
        """What only a session has, for its manifest's ``details``: the runner's counts (:class:`LiveStats`)."""
        return {"session": dict(vars(self.stats))}

    def close(self) -> None:
        self.store.close()
        self._lock.close()   # releases the state file for the next runner


class LiveFailure(RuntimeError):
    """A live session stopped by an error after it started trading (the strategy raised, the feed
    failed): says what, which orders are still working at the venue, and where the state is."""

    def __init__(self, error: BaseException, open_orders: list[str], state: str, folder: Path | None) -> None:
        self.open_orders, self.state, self.folder = open_orders, state, folder
        working = (f"{len(open_orders)} order(s) still working at the venue ({', '.join(open_orders)})"
                   if open_orders else "no order working at the venue")
        super().__init__(f"stopped by {type(error).__name__}: {error}; {working}; the session so far is "
                         f"{f'in {folder}' if folder else 'in the log'}, and a restart with --state {state} "
                         "resumes it")


async def run_live(cfg: RunConfig, *, out: Path | None = None, stop: asyncio.Event | None = None,
                   log: Any = None, on_ready: Any = None, fresh_state: bool = False) -> tuple[BacktestResult, Path | None]:
    """Run one live session and write its run folder to ``out`` (if given); ``on_ready(runner)`` once trading.

    An error after trading started (the strategy raising, say) still writes the run folder of the
    session so far (manifest ``status: failed`` with the ``error``), logs ``live.failed`` with the
    traceback and the orders left working at the venue (they stay there: the state file resumes the
    session), and raises :class:`LiveFailure`.
    """
    with run_events() as events:
        return await _run_live(cfg, out=out, stop=stop, log=log, on_ready=on_ready, events=events,
                               fresh_state=fresh_state)


async def _run_live(cfg: RunConfig, *, out: Path | None, stop: asyncio.Event | None, log: Any, on_ready: Any,
                    events: RunEvents, fresh_state: bool = False) -> tuple[BacktestResult, Path | None]:
    runner = LiveRunner(cfg, log=log, fresh_state=fresh_state)
    waiter = None
    if on_ready is not None:
        async def announce() -> None:
            await runner.ready.wait()
            on_ready(runner)
        waiter = asyncio.create_task(announce())
    t0 = time.perf_counter()
    failure: Exception | None = None
    try:
        result = await runner.run(stop)
    except Exception as e:
        if not runner.ready.is_set():   # never traded: the plain error says it all (bad logon, no broker)
            raise
        failure, result = e, runner.result(time.perf_counter() - t0)
    finally:
        if waiter is not None:
            waiter.cancel()
        runner.close()
    folder = Path(out) if out is not None else None
    error = f"{type(failure).__name__}: {failure}" if failure is not None else None
    open_orders: list[str] = []
    if failure is not None:
        open_orders = sorted(o.id for o in runner.venue.open_orders())
        runner.log.error("live.failed", error=error, open_orders=open_orders, state=cfg.live.state, exc_info=failure)
    if folder is not None:
        status: Status = ("failed" if failure is not None else
                          "stopped" if stop is not None and stop.is_set() else "completed")
        manifest = build_manifest("live", cfg, runner.strategy, runner.rules, inputs=runner.inputs,
                                  models=result.models, symbols=result.symbols, tz=result.tz, status=status,
                                  error=error, details=runner.details())
        write_run(folder, result, manifest, report=write_run_report, events=events)
    if failure is not None:
        raise LiveFailure(failure, open_orders, cfg.live.state, folder) from failure
    return result, folder
