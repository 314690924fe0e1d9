"""Operator commands against a running live engine's state file: ``review``, ``risk`` and ``audit``.

``tradeloop review list|approve ID|reject ID``, ``tradeloop risk halt [SYMBOL]|resume [SYMBOL]|reset|
cancel ORDER_ID|kill --yes`` and ``tradeloop audit`` go through :class:`tradeloop.risk.control.Operator`,
the same command path as the web console: each action is audited with who (``--by``, default the login
name) and when. They write to the SQLite file the live engine polls, so they work from any process on the
machine; ``--config FILE`` may stand in for ``--state`` (its live.state). An action that cannot apply
(unknown order, answered by someone else first, unknown symbol) is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from tradeloop.risk.control import ActionResult, Operator
from tradeloop.risk.store import ControlStore, StoreError


def add_ops_parsers(sub: Any) -> None:
    """Register ``review``, ``risk`` and ``audit`` on the ``tradeloop`` subcommand parser."""
    rv = sub.add_parser("review", help="orders held for review by a live engine: list, approve, reject")
    rsub = rv.add_subparsers(dest="review_command", required=True)
    ls = rsub.add_parser("list", help="the orders waiting for an answer")
    ls.add_argument("--all", action="store_true", help="answered ones too")
    for name in ("approve", "reject"):
        a = rsub.add_parser(name, help=f"{name} a held order")
        a.add_argument("order_id", metavar="ID")
        a.add_argument("--note", default="", help="why (kept in the state file and the audit trail)")
    for p in rsub.choices.values():
        _state_args(p)
    rk = sub.add_parser("risk", help="operator commands to a live engine: halt, resume, reset, cancel, kill")
    ksub = rk.add_subparsers(dest="risk_command", required=True)
    halt = ksub.add_parser("halt", help="stop new orders in SYMBOL (the whole book without one) until a resume")
    halt.add_argument("symbol", nargs="?", default="")
    halt.add_argument("--reason", default="", help="why (kept in the audit trail)")
    res = ksub.add_parser("resume", help="lift the halts of SYMBOL (every halt, the book's too, without one)")
    res.add_argument("symbol", nargs="?", default="")
    rst = ksub.add_parser("reset", help="reset the drawdown stop: new entries are allowed again")
    can = ksub.add_parser("cancel", help="cancel an order working at the venue")
    can.add_argument("order_id", metavar="ORDER_ID")
    kill = ksub.add_parser("kill", help="kill switch: cancel every working order, flatten every position, halt "
                                        "the book (needs --yes)")
    kill.add_argument("--yes", action="store_true", help="confirm: this closes every position at market")
    kill.add_argument("--reason", default="", help="why (kept in the audit trail)")
    for p in (halt, res, rst, can, kill):
        _state_args(p)
    au = sub.add_parser("audit", help="the audit trail of a live engine's state file: who did what, when")
    au.add_argument("--limit", type=int, default=1000, help="at most this many rows, the newest (default 1000)")
    _state_args(au)


def _state_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="FILE", help="the live engine's state file (live.state)")
    p.add_argument("--config", dest="ops_config", metavar="FILE", help="take the state file from this run config")
    p.add_argument("--by", default="", help="who acts (default: the login name)")


def _store(a: argparse.Namespace) -> ControlStore:
    path = a.state
    if not path and a.ops_config:
        from tradeloop.engine.config.run import RunConfig
        path = RunConfig.load(a.ops_config).live.state
    if not path:
        raise StoreError("no state file: give --state FILE (or --config with live.state)")
    return ControlStore(path, create=False)


def who(by: str = "") -> str:
    """``by``, else the login name (``operator`` where the machine has none)."""
    if by.strip():
        return by.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "operator"


def run_ops(a: argparse.Namespace) -> int:
    """Run a ``review``, ``risk`` or ``audit`` command; 2 with one line on stderr when it cannot apply."""
    from tradeloop.errors import ConfigError
    if getattr(a, "risk_command", None) == "kill" and not a.yes:
        print("tradeloop: error: risk kill cancels every working order and flattens every position at market: "
              "add --yes to confirm", file=sys.stderr)
        return 2
    try:
        store = _store(a)
        try:
            if a.command == "review" and a.review_command == "list":
                return _list(a, store)
            if a.command == "audit":
                return _audit(a, store)
            result = _act(a, Operator(store, who(a.by)))
        finally:
            store.close()
    except (StoreError, ConfigError) as e:
        print(f"tradeloop: error: {e}", file=sys.stderr)
        return 2
    if not result.ok:
        print(f"tradeloop: error: {result.message}", file=sys.stderr)
        return 2
    print(result.message)
    return 0


def _act(a: argparse.Namespace, op: Operator) -> ActionResult:
    if a.command == "review":
        return (op.approve if a.review_command == "approve" else op.reject)(a.order_id, a.note)
    cmd = a.risk_command
    if cmd == "halt":
        return op.halt(a.symbol or None, a.reason)
    if cmd == "resume":
        return op.resume(a.symbol or None)
    if cmd == "reset":
        return op.reset_drawdown()
    if cmd == "cancel":
        return op.cancel(a.order_id)
    return op.kill(a.reason)


def _list(a: argparse.Namespace, store: ControlStore) -> int:
    rows = store.reviews(pending_only=not a.all)
    if not rows:
        print("no orders waiting for review" if not a.all else "no reviews")
        return 0
    head = ["order_id", "symbol", "side", "qty", "price", "notional", "held_ts", "status", "reason", "deadline_at"]
    print("\t".join(head))
    for r in rows:
        print("\t".join(_cell(r[k]) for k in head))
    return 0


def _audit(a: argparse.Namespace, store: ControlStore) -> int:
    rows = store.audit_trail(limit=a.limit)
    if not rows:
        print("the audit trail is empty")
        return 0
    head = ["id", "at", "who", "action", "target", "ok", "phase", "message"]
    print("\t".join(head))
    for r in rows:
        print("\t".join(_cell(r[k]) for k in head))
    return 0


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 1000 else f"{v:g}"
    if isinstance(v, int) and v > 10**15:  # a run-clock timestamp
        import numpy as np
        return str(np.datetime64(v, "ns").astype("datetime64[s]")).replace("T", " ")
    return str(v).replace("\t", " ").replace("\n", " ")
