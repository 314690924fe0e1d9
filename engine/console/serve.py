"""The console process: ``python -m tradeloop.engine.console`` / ``tradeloop console --state FILE --bind HOST:PORT``.

Binds to loopback by default; a non-loopback address without ``--tls-cert``/``--tls-key`` is refused.
Prints exactly one line, ``console listening on http(s)://HOST:PORT``, once it accepts connections, and
exits 0 on SIGTERM/SIGINT. A user's mistake (bad flag, missing file, a users file others can read) is one
line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import ssl
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from tradeloop.errors import ConfigError

DEFAULT_BIND = "127.0.0.1:8080"
LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Bind:
    """Where to listen: a host (name or address) and a port (0: any free one)."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host.lower() in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def url(self, port: int, tls: bool) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if tls else 'http'}://{host}:{port}"


def parse_bind(text: str) -> Bind:
    """``HOST:PORT`` or ``[V6]:PORT``; ConfigError names the flag."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--bind {text!r}: expected HOST:PORT, e.g. {DEFAULT_BIND}")
    return Bind(host, int(port))


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit 2 (as the tradeloop command line)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The console's flags (shared by ``tradeloop console`` and ``python -m tradeloop.engine.console``)."""
    p.add_argument("--state", metavar="FILE", help="the running session's state file (live.state / live.sqlite)")
    p.add_argument("--bind", default=DEFAULT_BIND, metavar="HOST:PORT",
                   help=f"where to listen (default {DEFAULT_BIND}; beyond loopback needs --tls-cert/--tls-key)")
    p.add_argument("--tls-cert", metavar="FILE", help="TLS certificate chain (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="TLS private key (PEM, mode 0600)")
    p.add_argument("--users", metavar="FILE", help="users file (mode 0600): NAME ROLE scrypt-hash lines")
    p.add_argument("--add-user", metavar="NAME:ROLE",
                   help="add NAME (viewer or trader) to --users FILE with a password read from stdin, then exit")
    p.add_argument("--session-hours", type=float, default=8.0, metavar="H", help="a login lasts H hours (default 8)")
    p.add_argument("--idle-minutes", type=float, default=30.0, metavar="M",
                   help="a login ends after M minutes without a request (default 30)")
    p.add_argument("--header-timeout-s", type=float, default=5.0, metavar="S",
                   help="close a connection whose request line and headers take longer than S seconds (default 5)")
    p.add_argument("--log-json", action="store_true", help="log JSON lines on stderr")


def build_parser(prog: str = "python -m tradeloop.engine.console") -> argparse.ArgumentParser:
    p = Parser(prog=prog, description="The tradeloop operator console: a web page over a session's state file.")
    add_arguments(p)
    return p


def run(a: argparse.Namespace) -> int:
    """Serve the console until SIGTERM/SIGINT (0), or add a user; ConfigError for a user's mistake."""
    from tradeloop.engine.console.auth import Sessions, Users, add_user, check_private
    from tradeloop.engine.telemetry.logs import configure
    configure(json=a.log_json)
    if a.add_user:
        return _add_user(a, add_user)
    if not a.state:
        raise ConfigError("give --state FILE: the running session's state file")
    state = Path(a.state)
    if not state.is_file():
        raise ConfigError(f"--state {state}: no such file (start the session first; it creates its state file)")
    for flag, value in (("--session-hours", a.session_hours), ("--idle-minutes", a.idle_minutes),
                        ("--header-timeout-s", a.header_timeout_s)):
        if not 0 < value < 1e6:
            raise ConfigError(f"{flag} {value:g}: must be positive")
    bind = parse_bind(a.bind)
    if bool(a.tls_cert) != bool(a.tls_key):
        raise ConfigError("give both --tls-cert and --tls-key (or neither)")
    tls = bool(a.tls_cert)
    if not bind.loopback and not tls:
        raise ConfigError(f"--bind {a.bind} is not a loopback address: serving the console beyond this machine "
                          "needs TLS (--tls-cert FILE --tls-key FILE)")
    if tls:
        check_private(Path(a.tls_key), "--tls-key")
        _check_tls(a.tls_cert, a.tls_key)
    users = Users.load(os.environ, a.users)
    sessions = Sessions(max_age_s=a.session_hours * 3600.0, idle_s=a.idle_minutes * 60.0)
    sock = _listen(bind)
    return asyncio.run(_serve(sock, bind, tls, a, state, users, sessions))


def _add_user(a: argparse.Namespace, add_user: Any) -> int:
    if not a.users:
        raise ConfigError("--add-user needs --users FILE")
    name, sep, role = a.add_user.partition(":")
    if not sep:
        raise ConfigError(f"--add-user {a.add_user!r}: expected NAME:ROLE (viewer or trader)")
    if sys.stdin.isatty():
        import getpass
        secret = getpass.getpass(f"password for {name}: ")
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    add_user(Path(a.users), name, role, secret)
    print(f"added {name} ({role}) to {a.users}")
    return 0


def _check_tls(cert: str, key: str) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"--tls-cert {cert} / --tls-key {key}: cannot load them ({e})") from None


