"""Errors a user's own input can cause, and the range rules that raise them (the lowest floor: imports
nothing of ours), shared by every subpackage.

The command line turns each ConfigError into a one-line message and exit status 2. Settings declare
their ranges once, as dataclass field metadata (``field(default=0.0, metadata=limits(ge=0))``), and
:func:`check_fields` checks a section against them (every float also must be finite).
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields, is_dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration file, flag or override that cannot be used; the message names the key."""


class StrategyError(ConfigError):
    """A user's strategy code raised: the one-line message names its file, line and callback.

    ``detail`` holds the full traceback (written to the run's events.jsonl, never to the console);
    ``result`` what ran before the failure (a BacktestResult, or None), so the run can be recorded.
    """

    def __init__(self, message: str, detail: str = "", result: Any = None) -> None:
        super().__init__(message)
        self.detail = detail
        self.result = result

    def __reduce__(self):  # picklable across process pools (the partial result stays behind)
        """Rebuild from the message and traceback."""
        return (type(self), (str(self), self.detail))


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Range:
    """The allowed values of a number: bounds (open or closed) and/or a set of choices.

    ``text`` words the rule when the default wording is not enough; ``label`` is what the message
    calls the key after naming it (``risk.halt.move: halt move must be ...``).
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[Any, ...] = ()
    text: str = ""
    label: str = ""

    def describe(self) -> str:
        """The rule in words (``positive``, ``between 0 and 0.1``, ``one of 'open', 'close'``)."""
        if self.text:
            return self.text
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            if not self.lo_open and not self.hi_open:
                return f"between {_num(lo)} and {_num(hi)}"
            left = f"greater than {_num(lo)}" if self.lo_open else f"at least {_num(lo)}"
            right = f"less than {_num(hi)}" if self.hi_open else f"at most {_num(hi)}"
            return f"{left} and {right}"
        if lo is not None:
            if lo == 0 and self.lo_open:
                return "positive"
            return f"greater than {_num(lo)}" if self.lo_open else f"at least {_num(lo)}"
        if hi is not None:
            return f"less than {_num(hi)}" if self.hi_open else f"at most {_num(hi)}"
        return "a finite number"

    def allows(self, value: Any) -> bool:
        """Whether ``value`` (already of the right type) satisfies the rule."""
        if self.choices:
            return value in self.choices
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def check(self, key: str, value: Any) -> None:
        """ConfigError naming ``key`` unless ``value`` is allowed (None, an unset optional key, always is)."""
        if value is None or self.allows(value):
            return
        name = f"{key}: {self.label}" if self.label else key
        raise ConfigError(f"{name} must be {self.describe()}, not {value!r}")


def limits(*, gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
           choices: tuple[Any, ...] = (), text: str = "", label: str = "") -> dict[str, Range]:
    """Field metadata declaring a range: ``field(default=0.0, metadata=limits(ge=0, le=0.1))``."""
    return {"range": Range(lo=gt if gt is not None else ge, hi=lt if lt is not None else le,
                           lo_open=gt is not None, hi_open=lt is not None, choices=tuple(choices), text=text,
                           label=label)}


def check_number(key: str, value: Any, integer: bool = False) -> None:
    """ConfigError unless ``value`` is a finite number (a whole one with ``integer``); text is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if integer and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{key} must be a whole number, got {value!r}")


def check_fields(obj: Any, prefix: str) -> None:
    """Check every field of the dataclass ``obj`` (nested ones too) against its declared type and range.

    Numbers must be numbers (not text, not true/false) and finite; a field with ``limits(...)``
    metadata must be in its range; text fields must be text. Errors name ``prefix.field``.
    """
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        hint = hints.get(f.name, Any)
        if is_dataclass(value):
            check_fields(value, key)
            continue
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if len(args) == 1 and typing.get_origin(hint) is not list else hint
        if value is None:
            if type(None) not in typing.get_args(hint) and hint is not Any:
                raise ConfigError(f"{key}: a value is required")
            continue
        if base in (int, float):
            check_number(key, value, integer=base is int)
        elif base is str and not isinstance(value, str):
            raise ConfigError(f"{key} must be text, got {value!r}")
        elif base is bool and not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        rng = f.metadata.get("range")
        if rng is not None:
            rng.check(key, value)
