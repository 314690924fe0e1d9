"""Log redaction shared by every part that handles secrets (MQTT and FIX passwords).

:func:`register_secret` records a secret the moment it is read; :func:`redact_secrets`, a
structlog processor that ``tradeloop.engine.telemetry.logs.configure`` always installs before any sink or renderer,
replaces every registered secret and every secret-named key in every log event with ``***``.
The registry is process-wide on purpose: a secret read anywhere must be hidden everywhere.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

REDACTED = "***"
SECRET_KEYS = frozenset({"password", "passwd", "secret"})
_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Have every later log event carry ``***`` in place of ``value``."""
    if value:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, REDACTED)
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if str(k).lower() in SECRET_KEYS else _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_clean(v) for v in value)
    text = repr(value) if isinstance(value, BaseException) else str(value)
    return redact(text) if any(s in text for s in _SECRETS) else value


def redact_secrets(logger: object, method: str, event_dict: dict) -> dict:
    """structlog processor: mask secret-named keys and every registered secret value."""
    if not _SECRETS:
        return {k: REDACTED if k.lower() in SECRET_KEYS else v for k, v in event_dict.items()}
    return {k: REDACTED if k.lower() in SECRET_KEYS else _clean(v) for k, v in event_dict.items()}


def install_redaction() -> None:
    """Put :func:`redact_secrets` into the current structlog chain, before any sink and the renderer (idempotent)."""
    processors = list(structlog.get_config()["processors"])
    if redact_secrets in processors:
        return
    at = next((i for i, p in enumerate(processors) if getattr(p, "__name__", "") == "_tee"), max(len(processors) - 1, 0))
    processors.insert(at, redact_secrets)
    structlog.configure(processors=processors)
