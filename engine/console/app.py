"""The console's HTTP side (Litestar): login, the page, the live stream and the one action endpoint.

Every state-changing request (POST) must come from the console's own origin (Origin, or Referer when a
browser sends no Origin) and, once logged in, carry the session's CSRF token (header ``X-CSRF-Token`` or
form field ``csrf``); actions also need the trader role. Actions go through
``tradeloop.risk.control.Operator`` (the CLI's command path) in a worker thread, one state-file
connection per action, and answer with its ``ActionResult`` (HTTP 200 when it applied, 409 when not).
"""
from __future__ import annotations

import asyncio
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, AsyncIterator, Literal

import msgspec
import structlog
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.response import Redirect, ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from tradeloop.engine.console.auth import LoginLimiter, Session, Sessions, Users, same_secret
from tradeloop.engine.console.feed import Feed
from tradeloop.engine.console.page import CSS, console_page, login_page
from tradeloop.engine.console.script import SCRIPT
from tradeloop.risk.store import ControlStore, StoreError

COOKIE = "tl_console"
MAX_BODY = 16 * 1024
MAX_HEADERS = 16 * 1024
BODY_TIMEOUT_S = 5.0    # a request body must arrive within this
KEEPALIVE_S = 15.0

Text = Annotated[str, msgspec.Meta(max_length=500)]
Ident = Annotated[str, msgspec.Meta(max_length=64)]


class ActionRequest(msgspec.Struct, forbid_unknown_fields=True):
    """One operator action from the page: what, on which order or symbol, why; ``confirm`` must be KILL for kill."""

    action: Literal["approve", "reject", "halt", "resume", "reset_drawdown", "cancel", "kill"]
    order_id: Ident = ""
    symbol: Ident = ""
    note: Text = ""
    confirm: Ident = ""


@dataclass
class Console:
    """Everything one console serves: the state file, its users, sessions, login limits and the live feed."""

    state: Path
    users: Users
    sessions: Sessions
    tls: bool = False
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    feed: Feed = field(init=False)

    def __post_init__(self) -> None:
        self.feed = Feed(self.state)


def _console(request: Request) -> Console:
    return request.app.state.console


def _json(status: int, ok: bool, message: str) -> Response:
    return Response({"ok": ok, "message": message}, status_code=status, media_type="application/json")


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def same_origin(request: Request, tls: bool) -> bool:
    """Whether a state-changing request comes from this console's own pages: its Origin (or, without one,
    its Referer) is this server's scheme://host[:port]. No header at all is refused."""
    host = request.headers.get("host", "")
    expected = f"{'https' if tls else 'http'}://{host}"
    origin = request.headers.get("origin")
    if origin is not None:
        return bool(host) and origin == expected
    referer = request.headers.get("referer")
    return bool(host and referer) and (referer == expected or referer.startswith(expected + "/"))


def _session(request: Request, *, touch: bool = True) -> Session | None:
    return _console(request).sessions.get(request.cookies.get(COOKIE), touch=touch)


