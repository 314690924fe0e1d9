"""``tradeloop paper``: a local MQTT broker, the exchange simulator and a replay, traded live in one command.

It starts Mosquitto on a free loopback port (unless ``--mqtt`` names a broker), the exchange
simulator as its own process (``python -m tradeloop.brokers.exchange``) with the run's fill rules, and
the live runner in this process; once both are subscribed it replays ``--data`` in lockstep
with them (see engine/live/runner.py), so the session is deterministic and its fills are the
backtest's. The run folder holds the same files as a backtest's plus the state files.

Tick inputs (``kind = "ticks"``): the replay publishes the ticks (lockstep per timestamp), the
exchange matches them with the run's ``[quotes]`` rules (the rules file's ``"quotes"``: the tick
backtest's QuoteVenue) and the runner subscribes to ticks (``live.ticks``), so an ``on_tick``
strategy's fills are its tick backtest's when ``[quotes]`` has no latency (in paper, latency is the
real time orders and data take; simulated latency is not added on top: such a config is refused).

Operators (docs/live-trading.md): a held order waits ``risk.review.timeout`` seconds of the wall clock, and
the replay PAUSES meanwhile (the runner does not acknowledge the timestamp until no review is pending, so
the next one is not published; ``live.paused_for_review`` / ``live.resumed_after_review`` are logged).
``--pace S`` (``live.pace``) waits S wall seconds between timestamps so a person can follow; ``--console
HOST:PORT`` starts the web console beside the session, which then stays open after its replay (state
``finished``) until SIGINT/SIGTERM.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import structlog

from tradeloop.brokers.fill_config import write_rules
from tradeloop.brokers.sim import FillRules

from tradeloop.engine.runs.result import BacktestResult
from tradeloop.errors import ConfigError
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.live.consoleproc import parse_bind
from tradeloop.engine.live.runner import LiveRunner
from tradeloop.engine.report.walkforward import write_run_report
from tradeloop.engine.runs.recorder import build_manifest, write_run
from tradeloop.engine.telemetry.logs import RunEvents, run_events
from tradeloop.engine.assembly.build import build_quotes, build_rules, load_inputs
from tradeloop.brokers.quotes import Latency, QuoteRules
from tradeloop.data.schema import TickSeries

PAPER_VENUE = "paper"


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalMosquitto:
    """A Mosquitto process on a free loopback port, for one paper session."""

    def __init__(self, folder: Path) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise ConfigError("tradeloop paper needs the mosquitto broker (Debian: apt-get install mosquitto), "
                              "or --mqtt URL of a running broker")
        self.port = free_port()
        conf = folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 "set_tcp_nodelay true", f"log_dest file {folder / 'mosquitto.log'}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not start on port {self.port} (see {folder / 'mosquitto.log'})")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM (a clean logout / shutdown), then SIGKILL if it is still there after ``grace_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def exchange_args(folder: Path, rules: FillRules, symbols: list[str] | None = None,
                  future_tick_s: float | None = None, future_bar_s: float | None = None,
                  quotes: QuoteRules | None = None) -> list[str]:
    """The exchange simulator's flags: ``--rules`` (the run's fill rules, and tick rules ``quotes`` if given,
    written as JSON into the session folder, so the exchange fills with every model a backtest can use:
    brokers/fill_config.py), the ``--symbols`` it serves, and the runner's own future-stamp setting
    (``live.future_tick_s`` / ``live.future_bar_s``)."""
    path = write_rules(folder / "fill_rules.json", rules, quotes)
    args = ["--rules", str(path.resolve())]  # the child runs elsewhere
    if symbols:
        args += ["--symbols", ",".join(symbols)]
    if future_tick_s is not None:
        args += ["--max-future-tick-s", repr(float(future_tick_s))]
    if future_bar_s is not None:
        args += ["--max-future-bar-s", repr(float(future_bar_s))]
    return args


class ExchangeProcess:
    """``python -m tradeloop.brokers.exchange`` as a child process; ``fix_port`` once it printed its ready line."""

    def __init__(self, folder: Path, mqtt: str, interval: str, extra: list[str], *, sender: str = "EXCH",
                 target: str = "TRADER", timeout_s: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "tradeloop.brokers.exchange", "--port", "0", "--sender", sender, "--target", target,
               "--state", str(folder / "exchange.sqlite"), "--mqtt", mqtt, "--venue", PAPER_VENUE,
               "--interval", interval, "--log-json", *extra]
        self.log_path = folder / "exchange.log"
        self.final: dict[str, Any] = {}   # its last stdout line, once stopped: market data dropped by reason
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (open as long as the process runs)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log)
        line = _readline(self.proc, timeout_s)
        try:
            ready = json.loads(line)
            self.fix_port = int(ready["fix_port"])
        except (ValueError, KeyError, TypeError):
            self.stop()
            raise RuntimeError(f"the exchange simulator did not start: {line!r} (see {self.log_path})") from None

    def stop(self) -> None:
        """Stop it (SIGTERM) and read its last line: the market data it dropped, by reason (``self.final``)."""
        stop_process(self.proc)
        self._log.close()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            for line in self.proc.stdout.read().decode(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("event") == "stopped":
                    self.final = event
            self.proc.stdout.close()

    @property
    def dropped(self) -> dict[str, int]:
        """Market data the exchange did not take, by reason (after :meth:`stop`; its feed's drops included)."""
        md = self.final.get("market_data") or {}
        out = dict(md.get("dropped") or {})
        for feed in (md.get("feeds") or {}).values():
            for reason, n in (feed.get("dropped") or {}).items():
                out[reason] = out.get(reason, 0) + n
            if feed.get("refused"):
                out["invalid"] = out.get("invalid", 0) + feed["refused"]
        return out


def _readline(proc: subprocess.Popen, timeout_s: float) -> str:
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout_s):
        return ""
    return proc.stdout.readline().decode(errors="replace")


