"""``tradeloop live``: bars over MQTT -> the backtest's engine, risk layer and strategy -> a FIX 4.4 broker.

:class:`LiveRunner` orchestrates one session; each of its jobs is a module of its own:

- engine/live/parts.py builds the session from its config: the state file (locked for one runner;
  one that is empty, truncated or corrupt is refused, ``--fresh-state`` moves it aside, never deletes
  it; one of another run is refused), strategy, risk layer, FIX broker and remote venue;
- engine/live/recovery.py rebuilds cash, positions and orders from the journal
  (engine/live/journal.py), replays ``--data`` history and the journaled bars through the strategy
  with every order refused (warm-up: nothing is sent), restores the risk state, cancels reviews a
  dead process left, and once logged on (the broker resends what we missed; ExecIDs already booked
  are ignored) reconciles each order the journal holds open with an OrderStatusRequest;
- engine/live/consume.py journals and steps each timestamp's bars exactly as a backtest steps them:
  a group is stepped when every symbol has reported, on the publisher's ``$clock`` mark, or when a
  later bar arrives. With ``live.lockstep`` (paper trading and parity tests) a group is stepped only
  once the exchange has acknowledged it (``$ack/exchange``) and a FIX TestRequest round trip has
  drained its reports, and the runner acknowledges each step (``$ack/runner``) once the broker has
  answered every order it sent, so a replay in lockstep is deterministic. Ticks (``live.ticks``) in
  lockstep are held like bars, so an order placed on a tick is first matched on the next timestamp's
  ticks, as in the tick backtest (brokers/quotes.py);
- engine/live/operators.py (risk/control.py): polls the state file every 50 ms between steps too, so
  answers to reviews (which wait in wall-clock time), halts, resumes, cancels and the kill switch apply
  even when no data arrives; in lockstep it does not acknowledge a timestamp while an order waits for
  review, which pauses a paper replay; it publishes the state for the console (engine/live/publish.py).
  ``live.console`` starts the console beside the session (engine/live/children.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from tradeloop.brokers.fix.store import check_state_file
from tradeloop.data.mqtt import MqttFeed
from tradeloop.data.mqtt.conn import Credentials, TlsConfig

from tradeloop.engine.runs.result import BacktestResult
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.live.consume import Consumer
from tradeloop.engine.live.journal import Recovered
from tradeloop.engine.live.lagstats import LagStats
from tradeloop.engine.live.children import ConsoleProcess, parse_bind
from tradeloop.engine.live.operators import Operators
from tradeloop.engine.live.parts import (STATE_TABLES, LiveStats, build_parts, check_live, future_skew, lock_state,
                                         parse_hostport)
from tradeloop.engine.live.publish import Publisher
from tradeloop.engine.live.recovery import RiskJournal, recover, reconcile
from tradeloop.brokers.instruments import periods_per_year
from tradeloop.engine.metrics.performance import compute_metrics
from tradeloop.engine.metrics.risk_events import risk_metrics
from tradeloop.engine.report.walkforward import write_run_report
from tradeloop.engine.runs.recorder import Status, build_manifest, write_run
from tradeloop.engine.telemetry.logs import RunEvents, run_events

__all__ = ["STATE_TABLES", "LiveFailure", "LiveRunner", "LiveStats", "lock_state", "parse_hostport", "run_live"]


class LiveRunner:
    """One live session of a strategy: recover, connect, reconcile, then trade bar by bar."""

    def __init__(self, cfg: RunConfig, *, log: Any = None, connect_timeout_s: float = 30.0,
                 fresh_state: bool = False) -> None:
        live = cfg.live
        check_live(live)
        self.cfg = cfg
        self.live = live
        self.log = log or structlog.get_logger("tradeloop.live")
        self.host, self.port = parse_hostport(live.fix)
        self.connect_timeout_s = connect_timeout_s
        self.stats = LiveStats()
        self.tick_lag = LagStats()   # arrival (after on_tick and its orders) minus each tick's ts
        self.ready = asyncio.Event()   # set once logged on, reconciled and subscribed to market data
        self.inputs: list[dict[str, Any]] = []   # manifest entries of the --data history files
        self._feed: MqttFeed | None = None
        self.mode = "live"            # or "paper" (engine/live/paper.py): what the snapshot says
        self.run_id = Path(live.state).stem
        self.hold_open = False        # paper with a console: stay open after the replay until stopped
        self.console: ConsoleProcess | None = None
        self.ops: Operators | None = None         # built by recover(), once the live engine exists
        self.consumer: Consumer | None = None     # likewise
        if live.console:
            parse_bind(live.console)
        self._lock = lock_state(live.state)
        try:
            # an existing file that is no state (empty, truncated, corrupt) is refused, never started over
            moved = check_state_file(live.state, STATE_TABLES, what="live.state", fresh=fresh_state)
            if moved is not None:
                self.log.warning("live.state_moved_aside", state=live.state, moved_to=str(moved))
            self.future = future_skew(live)
            self.parts = parts = build_parts(cfg, self.host, self.port, self.log)
        except BaseException:
            self._lock.close()
            raise
        self.strategy, self.store, self.journal, self.rules = parts.strategy, parts.store, parts.journal, parts.rules
        self.risk, self.stale, self.broker, self.venue = parts.risk, parts.stale, parts.broker, parts.venue
        self.risk_journal = RiskJournal(self.risk, self.journal)

    # ------------------------------------------------------------------ what the parts hold
    @property
    def last_ts(self) -> int | None:
        """The last timestamp processed (recovered or stepped): bars at or before it are dropped."""
        return self.consumer.last_ts if self.consumer is not None else None

    @property
    def paused(self) -> bool:
        """Lockstep: waiting for a person to answer a held order."""
        return self.ops is not None and self.ops.paused

    @property
    def finished(self) -> bool:
        """The market data ended (the session may be held open for operators)."""
        return self.ops is not None and self.ops.finished

    @property
    def publisher(self) -> Publisher | None:
        """What publishes the session's state for the console (None without operator controls)."""
        return self.ops.publisher if self.ops is not None else None

    def _risk_state(self) -> dict[str, Any]:
        """The state of the risk checks that keep one (drawdown peak and stop, halts), by check name."""
        return self.risk_journal.state()

    # ------------------------------------------------------------------ recovery
    def recover(self) -> Recovered:
        """Cash, positions, orders, strategy and risk state from the journal; builds the live engine
        (engine/live/recovery.py) and the parts that drive it: market data in, operators."""
        got = recover(self.cfg, self.parts, self.risk_journal, self.stats, self.log)
        self.driver, self.engine, self.inputs = got.driver, got.driver.engine, got.inputs
        self.ops = Operators(self.engine, self.risk, self.risk_journal, self.venue, self.broker, self.log)
        self.consumer = Consumer(self.live, self.driver, journal=self.journal, venue=self.venue, broker=self.broker,
                                 stale=self.stale, risk_journal=self.risk_journal, ops=self.ops, stats=self.stats,
                                 tick_lag=self.tick_lag, last_ts=got.last_ts)
        return got.journal

    async def reconcile(self, timeout: float = 10.0) -> None:
        """Ask the broker for the status of every order the journal holds open; log each difference."""
        await reconcile(self.broker, self.venue, self.engine, self.stats, self.log, timeout)

    # ------------------------------------------------------------------ the session
    async def run(self, stop: asyncio.Event | None = None) -> BacktestResult:
        """Trade until the publisher's end-of-stream mark or ``stop``; returns the session's result."""
        t0 = time.perf_counter()
        self.recover()
        ops, consumer = self.ops, self.consumer
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
                        on_stale=consumer.on_stale, on_fresh=consumer.on_fresh, clock=True,
                        acks=("exchange",) if live.lockstep else (), tls=TlsConfig.from_env(),
                        credentials=Credentials.from_env(), client_id=f"tradeloop-live-{os.getpid()}",
                        future=self.future)
        poller = None
        try:
            async with feed:
                self._feed = feed
                await feed.wait_ready()
                ops.start_publishing(feed, self.strategy, self.driver.equity, mode=self.mode, run_id=self.run_id)
                if live.console:   # before ready: the page is up before the first bar is traded
                    self.console = await asyncio.to_thread(ConsoleProcess, live.state, live.console)
                    self.log.info("live.console", url=self.console.url, log=str(self.console.log_path))
                poller = asyncio.create_task(ops.poller(), name="live-poll")
                self.ready.set()
                consume = asyncio.create_task(consumer.consume(feed), name="live-consume")
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
                        ops.finished = True
                        ops.publish(force=True)
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
            await consumer.settle()
            await self.broker.stop()
            ops.finished = True
            ops.publish(force=True)   # the last state: finished, FIX logged out
            if self.console is not None:
                self.console.stop()
        return self.result(time.perf_counter() - t0)

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
        """Close the state file and release its lock (the session's connections are already stopped)."""
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
