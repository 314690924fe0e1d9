"""``tradeloop serve``: run the prediction service (models/serve/) as its own process.

Every argument is checked before anything listens: the registry folder, each ``--model`` and
``--backup`` reference (resolved in the registry), the runtime (available here, and the version has
its files), ``--bind``/``--http`` addresses. A mistake is one line naming the argument, exit 2.
Once listening it prints ``tradeloop serve: listening tcp://HOST:PORT [http://HOST:PORT]`` on
stdout (the ports actually bound: ``:0`` picks a free one), then loads and warms the models
(``/readyz`` turns 200) and serves until SIGINT or SIGTERM.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tradeloop.errors import ConfigError


def add_serve_parser(sub: Any) -> None:
    """Register ``serve`` on the ``tradeloop`` subcommand parser."""
    from tradeloop.models.runtime import RUNTIMES

    sp = sub.add_parser("serve", help="serve registry models over TCP (binary) and HTTP/JSON, with dynamic batching")
    sp.add_argument("--registry", required=True, metavar="DIR", help="the model registry folder")
    sp.add_argument("--model", required=True, action="append", metavar="NAME@VERSION",
                    help="a model to serve (NAME@latest, NAME@v0003); repeat for more")
    sp.add_argument("--backup", action="append", default=[], metavar="NAME@VERSION",
                    help="the backup version of the served model NAME: the health monitor switches to it "
                         "when a batch call breaches --p99-ms")
    sp.add_argument("--bind", default="127.0.0.1:7070", metavar="HOST:PORT", help="binary protocol address")
    sp.add_argument("--http", metavar="HOST:PORT", help="also serve HTTP/JSON, /healthz, /readyz, /metrics, admin")
    sp.add_argument("--runtime", default="onnx-cpu", choices=RUNTIMES,
                    help="runtime of the classifiers (default onnx-cpu); a K-line forecaster runs on torch-cuda "
                         "where CUDA is available, else torch-cpu, unless this names one of those")
    sp.add_argument("--threads", type=int, default=1, help="intra-op threads of each model call (default 1)")
    sp.add_argument("--max-batch", type=int, default=64, metavar="N", help="windows per batched model call")
    sp.add_argument("--max-delay-us", type=int, default=500, metavar="U",
                    help="how long a request may wait for others to share its batch (microseconds)")
    sp.add_argument("--no-batching", action="store_true", help="one model call per request")
    sp.add_argument("--p99-ms", type=float, default=None, metavar="MS",
                    help="health limit on the rolling p99 of batch calls (default: no limit)")
    sp.add_argument("--max-frame-bytes", type=int, default=None, metavar="B", help="largest request frame")
    sp.add_argument("--max-connections", type=int, default=512)
    sp.add_argument("--read-timeout-s", type=float, default=5.0, help="a frame's bytes must arrive within this")
    sp.add_argument("--header-timeout-s", type=float, default=5.0,
                    help="an HTTP request's line and headers must arrive within this (slowloris)")
    sp.add_argument("--idle-timeout-s", type=float, default=600.0, help="close connections idle this long")
    sp.add_argument("--log-json", action="store_true", help="JSON log lines on stderr")
    sp.set_defaults(run_command=cmd_serve)


def address(text: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) -> (host, port), or a ConfigError naming the flag."""
    host, sep, port = str(text).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{flag} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:7070")
    return host, int(port)


def config_from_args(a: argparse.Namespace) -> Any:
    """The ServeConfig of the command line, every reference checked against the registry."""
    from tradeloop.models.errors import ModelError
    from tradeloop.models.registry import Registry, parse_ref
    from tradeloop.models.serve.protocol import DEFAULT_MAX_FRAME
    from tradeloop.models.serve.server import ServeConfig
    from tradeloop.models.serve.slots import runtime_for

    if not Path(a.registry).is_dir():
        raise ConfigError(f"--registry {a.registry}: no such folder")
    reg = Registry(a.registry)

    def name_of(flag: str, ref: str) -> str:
        try:
            return parse_ref(ref)[0]
        except ModelError as e:
            raise ConfigError(f"{flag} {ref}: {e}") from None

    try:
        names = [name_of("--model", m) for m in a.model]
        backups: dict[str, str] = {}
        for b in a.backup:
            name = name_of("--backup", b)
            if name not in names:
                raise ConfigError(f"--backup {b}: {name!r} is not a served --model ({', '.join(names)})")
            backups[name] = b
        for flag, ref in [("--model", m) for m in a.model] + [("--backup", b) for b in a.backup]:
            try:
                info = reg.info(ref)
            except ModelError as e:
                raise ConfigError(f"{flag} {ref}: {e}") from None
            runtime = runtime_for(info, a.runtime)
            problems = reg.check(info, runtime)
            if problems:
                raise ConfigError(f"{flag} {ref} with --runtime {runtime}: {'; '.join(problems)}")
        host, port = address(a.bind, "--bind")
        http_host, http_port = address(a.http, "--http") if a.http else (None, 0)
        return ServeConfig(registry=a.registry, models=tuple(a.model), backups=backups, host=host, port=port,
                           http_host=http_host, http_port=http_port, runtime=a.runtime, threads=a.threads,
                           max_batch=a.max_batch, max_delay_us=a.max_delay_us, batching=not a.no_batching,
                           p99_ms=a.p99_ms if a.p99_ms is not None else 1e9,
                           max_frame=a.max_frame_bytes or DEFAULT_MAX_FRAME, max_connections=a.max_connections,
                           read_timeout_s=a.read_timeout_s, header_timeout_s=a.header_timeout_s,
                           idle_timeout_s=a.idle_timeout_s)
    except ModelError as e:   # ServeConfig's own checks (a flag below 1, a model named twice)
        raise ConfigError(str(e).replace("serve: ", "", 1)) from None


def cmd_serve(a: argparse.Namespace) -> int:
    """Check the arguments, then serve until SIGINT/SIGTERM."""
    from tradeloop.models.errors import ModelError
    from tradeloop.models.serve.server import run_server

    config = config_from_args(a)

    def listening(server: Any) -> None:
        http = f" http://{config.http_host}:{server.http_port}" if server.http_port else ""
        print(f"tradeloop serve: listening tcp://{config.host}:{server.port}{http}", flush=True)

    try:
        run_server(config, listening)
    except OSError as e:   # the address is taken, or not ours to bind
        raise ConfigError(f"--bind/--http: cannot listen: {e.strerror or e}") from None
    except ModelError as e:
        raise ConfigError(str(e)) from None
    return 0