def _listen(bind: Bind) -> socket.socket:
    try:
        infos = socket.getaddrinfo(bind.host, bind.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        raise ConfigError(f"--bind {bind.host}:{bind.port}: cannot listen there ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def _allowed_hosts(bind: Bind) -> frozenset[str] | None:
    """Host names a loopback console answers to (DNS rebinding guard); None beyond loopback (any Host)."""
    if not bind.loopback:
        return None
    names = {bind.host.lower(), "localhost", "127.0.0.1", "[::1]"}
    if ":" in bind.host:
        names.add(f"[{bind.host.lower()}]")
    return frozenset(names)


async def _serve(sock: socket.socket, bind: Bind, tls: bool, a: argparse.Namespace, state: Path, users: Any,
                 sessions: Any) -> int:
    import structlog
    import uvicorn

    from tradeloop.engine.console.app import MAX_BODY, Console, Guard, build_app
    from tradeloop.models.serve.head_deadline import head_deadline

    console = Console(state=state, users=users, sessions=sessions, tls=tls)
    app = Guard(build_app(console), tls=tls, hosts=_allowed_hosts(bind))
    config = uvicorn.Config(app, log_config=None, access_log=False, server_header=False, date_header=True,
                            ssl_certfile=a.tls_cert, ssl_keyfile=a.tls_key, timeout_keep_alive=5,
                            timeout_graceful_shutdown=3, limit_concurrency=200, lifespan="on",
                            h11_max_incomplete_event_size=MAX_BODY, ws="none",
                            http=head_deadline(a.header_timeout_s),   # slowloris: heads within S seconds
                            proxy_headers=False)   # no X-Forwarded-For: the client address is the socket's
    server = _make_server(config, console)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            raise ConfigError(f"the console could not start on {bind.host}:{bind.port} (see the log above)")
        await asyncio.sleep(0.01)
    url = bind.url(sock.getsockname()[1], tls)
    print(f"console listening on {url}", flush=True)
    structlog.get_logger("tradeloop.console").info("console.listening", url=url, state=str(state))
    await task
    structlog.get_logger("tradeloop.console").info("console.stopped")
    return 0


def _make_server(config: Any, console: Any) -> Any:
    """uvicorn's server, stopping on SIGTERM/SIGINT with exit status 0 (plain uvicorn re-raises the signal)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()

            def stop(*_: object) -> None:
                self.should_exit = True
                loop.call_soon_threadsafe(console.stopping.set)

            old = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)

    return Server(config)


def main(argv: Sequence[str] | None = None, prog: str = "python -m tradeloop.engine.console") -> int:
    """Entry point: parse, run, one-line errors with exit 2."""
    parser = build_parser(prog)
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    try:
        return run(a)
    except ConfigError as e:
        print(f"tradeloop console: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
