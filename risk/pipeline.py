"""The risk pipeline every order passes before it reaches a venue, in backtests and live alike.

A check looks at one order and the current state (a read-only view of the account plus the
running totals of the orders before it in the batch) and answers None (pass), ``reject(reason)``
or ``hold(reason)`` (a plain string is a rejection). The pipeline runs the checks in order over
the batch of orders a strategy placed at one timestamp; the first verdict decides. An order that
passes them all meets the review gate, if one is configured, which may hold it for review.

Checks that keep state over time (limit-move halts, the drawdown stop) also watch the market at
each timestamp (``on_step``, step (3) of the loop) and act through the desk: the engine, seen as
the :class:`Desk` protocol (read the account, cancel working orders, flatten). Every decision
other than a plain pass, and every such action, is recorded in the audit trail.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tradeloop.brokers.orders import Order, OrderType, Side

from tradeloop.risk.events import AuditTrail, RiskEvent

if TYPE_CHECKING:  # pragma: no cover
    from tradeloop.data.schema import Bar

    from tradeloop.risk.review import ReviewGate


class AccountView(Protocol):
    """What risk may read of the account and market; never engine classes."""

    @property
    def cash(self) -> float: ...

    @property
    def equity(self) -> float: ...

    def mark(self) -> float:
        """The equity now (the same number as ``equity``, as a plain call: monitors call it every step)."""

    @property
    def now(self) -> int: ...

    def position(self, symbol: str) -> float: ...

    def price(self, symbol: str) -> float: ...

    def pre_close(self, symbol: str) -> float: ...

    def sellable(self, symbol: str) -> float: ...

    def working(self, symbol: str) -> float:
        """Signed quantity still to fill of the orders working at the venue in ``symbol``."""

    def working_sells(self, symbol: str) -> float:
        """Quantity still to fill of the sell orders working at the venue in ``symbol``."""

    def exposures(self) -> dict[str, float]:
        """Signed quantity held plus working, per symbol with either."""

    def margin_in_use(self) -> float:
        """Initial margin tied up by the open futures positions (0.0 without futures)."""


class Desk(AccountView, Protocol):
    """The account view plus the actions the risk layer may take on its own."""

    def cancel_open(self, symbol: str | None, reason: str) -> list[Order]: ...

    def cancel_order(self, order_id: str, reason: str) -> Order | None:
        """Cancel one working (or held) order; None when no such order is open."""

    def flatten(self, reason: str) -> list[Order]: ...


@dataclass(slots=True, frozen=True)
class Verdict:
    """A check's answer when it does not pass an order: ``reject`` or ``hold`` it, and why."""

    action: str
    reason: str


def reject(reason: str) -> Verdict:
    return Verdict("reject", reason)


@dataclass(slots=True)
class Decision:
    """The pipeline's verdict on one order: ``action`` is ``accept``, ``reject`` or ``hold``."""

    order: Order
    action: str
    check: str = ""
    reason: str = ""


class BatchState:
    """The account as a batch of orders would leave it: cash, positions, sellable shares."""

    __slots__ = ("_working", "account", "cash", "margin_free", "now", "positions", "sellable_left")

    def __init__(self, account: AccountView) -> None:
        self.account = account
        self.cash = account.cash
        self.now = account.now
        self.positions: dict[str, float] = {}
        self.sellable_left: dict[str, float] = {}   # kept by SellableCheck
        self.margin_free: float | None = None       # futures: equity less margin in use, kept by CashCheck
        self._working: dict[str, float] = {}

    def position(self, symbol: str) -> float:
        """Held quantity plus the orders accepted before this one in the batch."""
        if symbol not in self.positions:
            self.positions[symbol] = self.account.position(symbol)
        return self.positions[symbol]

    def projected(self, symbol: str) -> float:
        """Where the position goes if every working order and the batch so far fill."""
        w = self._working.get(symbol)
        if w is None:
            w = self._working[symbol] = self.account.working(symbol)
        return self.position(symbol) + w

    def sellable(self, symbol: str) -> float:
        """Shares that may still be sold: sellable now, less working sells and the batch's sells."""
        s = self.sellable_left.get(symbol)
        if s is None:
            s = self.sellable_left[symbol] = self.account.sellable(symbol) - self.account.working_sells(symbol)
        return s


