"""Real processes for the live-trading tests: the exchange simulator, ``tradeloop live``, ``tradeloop replay``.

Each is started with the project's own command line, as an operator would, and talks to the
others only over loopback TCP (FIX) and a real Mosquitto broker (tests/mosquitto.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

from tradeloop.brokers.fill_config import write_rules
from tradeloop.brokers.sim import FillRules
from tradeloop.engine.live.children import stop_process

ROOT = Path(__file__).resolve().parents[1]
from tests.conftest import SHARED_DATA as SHARED  # noqa: E402  (../shared/data or $TRADELOOP_SHARED_DATA)
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


class Proc:
    """A child process whose stdout lines are read as JSON events and whose stderr goes to a log file."""

    def __init__(self, name: str, args: list[str], folder: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = folder / f"{name}.log"
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**ENV, **(env or {})},
                                         stdout=subprocess.PIPE,
                                         stderr=err, stdin=subprocess.DEVNULL)

    def line(self, timeout: float = 30.0) -> dict:
        """The next JSON line on stdout (AssertionError with the process's log when none comes)."""
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"{self.name}: no line in {timeout} s; log:\n{self.tail()}")
        text = self.proc.stdout.readline().decode()
        if not text:
            raise AssertionError(f"{self.name} exited ({self.proc.wait()}); log:\n{self.tail()}")
        return json.loads(text)

    def wait(self, timeout: float = 120.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.name} still running after {timeout} s; log:\n{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        """Stop it; whatever it started and left behind (a session killed after a failed test) goes too."""
        import psutil
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        stop_process(self.proc)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def exchange(folder: Path, mqtt: str, *, venue: str, interval: str, rules: FillRules | None = None,
             extra: tuple[str, ...] = (), name: str = "exchange", env: dict[str, str] | None = None,
             port: int = 0) -> tuple[Proc, int]:
    """The exchange simulator on FIX ``port`` (0: a free one), fed by MQTT, filling with ``rules`` (given as
    a ``--rules`` JSON file; None: the simulator's defaults); returns it and its FIX port."""
    if rules is not None:
        extra = ("--rules", str(write_rules(folder / f"{name}-rules.json", rules)), *extra)
    p = Proc(name, ["-m", "tradeloop.brokers.exchange", "--port", str(port), "--state", str(folder / "exchange.sqlite"),
                    "--mqtt", mqtt, "--venue", venue, "--interval", interval, "--log-json", *extra], folder, env)
    return p, int(p.line()["fix_port"])


def live(folder: Path, args: list[str], *, name: str = "live") -> Proc:
    """``tradeloop live ...``, returned once it printed its ready line (logged on, subscribed)."""
    p = Proc(name, ["-m", "tradeloop", "live", *args, "--log-json", "--quiet"], folder)
    ready = p.line(60)
    assert ready["event"] == "ready", ready
    p.ready = ready
    return p


def replay(folder: Path, args: list[str], *, name: str = "replay") -> Proc:
    return Proc(name, ["-m", "tradeloop", "replay", *args], folder)


def wait_until(predicate, timeout: float = 30.0, what: str = "condition", every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
