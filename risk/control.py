"""Operator control of a running engine: the one command path shared by the CLI and the web console.

:class:`Operator` is what a person uses (``tradeloop review ...`` / ``tradeloop risk ...`` and the
console call the same methods): each action writes one row of the audit trail (who, when, what,
on what, and the outcome) and returns an :class:`ActionResult`; an action that cannot apply (an
order someone else answered first, an unknown symbol) is ``ok=False`` with a one-line message,
never an exception. Answers to reviews take effect in the state file at once (one conditional
UPDATE: of two racing answers exactly one wins); halts, resumes, resets, cancels and the kill
switch are queued for the engine, which applies them at its next poll through
:class:`OperatorGuard` and audits what it did (``phase = applied``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from tradeloop.brokers.orders import Order

from tradeloop.risk.halt import BOOK
from tradeloop.risk.pipeline import BatchState, Verdict
from tradeloop.risk.store import ControlStore

if TYPE_CHECKING:  # pragma: no cover
    from tradeloop.risk.pipeline import RiskPipeline

NAME = "operator"
MAX_NOTE = 500   # characters of a note or reason


class ActionResult(msgspec.Struct, frozen=True):
    """What an operator's action did: ``ok`` and a one-line ``message`` for the person."""

    ok: bool
    message: str


class Operator:
    """One person (``who``) acting on the engine whose state file is ``store``."""

    def __init__(self, store: ControlStore, who: str) -> None:
        if not who or not who.strip():
            raise ValueError("an operator needs a name (who) for the audit trail")
        self.store = store
        self.who = who.strip()

    # -- reviews ---------------------------------------------------------------------------
    def approve(self, order_id: str, note: str = "") -> ActionResult:
        """Let a held order go out (it passes the other checks again at the engine's next step)."""
        return self._invalid("approve", order_id, order_id=order_id, note=note) or \
            ActionResult(*self.store.answer(order_id, True, self.who, note))

    def reject(self, order_id: str, note: str = "") -> ActionResult:
        """Refuse a held order."""
        return self._invalid("reject", order_id, order_id=order_id, note=note) or \
            ActionResult(*self.store.answer(order_id, False, self.who, note))

    # -- commands the engine applies -------------------------------------------------------
    def halt(self, symbol: str | None, reason: str = "") -> ActionResult:
        """Stop new orders in ``symbol`` (None: the whole book) until a resume."""
        bad = self._invalid("halt", symbol or "", symbol=symbol or "", reason=reason) or \
            self._unknown_symbol("halt", symbol)
        if bad is not None:
            return bad
        what = symbol or "the book"
        return self._send("halt", symbol or "", f"sent halt of {what}{f' ({reason})' if reason else ''}; the live "
                          "engine applies it at its next step", reason)

    def resume(self, symbol: str | None) -> ActionResult:
        """Lift the halts of ``symbol`` (None: every halt, the book's included): operator and limit-move halts."""
        bad = self._invalid("resume", symbol or "", symbol=symbol or "") or self._unknown_symbol("resume", symbol)
        if bad is not None:
            return bad
        return self._send("resume", symbol or "", f"sent resume {symbol or 'all halts'}; the live engine applies "
                                                  "it at its next step")

    def reset_drawdown(self) -> ActionResult:
        """Reset the drawdown stop: new entries are allowed again, the peak starts from the current equity."""
        return self._send("reset", "", "sent reset of the drawdown stop; the live engine applies it at its next step")

    def cancel(self, order_id: str) -> ActionResult:
        """Cancel one order working at the venue."""
        bad = self._invalid("cancel", order_id, order_id=order_id)
        if bad is not None:
            return bad
        snap = self.store.snapshot()
        if snap is not None:
            if any(r.get("order_id") == order_id for r in snap.get("reviews", ())):
                return self._refuse("cancel", order_id, f"order {order_id} is held for review, not working at the "
                                                        "venue: reject it instead")
            if not any(o.get("id") == order_id for o in snap.get("orders", ())):
                at = snap.get("session", {}).get("updated_at", "?")
                return self._refuse("cancel", order_id, f"no working order {order_id!r} in the session "
                                                        f"(state of {at})")
        return self._send("cancel", order_id, f"sent cancel of {order_id}; the live engine applies it at its next step")

    def kill(self, reason: str = "") -> ActionResult:
        """The kill switch: cancel every working order, flatten every position, halt the book until a resume."""
        bad = self._invalid("kill", "", reason=reason)
        if bad is not None:
            return bad
        return self._send("kill", "", "sent kill: the live engine cancels every working order, flattens every "
                                          "position and halts the book at its next step", reason)

    # -- helpers ---------------------------------------------------------------------------
    def _send(self, kind: str, arg: str, message: str, note: str = "") -> ActionResult:
        self.store.command(kind, arg, self.who, message, note)
        return ActionResult(True, message)

    def _refuse(self, action: str, target: str, message: str) -> ActionResult:
        self.store.audit(self.who, action, target, False, message)
        return ActionResult(False, message)

    def _invalid(self, action: str, target: str, **fields: str) -> ActionResult | None:
        """A refusal when a field is not text of a sane size (ids and symbols: 1-64 printable characters;
        notes and reasons: at most 500 characters): input may come from a web client."""
        for key, value in fields.items():
            short = key in ("order_id", "symbol")
            if not isinstance(value, str):
                return self._refuse(action, str(target)[:64], f"{key} must be text")
            limit = 64 if short else MAX_NOTE
            if len(value) > limit:
                return self._refuse(action, target[:64],
                                    f"{key} is too long ({len(value)} characters; at most {limit})")
            if short and (not value.isprintable() or value != value.strip()) or (key == "order_id" and not value):
                return self._refuse(action, target[:64], f"{key} {value[:64]!r} is not a valid {key.replace('_', ' ')}")
        return None

    def _unknown_symbol(self, action: str, symbol: str | None) -> ActionResult | None:
        """A refusal when the session's published symbols do not include ``symbol`` (None: nothing to check)."""
        if not symbol:
            return None
        snap = self.store.snapshot()
        symbols = (snap or {}).get("session", {}).get("symbols")
        if symbols and symbol not in symbols:
            shown = ", ".join(symbols[:10]) + (f" and {len(symbols) - 10} more" if len(symbols) > 10 else "")
            return self._refuse(action, symbol, f"unknown symbol {symbol!r}: the session trades {shown}")
        return None