class Check(Protocol):
    """One check. Optional hooks: ``reset(pipeline)`` (a new run: clear state, keep the pipeline),
    ``commit(order, state)`` (an order it saw was accepted), ``on_step(ts, bars)`` (step 3: watch the
    market; makes the check a monitor), ``resume(ts, symbol, pipeline, by)`` / ``reset_stop(ts, arg,
    pipeline, by)`` (operator commands)."""

    name: str

    def __call__(self, order: Order, state: BatchState) -> Verdict | str | None: ...


def reference_price(order: Order, state: BatchState) -> float:
    """The price a check assumes the order trades at: its limit, else the last close."""
    if order.type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and order.limit_price is not None:
        return order.limit_price
    if order.type is OrderType.STOP and order.stop_price is not None:
        return order.stop_price
    return order.created_price if order.created_price == order.created_price else state.account.price(order.symbol)


def unpriced(order: Order, price: float) -> Verdict | None:
    """Fail closed: an order with no price to check it against (no bar of its symbol yet, no limit
    or stop price) is refused rather than waved through by comparisons with NaN."""
    if price == price:
        return None
    return Verdict("reject", f"no price for {order.symbol} yet (no bar, no limit or stop price): "
                             "its cost cannot be checked")


@dataclass(frozen=True)
class CashCheck:
    """Refuse a buy that, with the buys before it in the batch, would spend more cash than there is.

    A future (``instruments``: an InstrumentTable whose row for the symbol is a future) is checked against
    margin instead, long and short alike: an order that raises the projected |position| (held + working +
    the batch so far) needs initial margin (added contracts x price x multiplier x margin) plus its fee
    (the fee model on price x multiplier) out of the available margin: equity less the margin of the
    projected futures positions at the last prices, less what the batch reserved before it."""

    commission: Callable[..., float]   # (symbol, side, qty, price, ts) -> fee
    name: str = "cash"
    instruments: Any = None            # brokers.instruments.InstrumentTable, for futures; None: none

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        price = reference_price(order, state)
        if self.instruments is not None:
            fut = self.instruments.future(order.symbol)
            if fut is not None:
                return self._margin(order, state, fut, price)
        if price != price:  # no price yet: a buy is refused; a sell adds nothing the batch may spend
            return unpriced(order, price) if order.side is Side.BUY else None
        fee = self.commission(order.symbol, order.side, order.qty, price, state.now)
        if order.side is Side.SELL:
            state.cash += order.qty * price - fee
            return None
        after = state.cash - order.qty * price - fee
        opening = order.qty > max(0.0, -state.position(order.symbol))
        if after < 0 and opening:
            return Verdict("reject", f"insufficient cash: needs {order.qty * price + fee:.2f}, has {state.cash:.2f}")
        state.cash = after
        return None

    def _margin(self, order: Order, state: BatchState, fut: Any, price: float) -> Verdict | None:
        p = state.projected(order.symbol)
        after = p + order.signed_qty
        if abs(after) <= abs(p) + 1e-12:
            return None   # reduces or closes a position: no margin needed
        if price != price:
            return unpriced(order, price)
        acct = state.account
        used = 0.0
        if state.margin_free is None:
            for sym in sorted(set(acct.exposures()) | set(state.positions)):
                f = self.instruments.future(sym)
                if f is not None and sym != order.symbol:
                    used += abs(state.projected(sym)) * acct.price(sym) * f.multiplier * f.margin_rate
            if p:
                used += abs(p) * acct.price(order.symbol) * fut.multiplier * fut.margin_rate
            state.margin_free = acct.equity - used
        mult, rate = fut.multiplier, fut.margin_rate
        need = (abs(after) - abs(p)) * price * mult * rate
        fee = self.commission(order.symbol, order.side, order.qty, price * mult, state.now)
        free = state.margin_free
        if need + fee > free + 1e-9:
            return Verdict("reject", f"insufficient margin: {order.side.value.lower()} {order.qty:g} {order.symbol} "
                                     f"@ {price:g} needs initial margin {need:,.2f} ({rate:g} x {abs(after) - abs(p):g} "
                                     f"x {price:g} x {mult:g}) + fee {fee:,.2f}, available margin {free:,.2f}")
        state.margin_free = free - need - fee
        return None


