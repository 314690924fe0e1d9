"""``tradeloop console --state FILE [--bind HOST:PORT]``: the operator console beside a running session.

The flags and the server are engine/console/serve.py's (also ``python -m tradeloop.engine.console``,
which ``tradeloop live|paper --console`` starts); this registers them on the ``tradeloop`` parser.
"""
from __future__ import annotations

import argparse
from typing import Any


def add_console_parser(sub: Any) -> None:
    """Register ``console`` on the ``tradeloop`` subcommand parser."""
    from tradeloop.engine.console.serve import add_arguments
    p = sub.add_parser("console", help="the operator console (a web page) over a running session's state file")
    add_arguments(p)
    p.set_defaults(run_command=cmd_console)


def cmd_console(a: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; a ConfigError (exit 2, one line) for a user's mistake."""
    from tradeloop.engine.console.serve import run
    try:
        return run(a)
    except KeyboardInterrupt:
        return 0