async def _read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (at most 8 fields: more is treated as no form at all)."""
    body = await request.body()
    try:
        pairs = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=8)
    except ValueError:
        return {}
    return {k: v[0] for k, v in pairs.items()}


# ------------------------------------------------------------------------------------ pages
@get("/", sync_to_thread=False)
def index(request: Request) -> Response:
    """The console page for a logged-in user; otherwise to the login form."""
    s = _session(request)
    if s is None:
        return Redirect("/login", status_code=303)
    return Response(console_page(s.user.name, s.user.role, s.csrf), media_type="text/html")


@get("/login", sync_to_thread=False)
def login_form(request: Request) -> Response:
    return Response(login_page(), media_type="text/html")


@get("/console.js", sync_to_thread=False)
def script() -> Response:
    return Response(SCRIPT, media_type="text/javascript")


@get("/console.css", sync_to_thread=False)
def style() -> Response:
    return Response(CSS, media_type="text/css")


@get("/favicon.ico", sync_to_thread=False)
def favicon() -> Response:
    return Response(b"", status_code=204)


@post("/login", status_code=303)
async def login(request: Request) -> Response:
    """Check the credentials (rate-limited per client), start a session and set its cookie."""
    c, log = _console(request), structlog.get_logger("tradeloop.console")
    client = _client(request)
    if not same_origin(request, c.tls):
        return Response(login_page("cross-origin login refused"), status_code=403, media_type="text/html")
    wait = c.limiter.retry_after(client)
    if wait > 0:
        log.warning("console.login_limited", client=client)
        return Response(login_page(f"too many failed logins; try again in {wait:.0f} s"), status_code=429,
                        media_type="text/html", headers={"Retry-After": str(int(wait) + 1)})
    form = await _read_form(request)
    name, secret = form.get("user", "")[:64], form.get("secret", "")[:256]
    user = await asyncio.to_thread(c.users.verify, name, secret) if secret else None
    if user is None:
        c.limiter.failed(client)
        log.warning("console.login_failed", user=name, client=client)
        return Response(login_page("wrong user or password/token"), status_code=401, media_type="text/html")
    sid, _ = c.sessions.create(user)
    log.info("console.login", user=user.name, role=user.role, client=client)
    return Response("", status_code=303, headers={"Location": "/"},
                    cookies=[Cookie(key=COOKIE, value=sid, httponly=True, samesite="strict", secure=c.tls, path="/")])


@post("/logout", status_code=303)
async def logout(request: Request) -> Response:
    c = _console(request)
    s = _session(request, touch=False)
    form = await _read_form(request)
    if not same_origin(request, c.tls) or s is None or not same_secret(form.get("csrf", ""), s.csrf):
        return _json(403, False, "logout refused: not from this console's page")
    c.sessions.drop(request.cookies.get(COOKIE))
    return Response("", status_code=303, headers={"Location": "/login"},
                    cookies=[Cookie(key=COOKIE, value="", httponly=True, samesite="strict", secure=c.tls, path="/",
                                    max_age=0)])


# ------------------------------------------------------------------------------------ data
@get("/api/state", sync_to_thread=False)
def state(request: Request) -> Response:
    """Who is logged in and the latest snapshot (JSON): for scripts, and the page's session check."""
    s = _session(request)
    if s is None:
        return _json(401, False, "not logged in (or the session expired)")
    feed = _console(request).feed
    return Response({"user": s.user.name, "role": s.user.role, "snapshot": feed.snapshot, "error": feed.error,
                     "last_event_id": feed.last_id}, media_type="application/json")


