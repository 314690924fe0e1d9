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

Failures: once trading has started, an error that stops the session (the strategy raising, the exchange
simulator or the broker process this command started ending, the replay failing) still writes the run
folder of the session so far (manifest ``status: failed``, its ``error`` in one line: ``file:line`` for a
strategy error; the fills, orders and equity up to it; the traceback in ``events.jsonl``; the state files
kept), stops every process the session started, and raises :class:`PaperFailure`. SIGINT/SIGTERM end a
session at any time the same way, without the error (``status: stopped`` if its replay was not over).
The manifest records the broker and exchange it started as ``local (started by paper)`` (their loopback ports
mean nothing after the session) and the state file by its name in the run folder, so identical sessions give
identical manifests.
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
import traceback
from pathlib import Path
from typing import Any

import structlog

from tradeloop.brokers.fill_config import write_rules
from tradeloop.brokers.sim import FillRules

from tradeloop.engine.runs.result import BacktestResult
from tradeloop.errors import ConfigError
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.live.children import parse_bind, readline_within, stop_process
from tradeloop.engine.live.runner import LiveRunner
from tradeloop.engine.report.walkforward import write_run_report
from tradeloop.engine.loop.strategy import one_line, strategy_failure
from tradeloop.engine.runs.recorder import Status, build_manifest, write_run
from tradeloop.engine.telemetry.logs import RunEvents, console_muted, run_events
from tradeloop.engine.assembly.build import build_quotes, build_rules, load_inputs
from tradeloop.brokers.quotes import Latency, QuoteRules
from tradeloop.data.schema import TickSeries

PAPER_VENUE = "paper"
LOCAL_MQTT = "local (started by paper)"                        # the manifest's live.mqtt for our own Mosquitto
LOCAL_EXCHANGE = "local exchange simulator (started by paper)"  # ... and live.fix for our exchange simulator
STATE_FILE = "live.sqlite"                                     # the runner's state file, in the run folder
RUNNER_STOP_S = 15.0   # how long a failed session waits for its runner to stop (log out, publish) before cancelling it


class PaperFailure(RuntimeError):
    """A paper session stopped by an error after it started trading; ``error`` is the one-line cause (as the
    manifest holds it) and ``folder`` the run folder written with ``status: failed``."""

    def __init__(self, error: str, folder: Path) -> None:
        self.error, self.folder = error, folder
        super().__init__(f"stopped by {error} (run folder {folder}: status failed, traceback in "
                         f"{folder / 'events.jsonl'})")


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
        line = readline_within(self.proc, timeout_s) or ""
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


@dataclasses.dataclass(frozen=True)
class Watched:
    """A process the session started and cannot go on without: what it is (for the error) and its log."""

    what: str
    proc: subprocess.Popen
    log: Path


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _lost(watched: list[Watched]) -> ConnectionError | None:
    """The lost connection of the first watched process that has ended, if one has."""
    for w in watched:
        code = w.proc.poll()
        if code is not None:
            return ConnectionError(f"lost the connection to the {w.what}: its process {_exit_text(code)} "
                                   f"mid-session (its log: {w.log})")
    return None


async def _watch(watched: list[Watched], every_s: float = 0.05) -> None:
    """Raise the lost connection as soon as a process the session started ends (nothing else would notice
    soon: the FIX client reconnects for ever and the replay waits a minute for an ack)."""
    while (lost := _lost(watched)) is None:
        await asyncio.sleep(every_s)
    raise lost


