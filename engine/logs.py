"""structlog set-up: key=value lines for people, JSON lines for live deployments."""
from __future__ import annotations

import logging
import sys

import structlog


def configure(json: bool = False, level: str = "info") -> None:
    """Configure structlog once for this process (console renderer or JSON lines on stderr)."""
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
