"""What a live or paper session shows its operators: a snapshot of its state and a log of events, in the state file.

After every step (and from the runner's poll between steps) :meth:`Publisher.flush` appends what is new
since the last call (fills, order changes, risk events, equity points, session changes) as events, and at
most every ``snapshot_every_s`` of wall clock (plus at start and stop) replaces the snapshot: session
status, account, positions, working orders, pending reviews with their wall-clock countdown, model
health. Both go in one SQLite transaction per flush (risk/store.py ``ControlStore.write``), so a busy
session (a thousand orders a second) pays one commit per step, not one per order. The web console and
``tradeloop review`` read them from another process.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from tradeloop.risk.halt import BOOK
from tradeloop.risk.store import ControlStore, wall_iso

SNAPSHOT_EVERY_S = 0.05
COUNTDOWN_EVERY_S = 0.25   # a snapshot at least this often while orders wait for review


def _num(x: float) -> float | None:
    """JSON has no NaN: a missing number is null."""
    return None if x is None or x != x or math.isinf(x) else float(x)


class Publisher:
    """Publishes one session's state to ``store``; ``status()`` gives the runner's own flags (fix, mqtt, paused...)."""

    def __init__(self, store: ControlStore, engine: Any, equity: Any, *, mode: str, run_id: str, strategy: str,
                 status: Callable[[], dict[str, Any]], snapshot_every_s: float = SNAPSHOT_EVERY_S) -> None:
        self.store, self.engine, self.equity = store, engine, equity
        self.risk = engine.risk
        self.every = snapshot_every_s
        self.status = status
        self.head = {"mode": mode, "run_id": run_id, "strategy": strategy, "started_at": wall_iso(),
                     "symbols": sorted(engine.market.symbols)}
        self._seen = {"fills": len(engine.fills), "orders": len(engine.order_events), "risk": len(self.risk.events),
                      "equity": len(equity.ts)}
        self._last_session: dict[str, Any] = {}
        self._last_snapshot = -1.0
        self._dirty = True
        self.writes = 0

    # ---------------------------------------------------------------- events
    def _new_events(self) -> list[dict[str, Any]]:
        e, seen, out = self.engine, self._seen, []
        fills = e.fills
        if len(fills) > seen["fills"]:
            for f in fills[seen["fills"]:]:
                out.append({"kind": "fill", "data": {"order_id": f.order_id, "symbol": f.symbol, "side": f.side.value,
                                                     "qty": f.qty, "price": f.price, "commission": f.commission,
                                                     "clock_ts": f.ts}})
            seen["fills"] = len(fills)
        events = e.order_events
        if len(events) > seen["orders"]:
            for ev in events[seen["orders"]:]:
                out.append({"kind": "order", "data": {"order_id": ev.order_id, "symbol": ev.symbol,
                                                      "status": ev.status.value, "reason": ev.reason,
                                                      "clock_ts": ev.ts}})
            seen["orders"] = len(events)
        risk = self.risk.events
        if len(risk) > seen["risk"]:
            for r in risk[seen["risk"]:]:
                out.append({"kind": "risk", "data": {"gate": r.check, "action": r.action, "reason": r.reason,
                                                     "order_id": r.order_id, "symbol": r.symbol,
                                                     "value": _num(r.value), "clock_ts": r.ts}})
            seen["risk"] = len(risk)
        eq = self.equity
        if len(eq.ts) < seen["equity"]:   # the log was cleared (a new session's curve starts over)
            seen["equity"] = 0
        if len(eq.ts) > seen["equity"]:
            for i in range(seen["equity"], len(eq.ts)):
                out.append({"kind": "equity", "data": {"clock_ts": eq.ts[i], "equity": _num(eq.equity[i]),
                                                       "cash": _num(eq.cash[i])}})
            seen["equity"] = len(eq.ts)
        return out

    # ---------------------------------------------------------------- snapshot
    def session(self) -> dict[str, Any]:
        """The ``session`` part of the snapshot (without the times)."""
        halted: set[str] = set()
        book = False
        drawdown = False
        stale: list[str] = []
        now = self.engine.now
        for c in self.risk.checks:
            name = getattr(c, "name", "")
            if name in ("operator", "halt"):   # an operator's halts, limit-move halts
                for key in c.in_force(now):
                    if key == BOOK:
                        book = True
                    else:
                        halted.add(key)
            elif name == "drawdown":
                drawdown = c.stopped is not None
            elif name == "stale_data":
                stale = sorted(c.halted)
        status = self.status()
        return {**status, "stale": stale, "halted": sorted(halted), "book_halted": book, "drawdown_stop": drawdown}

    def snapshot(self, session: dict[str, Any]) -> dict[str, Any]:
        e = self.engine
        price = e.market.price
        positions = []
        unrealized = realized = 0.0
        multipliers = e.portfolio.multipliers
        for symbol in sorted(e.portfolio.positions):
            p = e.portfolio.positions[symbol]
            last = price(symbol)
            upnl = (last - p.avg_cost) * p.qty * multipliers.get(symbol, 1.0) if p.qty and last == last else 0.0
            unrealized += upnl
            realized += p.realized_pnl
            if p.qty or p.realized_pnl:
                positions.append({"symbol": symbol, "qty": p.qty, "avg_price": _num(p.avg_cost), "last": _num(last),
                                  "unrealized_pnl": _num(upnl), "realized_pnl": _num(p.realized_pnl)})
        orders = [{"id": o.id, "symbol": o.symbol, "side": o.side.value, "type": o.type.value, "qty": o.qty,
                   "filled": o.filled_qty, "limit_price": _num(o.limit_price) if o.limit_price is not None else None,
                   "status": o.status.value} for o in e.venue.open_orders()]
        reviews = []
        held = self.risk.pending_reviews()
        if held:
            wall = time.time()
            for h in held:
                o = h.order
                p = o.limit_price if o.limit_price is not None else o.created_price
                reviews.append({"order_id": o.id, "symbol": o.symbol, "side": o.side.value, "qty": o.qty,
                                "price": _num(p), "notional": _num(o.qty * p) if p == p else None,
                                "reason": h.reason, "held_at": wall_iso(h.held_at), "deadline_at": wall_iso(h.deadline),
                                "seconds_left": round(max(0.0, h.deadline - wall), 3)})
        return {"session": session,
                "account": {"cash": _num(e.portfolio.cash), "equity": _num(e.equity), "realized_pnl": _num(realized),
                            "unrealized_pnl": _num(unrealized)},
                "positions": positions, "orders": orders, "reviews": reviews, "models": self.models()}

    def models(self) -> list[dict[str, Any]]:
        """Each model the strategy's predictor runs: its health monitor's latency, accuracy and backup state."""
        predictor = getattr(self.engine, "predictor", None)
        if predictor is None:
            return []
        monitor = predictor.model
        active = getattr(monitor, "active", monitor)
        events = getattr(monitor, "events", [])
        using_backup = any(ev.to_model for ev in events)
        declared = self.engine.models[0] if self.engine.models else {}
        return [{"name": str(declared.get("requested") or active), "version": str(getattr(active, "ref", active)),
                 "state": "backup" if using_backup else ("breach" if events else "ok"),
                 "p99_ms": _num(getattr(monitor, "p99_ms", math.nan)),
                 "accuracy": _num(getattr(monitor, "accuracy", math.nan)), "using_backup": using_backup}]

    # ---------------------------------------------------------------- writing
    def flush(self, *, force: bool = False) -> None:
        """Write what is new: events every call, the snapshot when ``force`` or ``snapshot_every_s`` has passed
        since the last (and something may have changed)."""
        events = self._new_events()
        session = self.session()
        changed = {k: v for k, v in session.items() if self._last_session.get(k) != v}
        if changed and self._last_session:
            events.append({"kind": "session", "data": changed})
        self._last_session = session
        if events or changed:
            self._dirty = True
        wall = time.monotonic()
        if not self._dirty and wall - self._last_snapshot >= COUNTDOWN_EVERY_S and self.risk.pending_reviews():
            self._dirty = True   # held orders: the countdown (seconds_left) moves on its own
        snap = None
        if force or (self._dirty and wall - self._last_snapshot >= self.every):
            stamp = wall_iso()
            snap = self.snapshot({**self.head, **session, "updated_at": stamp, "clock_ts": self.engine.now})
            self._last_snapshot = wall
            self._dirty = False
        if snap is not None or events:
            self.store.write(snap, events)
            self.writes += 1
