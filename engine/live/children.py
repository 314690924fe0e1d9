"""Processes a live or paper session starts: how they are stopped and their ready line read, and the console.

:func:`stop_process` and :func:`readline_within` serve every child (Mosquitto and the exchange simulator of a
paper session, the console). The operator console runs as a child of the session (``--console HOST:PORT``).

The console is its own process (``python -m tradeloop.engine.console``, engine/console/): it reads and
writes only the session's state file, so a slow browser or a hostile client can never stall the engine.
The session starts it with the environment it was given (the console's tokens come from there or from
a 0600 users file, never from the command line), waits for its one ready line
``console listening on URL``, and stops it (SIGTERM) when the session ends.
"""
from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

from tradeloop.errors import ConfigError

READY = "console listening on "


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) of ``live.console``; ConfigError naming the key when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"live.console: expected HOST:PORT (e.g. 127.0.0.1:8080), got {text!r}")
    return host.strip("[]"), int(port)


def console_command(state: str, bind: str) -> list[str]:
    """The console's command line: the state file and the address, nothing secret."""
    return [sys.executable, "-m", "tradeloop.engine.console", "--state", str(state), "--bind", bind]


class ConsoleProcess:
    """A running console; ``url`` once it said it listens. Its stderr goes to ``log_path``."""

    def __init__(self, state: str, bind: str, *, timeout_s: float = 30.0) -> None:
        parse_bind(bind)
        self.log_path = Path(f"{state}.console.log")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - open as long as the process runs
        self.proc = subprocess.Popen(console_command(state, bind), stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, env=dict(os.environ))
        self.url = self._wait_ready(bind, timeout_s)

    def _wait_ready(self, bind: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            line = readline_within(self.proc, left)
            if line is None:
                break
            line = line.strip()
            if not line:   # it exited
                code = self.proc.wait()
                self.stop()
                raise ConfigError(f"live.console {bind}: the console exited with status {code} before listening"
                                  f"{self._last_error()} (its log: {self.log_path})")
            if line.startswith(READY):
                return line[len(READY):].strip()
        self.stop()
        raise ConfigError(f"live.console {bind}: the console did not say it listens within {timeout_s:g} s"
                          f"{self._last_error()} (its log: {self.log_path})")

    def _last_error(self) -> str:
        try:
            lines = [x for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]
        except OSError:
            return ""
        return f": {lines[-1][:300]}" if lines else ""

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``grace_s``; its exit status."""
        stop_process(self.proc, grace_s)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM (a clean logout / shutdown), then SIGKILL if it is still there after ``grace_s``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def readline_within(proc: subprocess.Popen, timeout_s: float) -> str | None:
    """The next line of ``proc``'s stdout, or None when none comes within ``timeout_s`` ("" once it exited)."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return None
        return proc.stdout.readline().decode(errors="replace")
