"""A real Mosquitto broker on a free loopback port for the MQTT tests.

Import the fixture into a test module (``from tests.mosquitto import mosquitto``). Tests are
skipped, with the reason, only where no ``mosquitto`` binary is installed
(Debian: ``apt-get install mosquitto``).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)
START_TIMEOUT = 5.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Mosquitto:
    """One broker process: ``start``, ``stop``, ``kill`` (SIGKILL) and ``start`` again on the same port."""

    def __init__(self, directory: Path, extra_conf: str = "", port: int | None = None) -> None:
        if MOSQUITTO is None:
            pytest.skip("the mosquitto binary is not installed (Debian: apt-get install mosquitto)")
        self.dir = directory
        self.port = port or free_port()
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 "set_tcp_nodelay true", f"log_dest file {self.log}"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("user root")  # as root, mosquitto would otherwise drop to a user that cannot read tmp files
        self.conf.write_text("\n".join(lines) + "\n" + extra_conf)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        """Start the broker and wait until it accepts connections."""
        assert self.proc is None, "already running"
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while time.monotonic() < deadline and self.proc.poll() is None and not listening(self.port):
                time.sleep(0.02)
            if self.proc.poll() is None and listening(self.port):
                return self
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            if time.monotonic() >= deadline:  # e.g. the port is still held: give up with the broker's own log
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{log[-2000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the broker (clients see the connection drop) and wait for it to go."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None

    def stop(self) -> None:
        """Stop the broker politely (SIGTERM), killing it if it lingers."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running anonymous broker on a free loopback port, stopped after the test."""
    broker = Mosquitto(tmp_path).start()
    try:
        yield broker
    finally:
        broker.stop()
