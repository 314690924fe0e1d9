"""A run's configuration: one serializable value, read from TOML and overridden by flags.

Every key a run uses lives here, so the resolved configuration written to ``manifest.json``
is enough to repeat the run. ``--set section.key=value`` overrides any key.
"""
from __future__ import annotations

import datetime
import os
import tomllib
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from tradeloop.brokers.costs import COMMISSIONS, SLIPPAGES, build_model
from tradeloop.brokers.instruments import Instrument, instrument_from_dict, load_instruments
from tradeloop.brokers.profiles import PROFILES
from tradeloop.errors import ConfigError, check_fields, limits
from tradeloop.engine.config.sections import LiveSection, MarketSection, check_table, parse_section, set_key
from tradeloop.risk.config import RiskSection

ON_BAD = limits(choices=("raise", "drop", "repair"))


@dataclass
class DataSpec:
    """One input: a file (or a symbol of a catalog) and how to read it."""

    path: str
    symbol: str | None = None
    encoding: str | None = None
    tz: str | None = None
    date_format: str | None = None
    columns: dict[str, Any] | None = None
    on_bad: str | None = field(default=None, metadata=ON_BAD)
    kind: str = field(default="bars", metadata=limits(choices=("bars", "ticks")))  # ticks: a tick file (run_tick_backtest)
    # corporate actions (data.actions): are this file's prices already adjusted for them (true: none applied,
    # a warning where some are listed; false: applied; unset: run.adjusted, else detected from the prices)
    adjusted: bool | None = None
    actions: str | None = None   # a CSV date,symbol,dividend,split of this input's actions


MAX_LATENCY_MS = 3_600_000.0   # an hour: anything longer is a unit mistake


@dataclass
class QuotesSection:
    """The ``[quotes]`` table: how orders fill on ticks (brokers/quotes.py ``QuoteRules`` and ``Latency``)."""

    size_limit: bool = True      # fill at most the displayed (or traded) size per tick
    limit_on: str = field(default="quote", metadata=limits(choices=("quote", "trade")))
    trade_through: bool = True   # limit_on = "trade": the trade must print strictly through the limit
    entry_ms: float = field(default=0.0, metadata=limits(ge=0, le=MAX_LATENCY_MS))   # order entry latency
    data_ms: float = field(default=0.0, metadata=limits(ge=0, le=MAX_LATENCY_MS))    # market data latency
    jitter: str = field(default="none", metadata=limits(choices=("none", "uniform", "exponential")))
    jitter_ms: float = field(default=0.0, metadata=limits(ge=0, le=MAX_LATENCY_MS))  # uniform 0..ms, or the mean
    seed: int = field(default=0, metadata=limits(ge=0))
    # queue position of resting limit orders (brokers/quotes.py, docs/fills.md "Queue position")
    queue: str = field(default="none", metadata=limits(choices=("none", "risk_averse", "prob")))


@dataclass
class RunSection:
    """The ``[run]`` table: what runs, on how much cash, filled how; ranges in each field's metadata."""

    strategy: str = ""
    cash: float = field(default=100_000.0, metadata=limits(gt=0))
    seed: int = field(default=0, metadata=limits(ge=0))
    fill_at: str = field(default="open", metadata=limits(choices=("open", "close")))
    participation: float | None = field(default=None, metadata=limits(gt=0, le=1))   # share of a bar's volume
    lot_size: float = field(default=0.0, metadata=limits(ge=0))
    allow_short: bool = True
    on_bad: str = field(default="raise", metadata=ON_BAD)
    catalog: str | None = None
    start: str | None = None
    end: str | None = None
    out: str | None = None
    order_prefix: str = "O"
    benchmark: str | None = None
    market: str = ""  # a market profile: "cn-a" (China A-shares, configured in [market]); "" none
    trade_from: str | None = None  # no strategy orders before this date/time: earlier bars only warm up
    instruments: str | None = None  # a TOML ([[instruments]]) or CSV file of instruments, after [[instruments]]
    adjusted: bool | None = None   # every input's prices already include their corporate actions (see DataSpec)
    actions: str | None = None     # a CSV date,symbol,dividend,split of corporate actions, for every input


