"""A run's configuration: one serializable value, read from TOML and overridden by flags.

Every key a run uses lives here, so the resolved configuration written to ``manifest.json``
is enough to repeat the run. ``--set section.key=value`` overrides any key.
"""
from __future__ import annotations

import datetime
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tradeloop.errors import ConfigError
from tradeloop.engine.config.sections import LiveSection, MarketSection, check_table, parse_section, set_key
from tradeloop.risk.config import RiskSection


@dataclass
class DataSpec:
    """One input: a file (or a symbol of a catalog) and how to read it."""

    path: str
    symbol: str | None = None
    encoding: str | None = None
    tz: str | None = None
    date_format: str | None = None
    columns: dict[str, Any] | None = None
    on_bad: str | None = None


@dataclass
class RunSection:
    strategy: str = ""
    cash: float = 100_000.0
    seed: int = 0
    fill_at: str = "open"
    participation: float | None = None
    lot_size: float = 0.0
    allow_short: bool = True
    on_bad: str = "raise"
    catalog: str | None = None
    start: str | None = None
    end: str | None = None
    out: str | None = None
    order_prefix: str = "O"
    benchmark: str | None = None
    market: str = ""  # a market profile: "cn-a" (China A-shares, configured in [market]); "" none
    trade_from: str | None = None  # no strategy orders before this date/time: earlier bars only warm up


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = [{k: v for k, v in spec.items() if v is not None} for spec in d["data"]]
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
        cfg.params = dict(raw.get("params", {}))
        data = raw.get("data", [])
        if isinstance(data, dict):
            data = [data]
        cfg.data = [_section(DataSpec, d, f"{source}: [[data]] #{i + 1}") for i, d in enumerate(data)]
        if "commission" in raw:
            cfg.commission = dict(raw["commission"])
        if "slippage" in raw:
            cfg.slippage = dict(raw["slippage"])
        if "gates" in raw:
            if not isinstance(raw["gates"], dict):
                raise ConfigError(f"{source}: [gates]: expected a table of metric = \"<op> <number>\"")
            cfg.gates = dict(raw["gates"])
        for name in ("risk", "market", "live"):
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
        elif section in ("risk", "market", "live"):
            set_key(getattr(self, section), name, value, f"--set {assignment!r}", section)
        else:
            raise ConfigError(f"--set {assignment!r}: unknown section {section!r} "
                              "(run, params, commission, slippage, gates, risk, market, live)")


def parse_value(text: str) -> Any:
    """A TOML literal (``5``, ``0.1``, ``true``, ``"x"``, ``[1, 2]``) or, failing that, the raw text."""
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    return text if isinstance(value, (datetime.date, datetime.time)) else value  # dates stay as written


def _section(cls: type, raw: Any, where: str) -> Any:
    check_table(cls, raw, where)
    return cls(**{k: _coerce(cls, k, v, where) for k, v in raw.items()})


def _coerce(cls: type, name: str, value: Any, where: str) -> Any:
    default = getattr(cls(), name) if cls is RunSection else None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {value!r}")
    elif isinstance(default, float) and isinstance(value, int):
        value = float(value)
    elif isinstance(default, (int, float)) and not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
    return value
