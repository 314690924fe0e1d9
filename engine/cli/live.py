"""``tradeloop live`` and ``tradeloop paper``: their flags and what they run (engine/live/runner.py, engine/live/paper.py)."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

LIVE_FLAGS = {  # flag -> live.<key>
    "mqtt": "mqtt", "fix": "fix", "state": "state", "venue": "venue", "interval": "interval", "sender": "sender",
    "target": "target", "username": "username", "password_env": "password_env", "password_file": "password_file",
    "stale_after": "stale_after", "max_future_tick_s": "future_tick_s", "max_future_bar_s": "future_bar_s",
    "console": "console",
}
CONSOLE_HELP = ("serve the operator console at HOST:PORT (loopback unless you mean it; its tokens come from "
                "TRADELOOP_CONSOLE_TOKEN / TRADELOOP_CONSOLE_VIEWER_TOKEN or a 0600 users file, never from here)")


def add_live_parsers(sub: Any, add_run_args: Any) -> None:
    lv = sub.add_parser("live", help="trade a strategy live: MQTT market data in, FIX 4.4 orders out",
                        description="--data files are history: replayed before the session to warm indicators "
                                    "and strategy state up, every order refused.")
    add_run_args(lv, out_help="write the session's run folder here when it ends", quiet_help="no summary")
    lv.add_argument("--mqtt", metavar="URL", help="market data broker, mqtt://host:port or mqtts://")
    lv.add_argument("--fix", metavar="HOST:PORT", help="the broker's FIX 4.4 acceptor")
    lv.add_argument("--state", metavar="FILE.sqlite", help="journal, FIX sequence numbers, review queue (SQLite)")
    lv.add_argument("--symbols", metavar="A,B", help="symbols to trade")
    lv.add_argument("--venue", help="venue level of the MQTT topics (default sim)")
    lv.add_argument("--interval", help="bar interval level of the MQTT topics (default 1d)")
    lv.add_argument("--sender", help="our SenderCompID (default TRADER)")
    lv.add_argument("--target", help="the broker's CompID (default EXCH)")
    lv.add_argument("--username", help="FIX Username(553)")
    lv.add_argument("--password-env", metavar="VAR", help="environment variable holding the FIX password")
    lv.add_argument("--password-file", metavar="PATH", help="0600 file holding the FIX password")
    lv.add_argument("--stale-after", type=float, metavar="S", help="halt a symbol after S seconds without data")
    lv.add_argument("--ticks", action="store_true", help="subscribe to ticks too (Strategy.on_tick)")
    lv.add_argument("--lockstep", action="store_true",
                    help="step on the exchange's $ack and acknowledge each step (paper trading, parity tests)")
    lv.add_argument("--max-future-tick-s", type=float, metavar="S",
                    help="drop ticks stamped more than S s ahead of this clock (default 5; the exchange's flag too)")
    lv.add_argument("--max-future-bar-s", type=float, metavar="S",
                    help="drop bars stamped more than S s ahead of this clock (default one --interval)")
    lv.add_argument("--fresh-state", action="store_true",
                    help="if --state exists but is empty, truncated or corrupt, move it aside (never deleted) and "
                         "start fresh; without this flag such a file is an error")
    lv.add_argument("--console", metavar="HOST:PORT", help=CONSOLE_HELP)

    pp = sub.add_parser("paper", help="paper-trade: local MQTT broker + exchange simulator + replay of --data, live")
    add_run_args(pp, out_help="session folder (default runs/paper-<time>)", quiet_help="no summary")
    pp.add_argument("--mqtt", metavar="URL", help="use this MQTT broker instead of starting Mosquitto")
    pp.add_argument("--console", metavar="HOST:PORT",
                    help=CONSOLE_HELP + "; the session then stays open after its replay until SIGINT/SIGTERM")
    pp.add_argument("--pace", type=float, metavar="SECONDS",
                    help="wall-clock pause between replayed timestamps, so a person can follow (default 0)")


def cmd_live(a: argparse.Namespace, config_from_args: Any) -> int:
    from tradeloop.engine.live.runner import run_live
    cfg = config_from_args(a)
    for flag, key in LIVE_FLAGS.items():
        value = getattr(a, flag)
        if value is not None:
            setattr(cfg.live, key, value)
    if a.symbols:
        cfg.live.symbols = [s.strip() for s in a.symbols.split(",") if s.strip()]
    if a.lockstep:
        cfg.live.lockstep = True
    if a.ticks:
        cfg.live.ticks = True
    cfg.validate()   # the live flags too
    out = Path(a.out) if a.out else None

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_live(cfg, out=out, stop=stop, on_ready=ready, fresh_state=a.fresh_state)

    def ready(runner: Any) -> None:  # one JSON line on stdout, for supervisors and tests to wait on
        print(json.dumps({"event": "ready", "fix": cfg.live.fix, "mqtt": cfg.live.mqtt, "state": cfg.live.state,
                          "symbols": cfg.live.symbols, "recovered": vars(runner.stats)}), flush=True)

    from tradeloop.engine.live.runner import LiveFailure
    try:
        result, folder = asyncio.run(main())
    except (ConnectionError, LiveFailure) as e:
        print(f"tradeloop live: {e}", file=sys.stderr)
        return 1
    if not a.quiet:
        live = result.metrics.get("live", {})
        print(f"live session: {live.get('steps', 0)} steps, {len(result.fills)} fills"
              + (f", run folder {folder}" if folder else ""))
    return 0


def cmd_paper(a: argparse.Namespace, config_from_args: Any) -> int:
    """Run a paper session; one that fails once trading (its run folder written, status failed) or cannot reach
    its exchange is one line on stderr and exit status 1, as ``tradeloop live``."""
    from tradeloop.engine.live.paper import PaperFailure, paper
    cfg = config_from_args(a)
    if a.console is not None:
        cfg.live.console = a.console
    if a.pace is not None:
        cfg.live.pace = a.pace
    cfg.validate()
    try:
        result, folder = paper(cfg, out=Path(a.out) if a.out else None, mqtt=a.mqtt)
    except (ConnectionError, PaperFailure) as e:
        print(f"tradeloop paper: {e}", file=sys.stderr)
        return 1
    if not a.quiet:
        print(f"paper session: {result.bars} bars, {len(result.fills)} fills, "
              f"final value {result.final_value:,.2f}; run folder {folder}")
    return 0