async def _session(cfg: RunConfig, series: list[Any], log: Any, run_id: str) -> tuple[BacktestResult, LiveRunner]:
    from tradeloop.data.replay import replay
    runner = LiveRunner(cfg, log=log)
    runner.mode, runner.run_id = "paper", run_id
    stop = None
    if cfg.live.console:   # operators may still look and act after the replay: open until SIGINT/SIGTERM
        stop = asyncio.Event()
        runner.hold_open = True
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    try:
        task = asyncio.create_task(runner.run(stop))
        while not runner.ready.is_set():
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        bars = [s for s in series if not isinstance(s, TickSeries)]
        ticks = [s for s in series if isinstance(s, TickSeries)]
        feeder = asyncio.create_task(replay(bars, cfg.live.mqtt, venue=PAPER_VENUE, interval=cfg.live.interval,
                                            lockstep=("runner",), qos=1, ticks=ticks,
                                            lockstep_timeout=lockstep_timeout(cfg)))
        # the replay ends first (then the runner drains, or stays open for operators) unless the runner stops
        # first: it failed, or a signal stopped it (even while paused for a review, when the replay is waiting
        # for an ack that will never come): then the replay is cancelled at once
        await asyncio.wait({task, feeder}, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not feeder.done():
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            task.result()   # the runner's failure, if it failed
        else:
            await feeder
        return await task, runner
    finally:
        runner.close()


def lockstep_timeout(cfg: RunConfig) -> float:
    """How long the replay waits for the runner's ack of a timestamp: a minute, plus the pace, plus the review
    timeout when reviews are on (the runner does not ack while an order waits for a person)."""
    review = cfg.risk.review.timeout if cfg.risk.review.notional is not None else 0.0
    return 60.0 + cfg.live.pace + review


def paper(cfg: RunConfig, *, out: Path | None = None, mqtt: str | None = None) -> tuple[BacktestResult, Path]:
    """Trade ``cfg``'s strategy live against the exchange simulator over a replay of ``cfg.data``; write the
    session folder (engine/runs/recorder.py) with its log events."""
    with run_events() as events:
        return _paper(cfg, out=out, mqtt=mqtt, events=events)


def _paper(cfg: RunConfig, *, out: Path | None, mqtt: str | None, events: RunEvents) -> tuple[BacktestResult, Path]:
    log = structlog.get_logger("tradeloop.paper")
    ticked = any(getattr(spec, "kind", "bars") == "ticks" for spec in cfg.data)
    quotes = build_quotes(cfg) if ticked else None
    if quotes is not None and quotes.latency != Latency():   # checked before any input is read
        raise ConfigError("[quotes] latency (entry_ms, data_ms, jitter_ms) is for tick backtests: in paper "
                          "trading latency is the real time orders and data take; set them to 0")
    if cfg.live.console:
        parse_bind(cfg.live.console)   # a bad address is refused before anything starts
    series, inputs = load_inputs(cfg)
    rules = build_rules(cfg)
    folder = Path(out or cfg.run.out or Path("runs") / f"paper-{time.strftime('%Y%m%d-%H%M%S')}")
    folder.mkdir(parents=True, exist_ok=True)
    state = folder / "live.sqlite"
    if state.exists():
        raise ConfigError(f"{folder} already holds a paper session ({state}); choose another --out")
    from tradeloop.data.replay import infer_interval
    bar_series = [s for s in series if not isinstance(s, TickSeries)]
    interval = (cfg.live.interval if cfg.live.interval != "1d" or not bar_series
                else infer_interval(bar_series[0]))
    broker = None if mqtt else LocalMosquitto(folder)
    exchange = None
    try:
        url = mqtt or broker.url
        exchange = ExchangeProcess(folder, url, interval,
                                   exchange_args(folder, rules, [s.symbol for s in series], cfg.live.future_tick_s,
                                                 cfg.live.future_bar_s, quotes))
        cfg.live.mqtt, cfg.live.fix, cfg.live.state = url, f"127.0.0.1:{exchange.fix_port}", str(state)
        cfg.live.symbols = [s.symbol for s in series]
        cfg.live.venue, cfg.live.interval, cfg.live.lockstep = PAPER_VENUE, interval, True
        cfg.live.ticks = cfg.live.ticks or ticked
        # the replay is the market here, not history to warm up on: the runner gets no --data
        result, runner = asyncio.run(_session(dataclasses.replace(cfg, data=[]), series, log, folder.name))
    finally:
        if exchange is not None:
            exchange.stop()
        if broker is not None:
            broker.stop()
    details = runner.details()
    details["session"]["exchange_market_data_dropped"] = exchange.dropped
    result.metrics.setdefault("live", {})["exchange_market_data_dropped"] = exchange.dropped
    log.info("paper_done", fills=len(result.fills), steps=runner.stats.steps, out=str(folder))
    manifest = build_manifest("paper", cfg, runner.strategy, rules, inputs=inputs, models=result.models,
                              symbols=result.symbols, tz=series[0].tz, details=details)
    write_run(folder, result, manifest, report=write_run_report, events=events)
    return result, folder
