"""Operator commands against a running live engine's state file: ``review`` and ``risk``.

``tradeloop review list|approve ID|reject ID --state FILE`` answers orders held for review;
``tradeloop risk resume [SYMBOL]|reset --state FILE`` lifts limit-move halts or resets the
drawdown stop. They write to the SQLite file the live driver polls at each step, so they work
from any process on the machine. ``--config FILE`` may stand in for ``--state`` (its live.state).
"""
from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from tradeloop.risk.store import ControlStore, StoreError


def add_ops_parsers(sub: Any) -> None:
    """Register ``review`` and ``risk`` on the ``tradeloop`` subcommand parser."""
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
    rk = sub.add_parser("risk", help="operator commands to a live engine's risk layer")
    ksub = rk.add_subparsers(dest="risk_command", required=True)
    res = ksub.add_parser("resume", help="lift the limit-move halt of SYMBOL (all halts without one)")
    res.add_argument("symbol", nargs="?", default="")
    rst = ksub.add_parser("reset", help="reset the drawdown stop: new entries are allowed again")
    for p in (res, rst):
        _state_args(p)


def _state_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="FILE", help="the live engine's state file (live.state)")
    p.add_argument("--config", dest="ops_config", metavar="FILE", help="take the state file from this run config")
    p.add_argument("--by", default="", help="who answers (default: the login name)")


def _store(a: argparse.Namespace) -> ControlStore:
    path = a.state
    if not path and a.ops_config:
        from tradeloop.engine.config.run import RunConfig
        path = RunConfig.load(a.ops_config).live.state
    if not path:
        raise StoreError("no state file: give --state FILE (or --config with live.state)")
    return ControlStore(path, create=False)


def _who(a: argparse.Namespace) -> str:
    if a.by:
        return a.by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "operator"


def run_ops(a: argparse.Namespace) -> int:
    """Run a ``review`` or ``risk`` command; 2 with a message on stderr when it cannot."""
    from tradeloop.errors import ConfigError
    try:
        store = _store(a)
        try:
            if a.command == "review":
                return _review(a, store)
            store.command(a.risk_command, getattr(a, "symbol", ""), _who(a))
            what = f"resume {a.symbol or 'all halts'}" if a.risk_command == "resume" else "reset of the drawdown stop"
            print(f"sent {what}; the live engine applies it at its next step")
            return 0
        finally:
            store.close()
    except (StoreError, ConfigError) as e:
        print(f"tradeloop: error: {e}", file=sys.stderr)
        return 2


def _review(a: argparse.Namespace, store: ControlStore) -> int:
    if a.review_command == "list":
        rows = store.reviews(pending_only=not a.all)
        if not rows:
            print("no orders waiting for review" if not a.all else "no reviews")
            return 0
        head = ["order_id", "symbol", "side", "qty", "price", "notional", "held_ts", "status", "reason"]
        print("\t".join(head))
        for r in rows:
            print("\t".join(_cell(r[k]) for k in head))
        return 0
    approve = a.review_command == "approve"
    store.answer(a.order_id, approve, _who(a), a.note)
    print(f"{'approved' if approve else 'rejected'} {a.order_id}; the live engine acts on it at its next step")
    return 0


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 1000 else f"{v:g}"
    if isinstance(v, int) and v > 10**15:  # a run-clock timestamp
        import numpy as np
        return str(np.datetime64(v, "ns").astype("datetime64[s]")).replace("T", " ")
    return str(v)
