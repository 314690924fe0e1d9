"""Typed configuration tables: the ``[market]`` and ``[live]`` sections, and the parsing every section shares.

The ``[risk]`` section's types live with the risk layer (:mod:`tradeloop.risk.config`).

Tables nest (``[risk.review]``, ``[risk.halt]``, ...) and every key can be set from the command
line as ``--set risk.review.notional=1000000``. Unknown keys and values of the wrong type are
errors naming the key. A section class with ``ENABLED_BY_ANY_KEY = True`` (``[risk.halt]``) is
switched on by giving its table or any of its keys, unless that says ``enabled = false``.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from tradeloop.brokers.costs import MINIMUM, RATE
from tradeloop.errors import ConfigError, limits

FRACTION = limits(gt=0, lt=1, text="a fraction between 0 and 1")


@dataclass
class MarketSection:
    """Parameters of the market profile chosen by ``run.market`` (``cn-a``: China A-shares)."""

    lot_size: int = field(default=100, metadata=limits(ge=1))
    t_plus_1: bool = True
    tick: float = field(default=0.01, metadata=limits(gt=0))
    main_limit: float = field(default=0.10, metadata=FRACTION)
    growth_limit: float = field(default=0.20, metadata=FRACTION)   # ChiNext (from chinext_20pct_from) and STAR
    st_limit: float = field(default=0.05, metadata=FRACTION)
    chinext_20pct_from: str = "2020-08-24"
    st: list[str] = field(default_factory=list)   # symbols (or six-digit codes) under special treatment
    commission_rate: float = field(default=0.00025, metadata=RATE)
    commission_min: float = field(default=5.0, metadata=MINIMUM)
    stamp_duty: float | None = field(default=None, metadata=RATE)   # None: the official schedule by date; a number:
    transfer_fee: float = field(default=0.00001, metadata=RATE)     # that rate on sells


@dataclass
class LiveSection:
    """Live runs (``tradeloop live``): where data comes from, where orders go, where state is kept.

    ``state`` is the SQLite file (WAL) holding the journal, FIX sequence numbers, the review queue
    and operator commands. Passwords never appear here: the FIX password comes from the
    environment variable named by ``password_env`` or the 0600 file ``password_file``.
    """

    state: str | None = None
    mqtt: str | None = None                  # mqtt://host:port or mqtts://
    fix: str | None = None                   # HOST:PORT of the FIX 4.4 acceptor
    symbols: list[str] = field(default_factory=list)
    venue: str = "sim"                       # md/<venue>/... topics
    interval: str = "1d"                     # bar interval level of the topics
    sender: str = "TRADER"                   # our SenderCompID
    target: str = "EXCH"                     # the broker's CompID
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    heartbeat_s: float = field(default=30.0, metadata=limits(ge=1, le=3600))   # FIX HeartBtInt, seconds
    stale_after: float | None = field(default=None, metadata=limits(gt=0))   # seconds without data: halt the symbol
    lockstep: bool = False                   # paper/parity: step on the exchange's ack, ack each step
    ticks: bool = False                      # subscribe to ticks too (on_tick)
    # market data stamped further ahead of this machine's clock is dropped ("future"), by this runner and the
    # exchange simulator alike (data/mqtt/skew.py FutureSkew); None: 5 s for ticks, one bar interval for bars
    future_tick_s: float | None = field(default=None, metadata=limits(ge=0))
    future_bar_s: float | None = field(default=None, metadata=limits(ge=0))
    # HOST:PORT of the operator console the session starts as a child (engine/console; its secrets come from the
    # environment or a 0600 users file, never from here); None: no console
    console: str | None = None
    pace: float = field(default=0.0, metadata=limits(ge=0, le=3600))   # lockstep: wall seconds between timestamps


def _error(message: str) -> Exception:
    return ConfigError(message)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_table(cls: type, raw: Any, where: str) -> None:
    """ConfigError unless ``raw`` is a table whose keys are all fields of the section ``cls``."""
    if not isinstance(raw, dict):
        raise _error(f"{where}: expected a table, got {raw!r}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise _error(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")


def parse_section(cls: type, raw: Any, where: str) -> Any:
    """A section dataclass from a TOML/JSON table, nested tables included."""
    check_table(cls, raw, where)
    obj = cls()
    hints = _hints(cls)
    for key, value in raw.items():
        if is_dataclass(hints[key]):
            sub = parse_section(hints[key], value, f"{where[:-1]}.{key}]")
            if getattr(hints[key], "ENABLED_BY_ANY_KEY", False) and "enabled" not in value:
                sub.enabled = True
            setattr(obj, key, sub)
        else:
            setattr(obj, key, coerce(hints[key], value, f"{where}: {key}"))
    return obj


def set_key(obj: Any, path: str, value: Any, where: str, section: str = "") -> None:
    """Set ``a.b`` below the section ``obj`` (``--set section.a.b=value``)."""
    parts = path.split(".")
    target = obj
    for i, part in enumerate(parts):
        names = {f.name: f for f in fields(target)}
        if part not in names:
            known = ", ".join(sorted(names))
            raise _error(f"{where}: no key {'.'.join([section, *parts[:i + 1]]).strip('.')!r} (known here: {known})")
        hint = _hints(type(target))[part]
        if i == len(parts) - 1:
            if is_dataclass(hint):
                full = f"{section}.{path}".strip(".")
                raise _error(f"{where}: {full} is a table; set one of its keys ({full}.KEY=VALUE)")
            setattr(target, part, coerce(hint, value, where))
            if getattr(type(target), "ENABLED_BY_ANY_KEY", False) and part != "enabled":
                target.enabled = True
            return
        if not is_dataclass(hint):
            raise _error(f"{where}: {'.'.join(parts[:i + 1])} is not a table")
        target = getattr(target, part)


def coerce(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the field's type; ints become floats; ``"none"`` clears an optional key."""
    args = typing.get_args(hint)
    optional = type(None) in args
    listed = typing.get_origin(hint) is list
    base = next((a for a in args if a is not type(None)), hint) if args and not listed else hint
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "off")):
        if optional:
            return None
        raise _error(f"{where}: a value is required")
    if base is bool:
        if not isinstance(value, bool):
            raise _error(f"{where}: must be true or false, got {value!r}")
        return value
    if base in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _error(f"{where}: must be a number, got {value!r}")
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise _error(f"{where}: must be a whole number, got {value!r}")
            return int(value)
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise _error(f"{where}: must be text, got {value!r}")
        return value
    if typing.get_origin(base) is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _error(f"{where}: must be a list of text, got {value!r}")
        return list(value)
    return value
