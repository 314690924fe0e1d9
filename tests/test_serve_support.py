"""Shared builders for the prediction-service tests (no tests here): real ``tradeloop serve`` processes.

``served(...)`` starts ``python -m tradeloop.engine.cli.main serve`` on free ports over the tiny
models of tests/test_models_support.py (v0001 and v0002 of ``tiny``), waits until it answers,
and stops it (SIGTERM, then kill) when the ``with`` block ends.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.test_models_support import trained

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Served:
    """A running server process: its ports, registry and process handle."""

    proc: subprocess.Popen
    port: int
    http_port: int | None
    registry: str

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def http(self, path: str, body: dict | None = None, token: str | None = None) -> tuple[int, str]:
        """(status, body text) of a GET (or a POST of ``body`` as JSON) to the HTTP side."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}",
                                     data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST")
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tradeloop.engine.cli.main", "serve", *args]


def start(registry: str, *args: str, http: bool = False, env: dict | None = None, wait_ready: bool = True,
          port: int = 0) -> Served:
    """Start a server over ``registry`` with ``args`` (``--model`` ...); returns once it is listening
    (and, with ``wait_ready``, answering)."""
    cmd = serve_command("--registry", registry, "--bind", f"127.0.0.1:{port}", *args,
                        *(["--http", "127.0.0.1:0"] if http else []))
    log = tempfile.TemporaryFile()   # its log, never a pipe nobody reads (a full pipe would block the server)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO,
                            env={**os.environ, **(env or {})})
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        proc.wait(5)
        log.seek(0)
        raise RuntimeError(f"server did not start: {line!r} {log.read()[-2000:].decode(errors='replace')}")
    words = line.split()
    tcp = next(w for w in words if w.startswith("tcp://"))
    web = next((w for w in words if w.startswith("http://")), None)
    served = Served(proc, int(tcp.rsplit(":", 1)[1]), int(web.rsplit(":", 1)[1]) if web else None, registry)
    if wait_ready:
        wait_until_ready(served)
    return served


def wait_until_ready(served: Served, model: str = "tiny", shape: tuple[int, ...] = (16, 16),
                     timeout: float = 60.0) -> None:
    from tradeloop.models.serve.client import ServeClient, ServerUnavailable

    c = ServeClient(served.endpoint, timeout_s=5.0)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                c.predict(model, np.zeros((1, *shape), np.float32))
                return
            except ServerUnavailable:
                if time.monotonic() > deadline or served.proc.poll() is not None:
                    raise
                time.sleep(0.05)
    finally:
        c.close()


@contextlib.contextmanager
def served(*args: str, http: bool = False, env: dict | None = None) -> Iterator[Served]:
    """A server over the tiny test models (``--model tiny@latest`` unless ``args`` name models)."""
    root, _ = trained("tiny")
    if "--model" not in args:
        args = ("--model", "tiny@latest", *args)
    s = start(root, *args, http=http, env=env)
    try:
        yield s
    finally:
        s.stop()


def tiny_windows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` random float32 windows the tiny model takes."""
    return np.random.default_rng(seed).normal(size=(n, 16, 16)).astype(np.float32)


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus exposition text -> {(name, sorted labels): value}; every line must parse (ValueError)."""
    import re

    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
    out: dict = {}
    typed: dict[str, str] = {}
    for ln in text.splitlines():
        if not ln:
            continue
        if ln.startswith("# TYPE "):
            _, _, name, kind = ln.split(" ", 3)
            if kind not in ("counter", "gauge", "histogram", "summary", "untyped"):
                raise ValueError(f"bad type line {ln!r}")
            typed[name] = kind
            continue
        if ln.startswith("#"):
            continue
        m = line_re.match(ln)
        if not m:
            raise ValueError(f"unparsable metric line {ln!r}")
        name, _, labels, value = m.groups()
        pairs = tuple(sorted(label_re.findall(labels or "")))
        if labels and ",".join(f'{k}="{v}"' for k, v, _ in label_re.findall(labels)) != labels:
            raise ValueError(f"bad labels in {ln!r}")
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in typed and base not in typed:
            raise ValueError(f"metric {name} has no TYPE line")
        out[(name, tuple((k, v) for k, v, _ in pairs))] = float(value)
    return out
