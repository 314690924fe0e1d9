"""structlog set-up: key=value lines for people, JSON lines for live deployments, and a per-run events.jsonl."""
from __future__ import annotations

import contextlib
import contextvars
import json as _json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import structlog

from tradeloop.data.redact import redact_secrets

EVENTS_FILE = "events.jsonl"


def _stderr_logger(*args: Any) -> structlog.PrintLogger:
    """A logger on the current ``sys.stderr`` (looked up per logger, so a swapped or closed stream is never kept)."""
    return structlog.PrintLogger(sys.stderr)


_QUIET = False   # --quiet: the console shows errors only; run event files still record everything


def configure(json: bool = False, level: str = "info", quiet: bool = False) -> None:
    """Configure structlog once for this process (console renderer or JSON lines on stderr).

    ``quiet``: only error and critical events reach the console (``--quiet``); the run sinks
    (events.jsonl) still get every event of ``level`` and above."""
    global _QUIET
    _QUIET = quiet
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,  # exc_info= becomes the traceback text, in every sink
            redact_secrets,  # before any sink: passwords never reach a console, a file or JSON
            _tee,
            _console_gate,
            *(() if json else (human_dates,)),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


_NS_MIN, _NS_MAX = 3 * 10**17, 4_102_444_800 * 10**9   # 1979 .. 2100: an int in there under a stamp key is ns


def _is_stamp_key(key: str) -> bool:
    return key in ("ts", "time_ns") or key.endswith(("_ts", "_ns")) or key.startswith("ts_")


def human_dates(logger: object, method: str, event_dict: dict) -> dict:
    """structlog processor of the console (key=value) renderer only: nanosecond stamps (``ts``, ``*_ts``,
    ``*_ns``) read as UTC dates; the JSON renderer and events.jsonl keep the numbers."""
    from tradeloop.engine.telemetry.tables import ns_date
    for key, value in event_dict.items():
        if (isinstance(value, int) and not isinstance(value, bool) and _NS_MIN <= value <= _NS_MAX
                and _is_stamp_key(str(key))):
            event_dict[key] = ns_date(value, "T")
    return event_dict


# ------------------------------------------------------------------------ run event file sink
# The event files of the runs active in this context (thread or task): runs on threads of one
# process (Dask with processes=False, a caller's own thread pool) each record only their own
# events. Threads a run starts for its own work get its context through ``tradeloop.models.batching``.
_SINKS: contextvars.ContextVar[tuple[IO[str], ...]] = contextvars.ContextVar("tradeloop_run_sinks", default=())
# True inside console_muted(): events still reach the run sinks (events.jsonl), not the console
_MUTED: contextvars.ContextVar[bool] = contextvars.ContextVar("tradeloop_console_muted", default=False)


def _tee(logger: object, method: str, event_dict: dict) -> dict:
    """structlog processor: copy the event as one JSON line to every run sink active in this context."""
    sinks = _SINKS.get()
    if sinks:
        line = _json.dumps(event_dict, default=str, ensure_ascii=False) + "\n"
        for sink in sinks:
            sink.write(line)
    return event_dict


def _console_gate(logger: object, method: str, event_dict: dict) -> dict:
    """structlog processor after the tee: drop the event before the console renderer inside console_muted()."""
    if _MUTED.get() or (_QUIET and event_dict.get("level") not in ("error", "critical", "exception")):
        raise structlog.DropEvent
    return event_dict


@contextlib.contextmanager
def console_muted() -> Iterator[None]:
    """Inside the block log events go to the active run sinks (events.jsonl) only, not to the console:
    a failed run records its traceback and writes its folder while the console shows one line."""
    token = _MUTED.set(True)
    try:
        yield
    finally:
        _MUTED.reset(token)


def _ensure_tee() -> None:
    """Put the tee and the console gate just before the renderer of the current structlog chain (once)."""
    processors = list(structlog.get_config()["processors"])
    changed = False
    for proc in (_tee, _console_gate):
        if proc not in processors:
            processors.insert(max(len(processors) - 1, 0), proc)
            changed = True
    if changed:
        structlog.configure(processors=processors)


@contextlib.contextmanager
def run_events() -> Iterator["RunEvents"]:
    """Record every log event emitted inside the block; ``.save(path)`` (inside it) writes them as JSON lines."""
    _ensure_tee()
    events = RunEvents()
    token = _SINKS.set((*_SINKS.get(), events.buffer))
    try:
        yield events
    finally:
        _SINKS.reset(token)
        events.buffer.close()


class RunEvents:
    """The JSON lines of one run's log events, spooled to a temporary file until the run folder exists."""

    def __init__(self) -> None:
        self.buffer = tempfile.TemporaryFile("w+", encoding="utf-8")

    def save(self, path: Path) -> Path:
        """Copy the events recorded so far to ``path`` (e.g. ``runs/<id>/events.jsonl``)."""
        self.buffer.flush()
        self.buffer.seek(0)
        with open(path, "w", encoding="utf-8") as out:
            shutil.copyfileobj(self.buffer, out)
        self.buffer.seek(0, 2)
        return path