async def _session(runner: LiveRunner, cfg: RunConfig, series: list[Any],
                   watched: list[Watched]) -> tuple[BacktestResult, bool]:
    """Run ``runner`` and the lockstep replay of ``series`` until the replay is over (and the runner drained, or
    stopped by a signal when held open for operators), a signal stops it, or one of them or a watched process
    fails; then stop what still runs and raise the first cause: a lost process before the runner's or the
    replay's error. Returns the result and whether a signal stopped the session before its replay was over."""
    from tradeloop.data.replay import replay
    stop = asyncio.Event()   # SIGINT/SIGTERM, or a failure elsewhere: the runner ends cleanly (logout, state published)
    runner.hold_open = bool(cfg.live.console)   # operators may still look and act after the replay: open until stopped
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):   # so the processes it started are stopped and its folder written
        with contextlib.suppress(ValueError, RuntimeError):   # not the main thread: no signal handling
            loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(runner.run(stop))
    watcher = asyncio.create_task(_watch(watched))
    ready = asyncio.create_task(runner.ready.wait())
    feeder: asyncio.Task | None = None
    try:
        await asyncio.wait({task, watcher, ready}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done() and not task.done() and not watcher.done():
            bars = [s for s in series if not isinstance(s, TickSeries)]
            ticks = [s for s in series if isinstance(s, TickSeries)]
            feeder = asyncio.create_task(replay(bars, cfg.live.mqtt, venue=PAPER_VENUE, interval=cfg.live.interval,
                                                lockstep=("runner",), qos=1, ticks=ticks,
                                                lockstep_timeout=lockstep_timeout(cfg)))
            # the replay ends first (then the runner drains, or stays open for operators) unless the runner
            # stops first (it failed, or a signal stopped it, even while paused for a review) or a process died
            await asyncio.wait({task, feeder, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if feeder.done() and feeder.exception() is None and not task.done() and not watcher.done():
                await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and task.exception() is None:
            replayed = feeder is not None and feeder.done() and not feeder.cancelled() and feeder.exception() is None
            return task.result(), stop.is_set() and not replayed   # completed, or stopped by a signal
        if not task.done():   # a failure elsewhere: the runner stops as on a signal (bounded), then that cause
            stop.set()
            if not (await asyncio.wait({task}, timeout=RUNNER_STOP_S))[0]:
                structlog.get_logger("tradeloop.paper").warning("paper.runner_stop_timeout", seconds=RUNNER_STOP_S)
        lost = _lost(watched)   # a process that died is the cause of whatever failed after it
        if lost is not None:
            raise lost
        for t in (task, feeder):
            if t is not None and t.done() and t.exception() is not None:
                t.result()
        raise RuntimeError("the paper session stopped without a result")   # not reached: one of them failed
    finally:
        for t in (ready, feeder, watcher, task):
            if t is None:
                continue
            if not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            elif not t.cancelled():
                t.exception()   # retrieved (not re-raised: that would cut the traceback the error line names)


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
    state = folder / STATE_FILE
    if state.exists():
        raise ConfigError(f"{folder} already holds a paper session ({state}); choose another --out")
    from tradeloop.data.replay import infer_interval
    bar_series = [s for s in series if not isinstance(s, TickSeries)]
    interval = (cfg.live.interval if cfg.live.interval != "1d" or not bar_series
                else infer_interval(bar_series[0]))
    broker = None if mqtt else LocalMosquitto(folder)
    exchange = runner = None
    failure: Exception | None = None
    stopped = False
    t0 = time.perf_counter()
    try:
        url = mqtt or broker.url
        exchange = ExchangeProcess(folder, url, interval,
                                   exchange_args(folder, rules, [s.symbol for s in series], cfg.live.future_tick_s,
                                                 cfg.live.future_bar_s, quotes))
        cfg.live.mqtt, cfg.live.fix, cfg.live.state = url, f"127.0.0.1:{exchange.fix_port}", str(state)
        cfg.live.symbols = [s.symbol for s in series]
        cfg.live.venue, cfg.live.interval, cfg.live.lockstep = PAPER_VENUE, interval, True
        cfg.live.ticks = cfg.live.ticks or ticked
        watched = [Watched(f"exchange simulator (FIX {cfg.live.fix})", exchange.proc, exchange.log_path)]
        if broker is not None:
            watched.append(Watched(f"MQTT broker (mosquitto on {url}, started by paper)", broker.proc,
                                   folder / "mosquitto.log"))
        # the replay is the market here, not history to warm up on: the runner gets no --data
        runner = LiveRunner(dataclasses.replace(cfg, data=[]), log=log)
        runner.mode, runner.run_id = "paper", folder.name
        try:
            result, stopped = asyncio.run(_session(runner, cfg, series, watched))
        except Exception as e:
            if not runner.ready.is_set():   # never traded: the plain error says it all (no logon, no console)
                raise
            failure, result = e, runner.result(time.perf_counter() - t0)
    finally:
        if runner is not None:
            runner.close()
        if exchange is not None:
            exchange.stop()
        if broker is not None:
            broker.stop()
    details = runner.details()
    details["session"]["exchange_market_data_dropped"] = exchange.dropped
    result.metrics.setdefault("live", {})["exchange_market_data_dropped"] = exchange.dropped
    status: Status = "stopped" if failure is None and stopped else "completed"
    error = None
    if failure is not None:
        status, error, detail = "failed", *_cause(runner, failure)
        with console_muted():   # the CLI shows one line; the traceback goes to events.jsonl
            log.error("paper.failed", error=error, traceback=detail, steps=runner.stats.steps, fills=len(result.fills),
                      open_orders=sorted(o.id for o in runner.venue.open_orders()), out=str(folder))
    else:
        log.info("paper_done", fills=len(result.fills), steps=runner.stats.steps, out=str(folder))
    manifest = build_manifest("paper", recorded_config(cfg, mqtt), runner.strategy, rules, inputs=inputs,
                              models=result.models, symbols=result.symbols, tz=series[0].tz, status=status,
                              error=error, details=details)
    write_run(folder, result, manifest, report=write_run_report, events=events)
    if failure is not None:
        raise PaperFailure(error, folder) from failure
    return result, folder


def _cause(runner: LiveRunner, failure: BaseException) -> tuple[str, str]:
    """The one-line error of a failed session (``strategy error: file:line in on_bar: ...`` when the strategy's
    own code raised, else ``Type: message``) and its full traceback."""
    user = strategy_failure(runner.strategy, failure)
    if user is not None:
        return str(user), user.detail
    return one_line(failure), "".join(traceback.format_exception(type(failure), failure, failure.__traceback__))


def recorded_config(cfg: RunConfig, mqtt: str | None) -> RunConfig:
    """``cfg`` as the manifest records it: the broker and exchange the session started as what they were (their
    loopback ports are meaningless afterwards), a ``--mqtt`` broker as given, the state file by its name in the
    run folder; so two identical sessions have identical manifests."""
    live = dataclasses.replace(cfg.live, mqtt=mqtt or LOCAL_MQTT, fix=LOCAL_EXCHANGE, state=STATE_FILE)
    return dataclasses.replace(cfg, live=live)