@get("/events")
async def events(request: Request) -> Response:
    """Server-sent events: the state so far, then every update, until the session ends or the page falls behind."""
    s = _session(request, touch=False)
    if s is None:
        return _json(401, False, "not logged in (or the session expired)")
    c = _console(request)
    return ServerSentEvent(_stream(c, s), headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _stream(c: Console, s: Session) -> AsyncIterator[ServerSentEventMessage]:
    sub, first = c.feed.subscribe()
    try:
        yield ServerSentEventMessage(data=first.decode(), retry=1000)
        idle = 0.0
        while not (c.stopping.is_set() or sub.dropped) and c.sessions.alive(s):
            try:
                msg = await asyncio.wait_for(sub.queue.get(), 1.0)
            except TimeoutError:
                idle += 1.0
                if idle >= KEEPALIVE_S:
                    idle = 0.0
                    yield ServerSentEventMessage(comment="keep-alive")
                continue
            idle = 0.0
            yield ServerSentEventMessage(data=msg.decode())
    finally:
        c.feed.unsubscribe(sub)


# ------------------------------------------------------------------------------------ actions
@post("/api/action")
async def action(request: Request) -> Response:
    """One operator action, checked (origin, session, CSRF token, role, body) and passed to Operator."""
    c, log = _console(request), structlog.get_logger("tradeloop.console")
    if not same_origin(request, c.tls):
        log.warning("console.refused", why="origin", client=_client(request), origin=request.headers.get("origin"))
        return _json(403, False, "refused: the request does not come from this console's page (Origin/Referer)")
    s = _session(request)
    if s is None:
        return _json(401, False, "not logged in (or the session expired)")
    if not same_secret(request.headers.get("x-csrf-token", ""), s.csrf):
        log.warning("console.refused", why="csrf", user=s.user.name, client=_client(request))
        return _json(403, False, "refused: missing or wrong CSRF token (reload the page)")
    if s.user.role != "trader":
        log.warning("console.refused", why="role", user=s.user.name, client=_client(request))
        return _json(403, False, f"refused: {s.user.name} is a viewer; only a trader may act")
    try:
        req = msgspec.json.decode(await request.body(), type=ActionRequest)
    except msgspec.ValidationError as e:
        return _json(400, False, f"bad action: {e}")
    except msgspec.DecodeError:
        return _json(400, False, "bad action: the body is not JSON")
    problem = _check(req)
    if problem:
        return _json(400, False, problem)
    try:
        ok, message = await asyncio.to_thread(run_action, c.state, s.user.name, req)
    except (StoreError, sqlite3.Error) as e:   # an unusable state file (or one locked past its busy timeout)
        log.error("console.action_failed", user=s.user.name, action=req.action, error=str(e))
        return _json(503, False, str(e))
    log.info("console.action", user=s.user.name, action=req.action, order_id=req.order_id, symbol=req.symbol,
             ok=ok, message=message)
    return _json(200 if ok else 409, ok, message)


def _check(req: ActionRequest) -> str:
    if req.action in ("approve", "reject", "cancel") and not req.order_id:
        return f"bad action: {req.action} needs an order_id"
    if req.action == "kill" and req.confirm != "KILL":
        return "bad action: the kill switch needs confirm: \"KILL\" (the second, explicit step)"
    return ""


def run_action(state: Path, who: str, req: ActionRequest) -> tuple[bool, str]:
    """Apply one action through the operator command path (risk/control.py); (ok, message)."""
    from tradeloop.risk.control import Operator
    store = ControlStore(state, create=False)
    try:
        op = Operator(store, who=who)
        symbol = req.symbol or None
        if req.action == "approve":
            r = op.approve(req.order_id, note=req.note)
        elif req.action == "reject":
            r = op.reject(req.order_id, note=req.note)
        elif req.action == "halt":
            r = op.halt(symbol, reason=req.note)
        elif req.action == "resume":
            r = op.resume(symbol)
        elif req.action == "reset_drawdown":
            r = op.reset_drawdown()
        elif req.action == "cancel":
            r = op.cancel(req.order_id)
        else:
            r = op.kill(reason=req.note)
        return bool(r.ok), str(r.message)
    finally:
        store.close()


def build_app(console: Console) -> Litestar:
    """The Litestar app of one console (bounded request bodies; its feed runs while the app is up)."""
    async def start() -> None:
        console.feed.start()

    async def stop() -> None:
        console.stopping.set()
        await asyncio.to_thread(console.feed.stop)

    async def failed(exc: Exception, scope: Any) -> None:   # a bug, not a client's mistake: logged, answered 500
        if getattr(exc, "status_code", 500) >= 500:
            structlog.get_logger("tradeloop.console").error("console.error", path=scope.get("path"), exc_info=exc)

    app = Litestar([index, login_form, script, style, favicon, login, logout, state, events, action],
                   on_startup=[start], on_shutdown=[stop], after_exception=[failed], request_max_body_size=MAX_BODY,
                   debug=False,
                   logging_config=None, openapi_config=None)
    app.state.console = console
    return app


# ------------------------------------------------------------------------------------ every response
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class Guard:
    """ASGI wrapper around the whole app: security headers on every response (errors too), a Host allow-list
    on loopback binds (DNS rebinding), and no caching of anything but the script and style sheet."""

    def __init__(self, app: Any, *, tls: bool, hosts: frozenset[str] | None) -> None:
        self.app, self.tls, self.hosts = app, tls, hosts

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(len(k) + len(v) for k, v in scope.get("headers", ())) > MAX_HEADERS:
            await _plain(send, 431, b"request headers too large\n", self.tls)
            return
        if self.hosts is not None:
            host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
            name = host[:host.find("]") + 1] if host.startswith("[") else host.rsplit(":", 1)[0]
            if name.lower() not in self.hosts:
                await _plain(send, 421, b"unknown Host: this console answers to its own address only\n", self.tls)
                return
        if scope.get("method") not in ("GET", "HEAD"):   # read the whole body first: bounded in size and time
            body = await _read_body(receive)
            if body is None:
                return   # the client went away
            if isinstance(body, int):
                await _plain(send, body, b"request body too large\n" if body == 413 else
                             b"request body not received in time\n", self.tls)
                return
            receive = _replay(body, receive)
        static = scope.get("path") in ("/console.js", "/console.css")

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"cache-control"]
                headers += _security_headers(self.tls, static)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _read_body(receive: Any) -> bytes | int | None:
    """The request body, or 413 (over MAX_BODY), 408 (not complete within BODY_TIMEOUT_S), None (disconnected)."""
    chunks, size = [], 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BODY_TIMEOUT_S
    while True:
        try:
            message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
        except TimeoutError:
            return 408
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return 413
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A receive() that gives the app the body already read, then waits on the connection (for a disconnect)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _security_headers(tls: bool, static: bool) -> list[tuple[bytes, bytes]]:
    out = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
           (b"cross-origin-opener-policy", b"same-origin"), (b"cross-origin-resource-policy", b"same-origin"),
           (b"cache-control", b"no-cache" if static else b"no-store")]
    if tls:
        out.append((b"strict-transport-security", b"max-age=31536000"))
    return out


async def _plain(send: Any, status: int, body: bytes, tls: bool) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *_security_headers(tls, False)]})
    await send({"type": "http.response.body", "body": body})
