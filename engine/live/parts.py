"""The parts of a live session, built from its config: the strategy, the state file (FIX store and journal,
locked for one runner), the fill rules, the risk layer, the FIX broker and the remote venue.

Everything a user can get wrong in the ``[live]`` table is refused here, before any connection is made.
"""
from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tradeloop.brokers.fix.client import FixBroker
from tradeloop.brokers.fix.secrets import SecretError, load_password
from tradeloop.brokers.fix.session import SessionConfig
from tradeloop.brokers.fix.store import SQLiteSequenceStore
from tradeloop.brokers.remote import RemoteVenue
from tradeloop.brokers.sim import FillRules
from tradeloop.data.mqtt import FutureSkew
from tradeloop.risk.pipeline import RiskPipeline
from tradeloop.risk.stale import StaleGuard

from tradeloop.errors import ConfigError
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.config.sections import LiveSection
from tradeloop.engine.loop.strategy import Strategy
from tradeloop.engine.live.journal import Journal
from tradeloop.engine.assembly.build import build_risk, build_rules, build_strategy

STATE_TABLES = ("fix_session", "live_meta")   # what a live state file holds (FIX store + journal)


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


def check_live(live: LiveSection) -> None:
    """Refuse a ``[live]`` table that cannot make a session (one line naming the key and its flag)."""
    for key in ("mqtt", "fix", "state"):
        if not getattr(live, key):
            raise ConfigError(f"live.{key} is required for a live run (--{key} or [live] {key} = ...)")
    if not live.symbols:
        raise ConfigError("live.symbols is required: which symbols to trade (--symbols A,B or [live] symbols)")


def parse_hostport(text: str) -> tuple[str, int]:
    """``live.fix`` as (host, port); anything but HOST:PORT is a ConfigError naming the key."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"live.fix: expected HOST:PORT, got {text!r}")
    return host, int(port)


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


def future_skew(live: LiveSection) -> FutureSkew:
    """``live.future_tick_s`` / ``live.future_bar_s`` (None: FutureSkew's defaults) as the feed's setting."""
    try:
        return FutureSkew(FutureSkew().tick_s if live.future_tick_s is None else live.future_tick_s,
                          live.future_bar_s)
    except ValueError as e:
        raise ConfigError(f"live.future_tick_s / live.future_bar_s: {e}") from None


@dataclass
class LiveParts:
    """A live session's components, before recovery: nothing here has connected to anything yet."""

    strategy: Strategy
    store: SQLiteSequenceStore   # the state file: FIX sequence numbers and sent messages
    journal: Journal             # orders, fills, bars and risk state, in the same file
    rules: FillRules
    risk: RiskPipeline
    stale: StaleGuard | None     # live.stale_after: halts a symbol without data (first of the risk checks)
    broker: FixBroker
    venue: RemoteVenue


def build_parts(cfg: RunConfig, host: str, port: int, log: Any) -> LiveParts:
    """Build the session's parts from ``cfg`` (the state file must already be checked and locked); the
    journal claims the state file for this run (strategy, params, symbols, cash) or refuses another run's."""
    live = cfg.live
    strategy = build_strategy(cfg)
    cls = type(strategy)
    store = SQLiteSequenceStore(live.state, f"FIX.4.4:{live.sender}->{live.target}")
    journal = Journal(store)
    journal.claim({"strategy": f"{cls.__module__}:{cls.__qualname__}", "params": strategy.params,
                   "symbols": sorted(live.symbols), "cash": cfg.run.cash})
    rules = build_rules(cfg)
    risk = build_risk(cfg, rules, live=True)
    risk.symbols = sorted(live.symbols)   # an operator's halt of another symbol is refused
    stale = StaleGuard(live.stale_after) if live.stale_after else None
    if stale is not None:
        risk.checks.insert(0, stale)
    try:
        password = load_password(live.password_env, live.password_file)
    except SecretError as e:
        raise ConfigError(f"live: {e}") from None
    session = SessionConfig(live.sender, live.target, username=live.username, password=password,
                            heartbeat_s=live.heartbeat_s)
    broker = FixBroker(session, host, port, store, log=log)
    venue = RemoteVenue(broker, journal, log=log)
    return LiveParts(strategy, store, journal, rules, risk, stale, broker, venue)