class RiskPipeline:
    """Runs ``checks`` in order over each batch of new orders, then the ``review`` gate.

    A pipeline serves one engine at a time: the engine attaches itself when it is built, which
    also clears the state of the checks and the audit trail.
    """

    def __init__(self, checks: list[Check], *, review: ReviewGate | None = None, control: Any = None,
                 log: Any = None) -> None:
        self.checks = list(checks)
        self.review = review
        self.control = control  # the live state file (risk.store.ControlStore): reviews, operator commands
        self.symbols: list[str] | None = None   # the session's symbols (live): an operator's halt of another is refused
        self.trail = AuditTrail(log)
        self.monitors = [c for c in self.checks if hasattr(c, "on_step")]
        self._commits = [c.commit for c in self.checks if hasattr(c, "commit")]
        self.desk: Desk | None = None

    @property
    def events(self) -> list[RiskEvent]:
        return self.trail.events

    def add_check(self, check: Check, *, first: bool = True) -> None:
        """Add a check after the pipeline was built (one the run arms later, e.g. a lost model server's
        entry halt); ``first``: it runs before the others, so its refusal is the one recorded."""
        self.checks.insert(0, check) if first else self.checks.append(check)
        if hasattr(check, "on_step"):
            self.monitors.append(check)
        if hasattr(check, "commit"):
            self._commits.append(check.commit)

    def pending_reviews(self) -> list[Any]:
        """Orders held for a person's answer now (a live run's queue; a backtest's policy answers at once)."""
        pending = getattr(getattr(self.review, "reviewer", None), "pending", None)
        return pending() if pending is not None else []

    def attach(self, desk: Desk) -> None:
        """Serve ``desk`` (an engine) from now on, starting from a clean state."""
        self.desk = desk
        self.trail.events = []
        for c in self.checks:
            reset = getattr(c, "reset", None)
            if reset is not None:
                reset(self)
        if self.review is not None:
            self.review.reset()

    # -- step (6): new orders -------------------------------------------------------------
    def screen(self, orders: list[Order], account: AccountView, *, review: bool = True) -> list[Decision]:
        """One decision per order, in order; ``review=False`` skips the review gate (approved orders)."""
        state = BatchState(account)
        out: list[Decision] = []
        checks, commits, trail = self.checks, self._commits, self.trail
        gate = self.review if review else None
        for order in orders:
            for check in checks:
                verdict = check(order, state)
                if verdict is not None:
                    if verdict.__class__ is str:
                        verdict = Verdict("reject", verdict)
                    out.append(Decision(order, verdict.action, check.name, verdict.reason))
                    trail.record(state.now, check.name, verdict.action, verdict.reason, order=order)
                    break
            else:
                if gate is not None:
                    verdict = gate(order, state)
                    if verdict is not None:
                        out.append(Decision(order, "hold", gate.name, verdict.reason))
                        trail.record(state.now, gate.name, "hold", verdict.reason, order=order)
                        gate.reviewer.submit(order, state.now, verdict.reason)
                        continue
                state.positions[order.symbol] = state.position(order.symbol) + order.signed_qty
                if commits:
                    for commit in commits:
                        commit(order, state)
                out.append(Decision(order, "accept"))
        return out

    # -- step (3): risk state -------------------------------------------------------------
    def watch(self, ts: int, bars: list[Bar]) -> None:
        """Let every stateful check see the new bars (halts, drawdown)."""
        for m in self.monitors:
            m.on_step(ts, bars)

    def watcher(self) -> Callable[[int, list[Bar]], None] | None:
        """What the engine calls at step (3): None without stateful checks, the one check's own method if one."""
        if not self.monitors:
            return None
        return self.monitors[0].on_step if len(self.monitors) == 1 else self.watch

    def poll(self, now: int) -> list[tuple[str, str, str]]:
        """Answers to held orders (order id, ``approve``/``reject``/``expire``, reason); applies operator commands."""
        if self.control is not None:
            for kind, arg, by, note in self.control.take_commands():
                ok, message = self.apply_command(now, kind, arg, by, note)
                self.control.audit(by, kind, arg, ok, message, phase="applied")
        if self.review is None:
            return []
        answers = self.review.reviewer.poll(now)
        for order_id, action, reason in answers:
            order = self.review.reviewer.order(order_id)
            self.trail.record(now, self.review.name, action, reason, order=order)
        return answers

    def cancel_review(self, order: Order) -> None:
        if self.review is not None:
            self.review.reviewer.cancel(order.id)

    # -- actions and operator commands ----------------------------------------------------
    def record(self, ts: int, check: str, action: str, reason: str, **kw: Any) -> RiskEvent:
        return self.trail.record(ts, check, action, reason, **kw)

    def cancel_open(self, ts: int, symbol: str | None, check: str, reason: str) -> list[Order]:
        """Cancel working (and held) orders, in ``symbol`` or all, recording each; returns them."""
        out = self.desk.cancel_open(symbol, f"{check}: {reason}")
        for order in out:
            self.trail.record(ts, check, "cancel", reason, order=order)
        return out

    def flatten(self, ts: int, check: str, reason: str) -> list[Order]:
        """Close every position with market orders, recording each; returns them."""
        out = self.desk.flatten(f"{check}: {reason}")
        for order in out:
            self.trail.record(ts, check, "flatten", reason, order=order)
        return out

    def apply_command(self, ts: int, kind: str, arg: str = "", by: str = "operator",
                      note: str = "") -> tuple[bool, str]:
        """One operator command from the state file (halt, resume, reset, cancel, kill): (ok, what was done).
        The operator check (risk/control.py OperatorGuard) applies them; without one only resume and reset can."""
        guard = next((c for c in self.checks if c.name == "operator" and hasattr(c, "apply")), None)
        if guard is not None:
            return guard.apply(ts, kind, arg, by, note, self.symbols)
        if kind in ("resume", "reset"):
            return self.command(ts, kind, arg, by), f"{kind} applied"
        self.trail.record(ts, kind, "ignored", f"{kind} by {by}: this run has no operator controls")
        return False, f"{kind}: this run has no operator controls"

    def command(self, ts: int, kind: str, arg: str = "", by: str = "operator", *, quiet: bool = False) -> bool:
        """An operator's ``resume`` (limit-move halts; ``arg`` a symbol or empty for all) or ``reset`` (drawdown
        stop), given to every check that takes it; False (recorded as ``ignored`` unless ``quiet``) when none does.
        ``quiet`` also skips checks with nothing to resume."""
        method = {"resume": "resume", "reset": "reset_stop"}.get(kind)
        if method is None:
            raise ValueError(f"unknown risk command {kind!r}; use resume or reset")
        done = False
        for c in self.checks:
            if c.name == "stale_data":   # the feed resumes a stale symbol when its data comes back, not a person
                continue
            fn = getattr(c, method, None)
            if fn is None:
                continue
            if quiet and kind == "resume" and not any(not arg or k == arg for k in getattr(c, "halted", {})):
                continue
            fn(ts, arg or None, self, by)
            done = True
        if not done and not quiet:
            self.trail.record(ts, kind, "ignored", f"{kind} by {by}: no check of this run takes it")
        return done
