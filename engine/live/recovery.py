"""Crash recovery: a live session's engine rebuilt from its journal, warmed up, and reconciled with the broker.

Cash and positions come from the journaled fills (never stored apart, so they cannot drift); the
``--data`` history and the journaled bars are replayed through the strategy on a warm-up engine that
refuses every order; the risk checks take back their journaled state; reviews a dead process left
unfinished are cancelled; once logged on, each order the journal holds open is asked about.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tradeloop.brokers.fix.client import FixBroker
from tradeloop.brokers.orders import Order, Side
from tradeloop.brokers.remote import RemoteVenue
from tradeloop.data.schema import Bar
from tradeloop.risk.pipeline import RiskPipeline, reject
from tradeloop.risk.review import QueueReviewer

from tradeloop.errors import ConfigError
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.loop.core import Engine
from tradeloop.engine.live.journal import Journal, Recovered
from tradeloop.engine.live.parts import LiveParts, LiveStats
from tradeloop.engine.drivers.live import LiveDriver
from tradeloop.engine.assembly.build import load_inputs


class _WarmUpGate:
    """Refuses every order while history or journaled bars are replayed (history is past; journaled bars were acted on)."""

    name = "warm_up"

    def __call__(self, order: Order, state: Any) -> Any:
        return reject("warm-up replay (history or journaled bars): orders are not sent")


class RiskJournal:
    """The state of the risk checks that keep one (drawdown peak and stop, halts), journaled when it changes
    (after each step, after an operator's command) and restored on restart, so a stopped book stays stopped."""

    def __init__(self, risk: RiskPipeline, journal: Journal) -> None:
        self.risk, self.journal = risk, journal
        self._saved: dict[str, Any] = {}

    def state(self) -> dict[str, Any]:
        """The checks' state now, by check name."""
        return {c.name: c.state() for c in self.risk.checks if hasattr(c, "state")}

    def save(self) -> None:
        """Journal the state if it differs from the last one saved by this process."""
        state = self.state()
        if state and state != self._saved:
            self.journal.risk(state)
            self._saved = state

    def restore(self, saved: dict[str, Any], log: Any) -> None:
        """Give each check its journaled state back."""
        for check in self.risk.checks:
            if check.name in saved and hasattr(check, "restore"):
                check.restore(saved[check.name])
        log.info("live.risk_state_restored", **{k: v for k, v in saved.items()})


@dataclass
class Recovery:
    """What :func:`recover` rebuilt: the journal as loaded, the live driver (its engine holds the recovered
    orders, cash and positions), the last timestamp already processed, and the history files' manifest entries."""

    journal: Recovered
    driver: LiveDriver
    last_ts: int | None
    inputs: list[dict[str, Any]]


def history(cfg: RunConfig, before: int | None) -> tuple[list[Bar], list[dict[str, Any]]]:
    """Bars of ``--data`` (history files of the traded symbols) before ``before``, in timestamp order, and
    the files' manifest entries.

    They warm indicators and strategy state up like journaled bars do (every order refused), so a
    fresh session does not start cold; live bars at or before the last of them are dropped.
    """
    if not cfg.data:
        return [], []
    series, inputs = load_inputs(cfg, hashes=False)
    symbols = cfg.live.symbols
    unknown = sorted({s.symbol for s in series} - set(symbols))
    if unknown:
        raise ConfigError(f"--data history for {', '.join(unknown)}: not among live.symbols "
                          f"({', '.join(symbols)})")
    bars = [s.bar(i) for s in series for i in range(len(s)) if before is None or s.ts[i] < before]
    bars.sort(key=lambda b: (b.ts, b.symbol))
    return bars, inputs


def book(engine: Engine, rec: Recovered, orders: dict[str, Order]) -> None:
    """Book the journaled fills on ``engine`` (cash, positions, T+1 state) without telling the strategy."""
    for _, fill in rec.fills:
        engine.on_fill(fill, orders.get(fill.order_id) or Order(fill.order_id, fill.symbol, fill.side, fill.qty))
    engine._notes.clear()


def cancel_orphaned_reviews(risk: RiskPipeline, ts: int) -> None:
    """Reviews a previous process left unfinished: its held orders lived only in that process (held
    orders are never sent, so never journaled), so no answer can place them now. Each is cancelled
    in the state file (a late ``tradeloop review approve`` then says so) and recorded as a risk event."""
    reviewer = getattr(risk.review, "reviewer", None)
    if not isinstance(reviewer, QueueReviewer):
        return
    why = "the live runner restarted before acting on it; the held order was not placed"
    for row in reviewer.store.cancel_unfinished(why):
        order = Order(row["order_id"], row["symbol"], Side[row["side"]], row["qty"])
        was = row["status"] if row["status"] == "pending" else f"{row['status']} by {row['answered_by']}"
        risk.record(ts, "review", "cancel", f"{why} (was {was})", order=order)


def recover(cfg: RunConfig, parts: LiveParts, risk_journal: RiskJournal, stats: LiveStats, log: Any) -> Recovery:
    """Cash, positions, orders, strategy and risk state from the journal; builds the live engine.

    After a restart the journaled bars are replayed through the strategy on a separate warm-up
    engine whose risk layer refuses every order and whose venue is simulated: nothing it does can
    reach the broker. Its market (indicators) and the strategy object then carry on in the live
    engine, and the risk checks take back the state journaled after the last step.
    """
    live = cfg.live
    rec = parts.journal.load()
    orders = {o.id: o for o, _, _ in rec.orders}
    market = None
    bars, inputs = history(cfg, rec.bars[0].ts if rec.bars else None)
    if bars or not rec.fresh:
        warm = LiveDriver(parts.strategy, live.symbols, cash=cfg.run.cash, rules=parts.rules,
                          risk=RiskPipeline([_WarmUpGate()]), log=log)
        book(warm.engine, rec, orders)
        warm.start()
        for bar in bars + rec.bars:
            warm.feed(bar)
        warm.flush()
        market = warm.market
        stats.replayed_bars = len(rec.bars)
        stats.history_bars = len(bars)
    driver = LiveDriver(parts.strategy, live.symbols, cash=cfg.run.cash, rules=parts.rules, risk=parts.risk,
                        order_prefix=cfg.run.order_prefix, log=log, venue=parts.venue, market=market)
    engine = driver.engine
    book(engine, rec, orders)
    engine.orders.update(orders)
    engine._order_seq = rec.order_seq(engine._order_prefix)
    parts.broker.restore(rec.orders, (e for e, _ in rec.fills))
    parts.venue.restore(list(orders.values()))
    if rec.risk:
        risk_journal.restore(rec.risk, log)
    cancel_orphaned_reviews(parts.risk, rec.last_ts or 0)
    stats.recovered_orders, stats.recovered_fills = len(orders), len(rec.fills)
    stats.open_at_start = len(parts.venue.open_orders())
    if market is None:
        driver.start()
    else:
        driver._started = True    # on_start ran in the warm-up (and in the first process)
    last_ts = rec.last_ts if rec.last_ts is not None else (bars[-1].ts if bars else None)
    driver.equity.clear()     # the equity log covers this session's steps
    if not rec.fresh:
        log.info("live.recovered", orders=len(orders), open=len(parts.venue.open_orders()),
                 fills=len(rec.fills), bars=len(rec.bars), last_ts=rec.last_ts,
                 cash=round(engine.portfolio.cash, 6),
                 positions={s: p.qty for s, p in sorted(engine.portfolio.positions.items()) if p.qty})
    return Recovery(rec, driver, last_ts, inputs)


async def reconcile(broker: FixBroker, venue: RemoteVenue, engine: Engine, stats: LiveStats, log: Any,
                    timeout: float = 10.0) -> None:
    """Ask the broker for the status of every order the journal holds open; log each difference."""
    for order in venue.open_orders():
        before = (order.status, order.filled_qty)
        try:
            await broker.status(order, timeout)
        except TimeoutError:
            log.error("live.reconcile_timeout", order_id=order.id)
            continue
        if (order.status, order.filled_qty) != before:
            stats.reconciled += 1
            log.warning("live.reconciled", order_id=order.id, status_was=before[0].value,
                        status_now=order.status.value, filled_was=before[1], filled_now=order.filled_qty,
                        reason=order.reason)
    positions = {s: p.qty for s, p in sorted(engine.portfolio.positions.items()) if p.qty}
    log.info("live.reconciled_all", open_orders=len(venue.open_orders()), positions=positions)
