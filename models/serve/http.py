"""The HTTP/JSON side of the prediction server (Litestar on uvicorn, in the server's event loop).

=======================================  ===========================================================
GET  /healthz                            liveness: 200 while the process serves
GET  /readyz                             readiness: 200 once every model is loaded and warmed up, else 503
GET  /metrics                            Prometheus text (metrics.py)
GET  /v1/models                          what is served: version in service, backup, previous, input shape
POST /v1/models/{name}/predict           ``{"windows": [[[...]]], "exact": false}`` -> ``{"outputs": ...}``
POST /admin/models/{name}/swap           ``{"version": "v0002"}``: load beside, warm, switch between batches
POST /admin/models/{name}/rollback       back to the version before the last swap
=======================================  ===========================================================

Admin calls need ``Authorization: Bearer $TRADELOOP_SERVE_TOKEN`` (read from the server's
environment; without it admin is disabled) and come from a loopback address only. Request bodies
are bounded by the server's ``max_frame``. Predictions go through the same batchers as the binary
protocol, so JSON clients count towards batching and every metric. This module is imported only
when the server is asked for HTTP (Litestar and uvicorn: the ``web`` extra).
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import socket
from contextlib import nullcontext
from typing import Any

import msgspec
import numpy as np
from litestar import Litestar, Request, Response, get, post
from litestar.params import FromPath

from tradeloop.models.errors import ModelError
from tradeloop.models.serve import protocol as P
from tradeloop.models.serve.metrics import CONTENT_TYPE

TOKEN_ENV = "TRADELOOP_SERVE_TOKEN"
_STATUS = {P.BAD_REQUEST: 400, P.BAD_SHAPE: 400, P.BAD_DTYPE: 400, P.UNKNOWN_MODEL: 404, P.TOO_LARGE: 413,
           P.NOT_READY: 503, P.OVERLOADED: 503, P.INTERNAL: 500}


class PredictBody(msgspec.Struct, forbid_unknown_fields=True):
    """A JSON prediction request."""

    windows: list[list[list[float]]]
    exact: bool = False


class SwapBody(msgspec.Struct, forbid_unknown_fields=True):
    """A hot-swap request: the registry version to serve."""

    version: str


def token() -> str | None:
    """The admin token from the environment (``TRADELOOP_SERVE_TOKEN``), or None: admin disabled."""
    t = os.environ.get(TOKEN_ENV, "").strip()
    return t or None


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(server: Any) -> Any:
    """The Litestar application over ``server`` (a PredictionServer)."""
    def error(code: str, message: str) -> Response:
        return Response({"code": code, "message": message}, status_code=_STATUS.get(code, 400))

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @get("/readyz", sync_to_thread=False)
    def readyz() -> Response:
        body = {"ready": server.ready, "models": server.describe()}
        return Response(body, status_code=200 if server.ready else 503)

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response:
        return Response(server.metrics_text(), media_type=CONTENT_TYPE)

    @get("/v1/models", sync_to_thread=False)
    def models() -> dict[str, Any]:
        return server.describe()

    @post("/v1/models/{name:str}/predict")
    async def predict(name: FromPath[str], request: Request) -> Response:
        try:
            body = msgspec.json.decode(await request.body(), type=PredictBody)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            server.count_error(name, P.BAD_REQUEST)
            return error(P.BAD_REQUEST, f"body: {e}")
        try:
            try:
                windows = np.asarray(body.windows, dtype=np.float32) if body.windows else np.zeros((0,), np.float32)
            except ValueError:   # ragged lists
                raise P.ProtocolError(P.BAD_SHAPE, "windows are ragged: every window must have the same shape") \
                    from None
            slot = server.slots.get(name)
            if slot is None:
                raise P.ProtocolError(P.NOT_READY if not server.ready else P.UNKNOWN_MODEL,
                                      "models are still loading" if not server.ready else
                                      f"no model {name!r} is served here (served: {', '.join(sorted(server.slots))})")
            if windows.ndim != 1 + len(slot.shape) or windows.shape[1:] != slot.shape or len(windows) < 1:
                raise P.ProtocolError(P.BAD_SHAPE, f"windows of shape {list(windows.shape)} do not fit the model: "
                                                   f"it takes [batch, {', '.join(map(str, slot.shape))}]")
            if len(windows) > server.config.max_request_windows:
                raise P.ProtocolError(P.TOO_LARGE, f"batch of {len(windows)} exceeds the limit of "
                                                   f"{server.config.max_request_windows} per request")
            if not np.isfinite(windows).all():
                raise P.ProtocolError(P.BAD_REQUEST, "windows hold NaN or infinite values")
            server.http_clients += 1
            try:
                ans = await server.predict(name, windows, body.exact)
            finally:
                server.http_clients -= 1
        except P.ProtocolError as e:
            server.count_error(name, e.code)
            return error(e.code, str(e))
        return Response({"model": name, "version": ans.version, "backup": ans.backup,
                         "outputs": ans.outputs.tolist()}, status_code=200)

    def admin_refusal(request: Request) -> Response | None:
        client = request.client.host if request.client else None
        if not _loopback(client):
            return Response({"code": "forbidden", "message": "admin calls are accepted from loopback only"},
                            status_code=403)
        want = token()
        if want is None:
            return Response({"code": "forbidden", "message": f"admin is disabled: {TOKEN_ENV} is not set"},
                            status_code=403)
        got = request.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {want}".encode()):
            return Response({"code": "unauthorized", "message": "missing or wrong bearer token"}, status_code=401)
        return None

    @post("/admin/models/{name:str}/swap")
    async def swap(name: FromPath[str], request: Request) -> Response:
        refused = admin_refusal(request)
        if refused is not None:
            return refused
        try:
            body = msgspec.json.decode(await request.body(), type=SwapBody)
            old, new = await server.swap(name, body.version)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return error(P.BAD_REQUEST, f"body: {e}")
        except ModelError as e:
            return error(P.BAD_REQUEST, str(e))
        return Response({"model": name, "from": old, "to": new}, status_code=200)

    @post("/admin/models/{name:str}/rollback")
    async def rollback(name: FromPath[str], request: Request) -> Response:
        refused = admin_refusal(request)
        if refused is not None:
            return refused
        try:
            old, new = await server.rollback(name)
        except ModelError as e:
            return error(P.BAD_REQUEST, str(e))
        return Response({"model": name, "from": old, "to": new}, status_code=200)

    return Litestar([healthz, readyz, metrics, models, predict, swap, rollback],
                    request_max_body_size=server.config.max_frame, debug=False, logging_config=None)


async def start_http(server: Any, host: str, port: int) -> tuple[Any, asyncio.Task, int]:
    """Serve ``build_app(server)`` with uvicorn on the running loop; (uvicorn server, task, port).
    A request head must arrive within ``header_timeout_s`` (head_deadline.py)."""
    import uvicorn

    from tradeloop.models.serve.head_deadline import head_deadline

    class Embedded(uvicorn.Server):
        def capture_signals(self) -> Any:   # the prediction server owns the process's signals
            return nullcontext()

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(build_app(server), log_level="warning", access_log=False, lifespan="off",
                            http=head_deadline(server.config.header_timeout_s),
                            timeout_keep_alive=5, timeout_graceful_shutdown=2,
                            limit_concurrency=server.config.max_connections,
                            h11_max_incomplete_event_size=16 * 1024)
    http = Embedded(config)
    task = asyncio.get_running_loop().create_task(http.serve(sockets=[sock]), name="serve-http")
    while not http.started:
        if task.done():
            task.result()
            raise ModelError(f"HTTP server on {host}:{port} did not start")
        await asyncio.sleep(0.01)
    return http, task, sock.getsockname()[1]