@dataclass
class RunConfig:
    """Everything a backtest needs besides the data bytes themselves."""

    run: RunSection = field(default_factory=RunSection)
    params: dict[str, Any] = field(default_factory=dict)
    data: list[DataSpec] = field(default_factory=list)
    commission: dict[str, Any] = field(default_factory=lambda: {"kind": "percent", "rate": 0.0, "minimum": 0.0})
    slippage: dict[str, Any] = field(default_factory=lambda: {"kind": "none"})
    gates: dict[str, str] = field(default_factory=dict)
    risk: RiskSection = field(default_factory=RiskSection)
    market: MarketSection = field(default_factory=MarketSection)
    live: LiveSection = field(default_factory=LiveSection)
    quotes: QuotesSection = field(default_factory=QuotesSection)
    instruments: list[dict[str, Any]] = field(default_factory=list)   # [[instruments]]: brokers/instruments.py
    rolls: list[dict[str, Any]] = field(default_factory=list)   # [[rolls]]: futures rolls (engine/loop/rolls.py)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = [{k: v for k, v in spec.items() if v is not None and not (k == "kind" and v == "bars")}
                     for spec in d["data"]]
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        cfg = cls()
        if "run" in raw:
            cfg.run = _section(RunSection, raw["run"], f"{source}: [run]")
        cfg.params = dict(_table(raw.get("params", {}), f"{source}: [params]"))
        data = raw.get("data", [])
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise ConfigError(f"{source}: [[data]]: expected tables of path = \"FILE\", got {data!r}")
        cfg.data = [_section(DataSpec, d, f"{source}: [[data]] #{i + 1}") for i, d in enumerate(data)]
        if "commission" in raw:
            cfg.commission = dict(_table(raw["commission"], f"{source}: [commission]"))
        if "slippage" in raw:
            cfg.slippage = dict(_table(raw["slippage"], f"{source}: [slippage]"))
        if "gates" in raw:
            if not isinstance(raw["gates"], dict):
                raise ConfigError(f"{source}: [gates]: expected a table of metric = \"<op> <number>\"")
            cfg.gates = dict(raw["gates"])
        if "instruments" in raw:
            items = raw["instruments"]
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise ConfigError(f"{source}: [[instruments]]: expected tables of pattern = \"SYMBOL*\", ..., "
                                  f"got {items!r}")
            cfg.instruments = [dict(i) for i in items]
        if "rolls" in raw:
            items = raw["rolls"]
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise ConfigError(f"{source}: [[rolls]]: expected tables of from = \"IF1706\", to = \"IF1709\", "
                                  f"date = \"YYYY-MM-DD\" (or by = \"open_interest\"), got {items!r}")
            cfg.rolls = [dict(i) for i in items]
        for name in ("risk", "market", "live", "quotes"):
            if name in raw:
                setattr(cfg, name, parse_section(type(getattr(cfg, name)), raw[name], f"{source}: [{name}]"))
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        return cls.from_dict(raw, str(path))

    def validate(self) -> "RunConfig":
        """Check every setting against its type and range, once the file, flags and overrides are applied.

        Ranges are declared where each key is (field metadata of the sections, the cost models'
        fields, the risk section); this adds what spans keys: dates that parse and are in order,
        the market profile's name. Every mode calls it, so a setting means the same in all of them.
        """
        for key in ("start", "end", "trade_from"):   # a TOML date is kept as its ISO text
            value = getattr(self.run, key)
            if isinstance(value, (datetime.date, datetime.time)):
                setattr(self.run, key, value.isoformat())
        for section in (self.run, *self.data):   # a Path given in code is kept as its text
            for f in fields(section):
                if isinstance(getattr(section, f.name), os.PathLike):
                    setattr(section, f.name, os.fspath(getattr(section, f.name)))
        check_fields(self.run, "run")
        for i, spec in enumerate(self.data, 1):
            check_fields(spec, f"data #{i}")
            if spec.columns is not None and not isinstance(spec.columns, dict):
                raise ConfigError(f"data #{i}.columns must be a table, not {spec.columns!r}")
        self.risk.validate("risk")
        check_fields(self.market, "market")
        check_fields(self.live, "live")
        check_fields(self.quotes, "quotes")
        for name in ("params", "commission", "slippage", "gates"):
            _table(getattr(self, name), f"[{name}]")
        commission, slippage = dict(self.commission), dict(self.slippage)
        build_model(commission.pop("kind", "percent"), COMMISSIONS, commission, "commission")
        build_model(slippage.pop("kind", "none"), SLIPPAGES, slippage, "slippage")
        if self.run.market and self.run.market not in PROFILES:
            raise ConfigError(f"unknown market {self.run.market!r} (known: {', '.join(sorted(PROFILES))})")
        instrument_rows(self)   # every [[instruments]] row and the run.instruments file, each key checked
        roll_rows(self)         # every [[rolls]] row, each key checked
        start, end = (to_ns(getattr(self.run, k), f"run.{k}") for k in ("start", "end"))
        if start is not None and end is not None and not start < end:
            raise ConfigError(f"run.start {self.run.start!r} must be before run.end {self.run.end!r}")
        trade_from = to_ns(self.run.trade_from, "run.trade_from")
        if trade_from is not None:
            if start is not None and trade_from < start:
                raise ConfigError(f"run.trade_from {self.run.trade_from!r} is before run.start {self.run.start!r}")
            if end is not None and trade_from >= end:
                raise ConfigError(f"run.trade_from {self.run.trade_from!r} is not before run.end {self.run.end!r}")
        try:
            to_ns(self.market.chinext_20pct_from, "market.chinext_20pct_from")
        except ConfigError:
            raise ConfigError(f"market.chinext_20pct_from must be a date (YYYY-MM-DD), "
                              f"not {self.market.chinext_20pct_from!r}") from None
        return self

    def override(self, assignment: str) -> None:
        """Apply one ``section.key=value`` (value parsed as a TOML literal, else kept as text)."""
        key, sep, text = assignment.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {assignment!r}: expected section.key=value")
        section, _, name = key.strip().partition(".")
        value = parse_value(text)
        if section == "params":
            self.params[name] = value
        elif section in ("commission", "slippage", "gates"):
            getattr(self, section)[name] = value
        elif section == "run":
            if name not in {f.name for f in fields(RunSection)}:
                raise ConfigError(f"--set {assignment!r}: [run] has no key {name!r}")
            setattr(self.run, name, _coerce(RunSection, name, value, f"--set {assignment!r}"))
        elif section in ("risk", "market", "live", "quotes"):
            set_key(getattr(self, section), name, value, f"--set {assignment!r}", section)
        else:
            raise ConfigError(f"--set {assignment!r}: unknown section {section!r} "
                              "(run, params, commission, slippage, gates, risk, market, live, quotes)")