class OperatorGuard:
    """The engine's side of the operator commands: halts set by a person (a symbol or the book), and the
    application of every queued command; refuses new orders while their symbol or the book is halted."""

    name = NAME

    def __init__(self) -> None:
        self.reset(None)

    def reset(self, pipeline: RiskPipeline | None) -> None:
        self.pipe = pipeline
        self.halted: dict[str, str] = {}   # key (symbol, or BOOK) -> why

    def state(self) -> dict:
        """Halts in force, for a restarted live run."""
        return {"halted": dict(self.halted)}

    def restore(self, state: dict) -> None:
        self.halted = {str(k): str(v) for k, v in state.get("halted", {}).items()}

    def in_force(self, ts: int) -> dict[str, str]:
        """The halts that refuse orders (key: symbol, or BOOK for the whole book -> why): every one, until resumed."""
        return dict(self.halted)

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        if not self.halted:
            return None
        why = self.halted.get(BOOK) or self.halted.get(order.symbol)
        return None if why is None else Verdict("reject", why)

    def apply(self, ts: int, kind: str, arg: str, by: str, note: str = "", symbols: Any = None) -> tuple[bool, str]:
        """Apply one command (recorded as risk events); (ok, what was done) for the audit trail.
        ``symbols``: the session's, to refuse a halt of another (None: not checked)."""
        pipe = self.pipe
        if kind == "halt":
            symbol, reason = arg, note
            if symbol and symbols is not None and symbol not in symbols:
                pipe.record(ts, self.name, "ignored", f"halt {symbol} by {by}: not a symbol of this session",
                            symbol=symbol)
                return False, f"halt {symbol}: not a symbol of this session"
            why = f"operator halt of {symbol or 'the book'} by {by}" + (f": {reason}" if reason else "")
            self.halted[symbol] = why
            pipe.record(ts, self.name, "halt", why, symbol=symbol)
            return True, f"{symbol or 'the book'} halted"
        if kind == "resume":
            lifted = [k for k in self.halted if not arg or k == arg]
            for key in lifted:
                del self.halted[key]
                pipe.record(ts, self.name, "resume", f"{key or 'book'} resumed by {by}", symbol=key)
            others = pipe.command(ts, "resume", arg, by, quiet=True)   # limit-move halts (risk/halt.py)
            if not lifted and not others:
                pipe.record(ts, self.name, "resume", f"resume {arg or 'all'} by {by}: nothing was halted", symbol=arg)
                return True, f"resume {arg or 'all'}: nothing was halted"
            return True, f"resumed {', '.join(k or 'the book' for k in lifted) or arg or 'all halts'}"
        if kind == "reset":
            done = pipe.command(ts, "reset", "", by)
            return done, "drawdown stop reset" if done else "reset: this run has no drawdown stop"
        if kind == "cancel":
            order = pipe.desk.cancel_order(arg, f"{self.name}: cancelled by {by}")
            if order is None:
                pipe.record(ts, self.name, "ignored", f"cancel {arg} by {by}: no such working order")
                return False, f"cancel {arg}: no such working order (already filled, cancelled or unknown)"
            pipe.record(ts, self.name, "cancel", f"cancelled by {by}", order=order)
            return True, f"cancel of {arg} sent to the venue"
        if kind == "kill":
            why = f"kill switch by {by}" + (f": {note}" if note else "")
            cancelled = pipe.cancel_open(ts, None, self.name, why)
            flattened = pipe.flatten(ts, self.name, why)
            self.halted[BOOK] = why
            pipe.record(ts, self.name, "halt", f"{why}; the book is halted until a resume")
            return True, (f"killed: {len(cancelled)} order(s) cancelled, {len(flattened)} position(s) flattened "
                          "with market orders, the book halted")
        return False, f"unknown command {kind!r}"