def instrument_rows(cfg: RunConfig) -> list[Instrument]:
    """The instruments of ``[[instruments]]`` then of the file ``run.instruments``, in resolution order (the
    config's own rows first, so they override the file's patterns); ConfigError naming the table or file and the key."""
    if not isinstance(cfg.instruments, list):
        raise ConfigError(f"[[instruments]]: expected a list of tables, got {cfg.instruments!r}")
    rows = [instrument_from_dict(raw, f"instruments #{i}") for i, raw in enumerate(cfg.instruments, 1)]
    return rows + (load_instruments(cfg.run.instruments) if cfg.run.instruments else [])


ROLL_KEYS = ("from", "to", "date", "by")


def roll_rows(cfg: RunConfig) -> list[dict[str, Any]]:
    """The ``[[rolls]]`` rows checked: ``from`` and ``to`` (contract symbols, different), and either ``date`` (a
    date or datetime: the roll's time) or ``by = "open_interest"`` (the first bar at which ``to``'s open interest
    is above ``from``'s); ConfigError naming ``rolls #N.key``. Returns the rows as given."""
    if not isinstance(cfg.rolls, list):
        raise ConfigError(f"[[rolls]]: expected a list of tables, got {cfg.rolls!r}")
    for i, raw in enumerate(cfg.rolls, 1):
        where = f"rolls #{i}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a table of key = value, got {raw!r}")
        for key in raw:
            if key not in ROLL_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(ROLL_KEYS)})")
        for key in ("from", "to"):
            v = raw.get(key)
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(f"{where}.{key}: a contract symbol is required (e.g. {key} = \"IF1706\"), got {v!r}")
        if raw["from"] == raw["to"]:
            raise ConfigError(f"{where}.to: the same contract as from ({raw['from']!r})")
        if ("date" in raw) == ("by" in raw):
            raise ConfigError(f"{where}: give either date = \"YYYY-MM-DD\" or by = \"open_interest\" (one of them)")
        if "by" in raw and raw["by"] != "open_interest":
            raise ConfigError(f"{where}.by must be 'open_interest', not {raw['by']!r}")
        if "date" in raw:
            d = raw["date"]
            if not isinstance(d, str):
                d = str(d)   # a TOML date or datetime
            if to_ns(d, f"{where}.date") is None:
                raise ConfigError(f"{where}.date: a date or datetime is required, got {raw['date']!r}")
    return list(cfg.rolls)


def parse_value(text: str) -> Any:
    """A TOML literal (``5``, ``0.1``, ``true``, ``"x"``, ``[1, 2]``) or, failing that, the raw text."""
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    return text if isinstance(value, (datetime.date, datetime.time)) else value  # dates stay as written


def to_ns(text: Any, key: str) -> int | None:
    """A date or date-time setting as int64 ns (None when unset); a ConfigError naming ``key`` when it is not one."""
    if text is None or text == "":
        return None
    if isinstance(text, (datetime.date, datetime.time)):
        text = text.isoformat()
    try:
        if not isinstance(text, str):
            raise ValueError(text)
        value = np.datetime64(text.strip(), "ns")
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(f"{key} {text!r}: not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    if np.isnat(value):
        raise ConfigError(f"{key} {text!r}: not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)")
    return int(value.astype(np.int64))


def _table(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table of key = value, got {raw!r}")
    return raw


def _section(cls: type, raw: Any, where: str) -> Any:
    check_table(cls, raw, where)
    if cls is DataSpec and "path" not in raw:
        raise ConfigError(f"{where}: path is required")
    return cls(**{k: _coerce(cls, k, v, where) for k, v in raw.items()})


def _coerce(cls: type, name: str, value: Any, where: str) -> Any:
    """``value`` checked against the field's type (``where: name must be ...``); ints become floats for
    float keys, a TOML date becomes its ISO text, ``"none"`` clears an optional key."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "off")):
        if optional:
            return None
        raise ConfigError(f"{where}: {name} needs a value")
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {value!r}")
    elif base in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: {name} must be a whole number, got {value!r}")
        value = base(value)   # a float inf/nan stays as it is, for validate() to name
    elif base is str:
        if isinstance(value, (datetime.date, datetime.time)):
            value = value.isoformat()
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be text, got {value!r}")
    elif typing.get_origin(base) is dict and not isinstance(value, dict):
        raise ConfigError(f"{where}: {name} must be a table, got {value!r}")
    return value
