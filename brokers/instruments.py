"""The instrument table: per symbol (or glob pattern) what a venue needs to know to trade it.

An :class:`Instrument` holds the asset class, the price tick, the quantity step (a lot: 100 shares;
a fractional step: 0.0001 BTC; 0: the run's ``lot_size``), the minimum notional of an order, the
contract multiplier (1 unless a future), margin rates (initial and maintenance, fractions of the
notional: futures accounting, see engine/loop/portfolio.py), the quote currency, the fee schedule (a commission model of
:mod:`tradeloop.brokers.costs` by kind; None: the run's ``[commission]``) and the session calendar
(a preset of :mod:`tradeloop.data.sessions`: ``cn-a``, ``us-equity``, ``crypto`` (24/7), ...).

A run's table comes from its ``[[instruments]]`` tables and/or ``run.instruments = "FILE"`` (TOML
with ``[[instruments]]``, or CSV with one column per key and ``commission`` / ``commission.PARAM``
columns for the fee model). A market profile (``run.market = "cn-a"``) adds one instrument for
every symbol, carrying the profile's lot, tick and fees, so A-shares are one instance of the table.

Resolution: a symbol equal to an entry's pattern takes that entry; otherwise the first entry, in
the order given, whose glob pattern (``fnmatch``, case-sensitive) matches; otherwise none (the
run's own rules apply unchanged). Fees are charged in the instrument's quote currency, which is
the account's: one account holds one currency (mixed currencies are refused).

Periods per year (:func:`periods_per_year`): 365 when any traded symbol trades on a 24/7 calendar,
else 252. A mix counts as 24/7 because the equity curve is then marked on every calendar day
(weekend days included), and P must be the number of daily returns in a year for the annualised
volatility, Sharpe and CAGR to mean what they say.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterable, Mapping

from tradeloop.brokers.costs import COMMISSIONS, CommissionModel, build_model, describe
from tradeloop.errors import ConfigError, check_fields, limits

__all__ = ["ASSET_CLASSES", "SETTLEMENTS", "CALENDARS", "ALWAYS_OPEN", "Instrument", "InstrumentTable", "floor_step", "round_step",
           "instrument_from_dict", "load_instruments", "periods_per_year"]

ASSET_CLASSES = ("equity", "future", "crypto", "fx", "index")
ALWAYS_OPEN = ("crypto", "always")       # 24/7 calendars: 365 periods a year
CALENDARS = ("cn-a", "cn-index-futures", "cn-commodity-day", "cn-commodity", "us-equity", "crypto", "always")
PERIODS_EXCHANGE, PERIODS_ALWAYS = 252, 365
SETTLEMENTS = ("bar", "daily")

MAX_TICK = 1e6
MAX_STEP = 1e9
MAX_NOTIONAL = 1e12
MAX_MULTIPLIER = 1e7


def _decimals(step: float) -> int:
    """Decimal places of ``step`` as written (0.0001 -> 4, 100 -> 0), at most 12."""
    text = repr(float(step))
    if "e-" in text:
        return min(12, int(text.split("e-")[1]) + len(text.split("e")[0].rstrip("0").partition(".")[2]))
    frac = text.partition(".")[2].rstrip("0")
    return min(12, len(frac))


def floor_step(qty: float, step: float) -> float:
    """``qty`` rounded down to a multiple of ``step`` (> 0), written to the step's decimals (no 0.30000000000000004)."""
    n = math.floor(qty / step + 1e-9)
    return round(n * step, _decimals(step))


def round_step(qty: float, step: float) -> float:
    """``qty`` rounded to the nearest multiple of ``step`` (> 0), written to the step's decimals."""
    return round(round(qty / step) * step, _decimals(step))


@dataclass(frozen=True)
class Instrument:
    """One row of the instrument table (see the module docstring); ranges in each field's metadata."""

    pattern: str
    asset_class: str = field(default="equity", metadata=limits(choices=ASSET_CLASSES))
    tick: float = field(default=0.0, metadata=limits(ge=0, le=MAX_TICK))             # 0: any price
    qty_step: float = field(default=0.0, metadata=limits(ge=0, le=MAX_STEP))         # 0: the run's lot_size
    min_notional: float = field(default=0.0, metadata=limits(ge=0, le=MAX_NOTIONAL))  # quote currency; 0: none
    multiplier: float = field(default=1.0, metadata=limits(gt=0, le=MAX_MULTIPLIER))
    margin: float | None = field(default=None, metadata=limits(gt=0, le=1, text="a fraction in (0, 1]"))
    maintenance_margin: float | None = field(default=None, metadata=limits(gt=0, le=1, text="a fraction in (0, 1]"))
    # daily price limit as a fraction of the previous close (settlement): no buy fills at limit-up, no sell at
    # limit-down (brokers/sim.py); per-bar limit_up/limit_down columns in the data win where given
    limit: float | None = field(default=None, metadata=limits(gt=0, lt=1, text="a fraction in (0, 1)"))
    # futures: when the variation is paid into cash: "bar" (every bar/tick, the default) or "daily" (once a
    # trading day at its last price; equity still marks the open PnL every bar: engine/loop/portfolio.py)
    settlement: str = field(default="bar", metadata=limits(choices=SETTLEMENTS))
    currency: str = ""
    commission: CommissionModel | None = None   # None: the run's [commission]
    calendar: str = field(default="", metadata=limits(choices=("",) + CALENDARS))
    profile: str = ""   # the market profile this row stands for ("cn-a"): its price limits and T+1 apply

    def check(self, where: str) -> "Instrument":
        """ConfigError naming ``where.key`` for a value of the wrong type, out of range, or inconsistent."""
        if not isinstance(self.pattern, str) or not self.pattern.strip():
            raise ConfigError(f"{where}.pattern: a symbol or glob pattern (BTC*) is required")
        check_fields(self, where)
        if self.multiplier != 1 and self.asset_class != "future":
            raise ConfigError(f"{where}.multiplier must be 1 for asset_class {self.asset_class!r} "
                              f"(contract multipliers are for futures), not {self.multiplier!r}")
        if self.settlement != "bar" and self.asset_class != "future":
            raise ConfigError(f"{where}.settlement {self.settlement!r} is for futures only "
                              f"(asset_class {self.asset_class!r})")
        if (self.maintenance_margin is not None and self.margin is not None
                and self.maintenance_margin > self.margin):
            raise ConfigError(f"{where}.maintenance_margin {self.maintenance_margin!r} is above "
                              f"margin {self.margin!r}")
        return self

    @property
    def is_future(self) -> bool:
        """Whether the symbol is accounted as a future: margin, notional x multiplier, marked to market."""
        return self.asset_class == "future"

    @property
    def margin_rate(self) -> float:
        """The initial margin as a fraction of the notional (``margin``; 1.0, fully funded, when not set)."""
        return self.margin if self.margin is not None else 1.0

    @property
    def maintenance_rate(self) -> float | None:
        """The maintenance margin fraction (``maintenance_margin``, else ``margin``); None: no liquidation rule."""
        return self.maintenance_margin if self.maintenance_margin is not None else self.margin

    @property
    def always_open(self) -> bool:
        """Whether the instrument trades around the clock every day (a 24/7 calendar)."""
        return self.calendar in ALWAYS_OPEN or (not self.calendar and self.asset_class == "crypto")

    def describe(self) -> dict[str, Any]:
        """The row as a JSON-able dict for the manifest (the fee model by kind, the calendar resolved)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["commission"] = None if self.commission is None else describe(self.commission)
        d["calendar"] = self.calendar or ("crypto" if self.always_open else "")
        d["periods_per_year"] = PERIODS_ALWAYS if self.always_open else PERIODS_EXCHANGE
        return d


@dataclass(frozen=True)
class InstrumentTable:
    """The run's instruments in resolution order (see the module docstring); empty: no instrument rules."""

    entries: tuple[Instrument, ...] = ()
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def resolve(self, symbol: str) -> Instrument | None:
        """The instrument of ``symbol``: its exact entry, else the first matching pattern, else None."""
        try:
            return self._cache[symbol]
        except KeyError:
            pass
        found = next((e for e in self.entries if e.pattern == symbol), None)
        if found is None:
            found = next((e for e in self.entries if fnmatchcase(symbol, e.pattern)), None)
        self._cache[symbol] = found
        return found

    def qty_step(self, symbol: str) -> float:
        """The quantity step of ``symbol`` (0.0 when no instrument sets one)."""
        inst = self.resolve(symbol)
        return inst.qty_step if inst is not None else 0.0

    def future(self, symbol: str) -> Instrument | None:
        """The instrument of ``symbol`` when it is a future (asset_class ``future``), else None."""
        inst = self.resolve(symbol)
        return inst if inst is not None and inst.asset_class == "future" else None

    @property
    def has_futures(self) -> bool:
        """Whether any row is a future (the engine then does futures accounting for the symbols it matches)."""
        return any(e.asset_class == "future" for e in self.entries)

    @property
    def has_daily_settlement(self) -> bool:
        """Whether any futures row settles daily (``settlement = "daily"``)."""
        return any(e.asset_class == "future" and e.settlement == "daily" for e in self.entries)

    def resolved(self, symbols: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Per traded symbol its resolved instrument as the manifest holds it (None: no row matched)."""
        out = {}
        for s in symbols:
            inst = self.resolve(s)
            out[s] = None if inst is None else inst.describe()
        return out

    def check_symbols(self, symbols: Iterable[str]) -> None:
        """ConfigError when the traded symbols are quoted in more than one currency (one account, one currency)."""
        cur = {}
        for s in symbols:
            inst = self.resolve(s)
            if inst is not None and inst.currency:
                cur.setdefault(inst.currency, s)
        if len(cur) > 1:
            listed = ", ".join(f"{s} in {c}" for c, s in cur.items())
            raise ConfigError(f"instruments: the traded symbols are quoted in {len(cur)} currencies ({listed}); "
                              "an account holds one currency")


def periods_per_year(table: InstrumentTable | None, symbols: Iterable[str]) -> int:
    """365 when any of ``symbols`` trades 24/7 (its calendar, or a crypto asset class without one), else 252."""
    if table:
        for s in symbols:
            inst = table.resolve(s)
            if inst is not None and inst.always_open:
                return PERIODS_ALWAYS
    return PERIODS_EXCHANGE


# ------------------------------------------------------------------------------------------- reading
_FIELDS = {f.name: f for f in dataclasses.fields(Instrument)}
_NUMBERS = ("tick", "qty_step", "min_notional", "multiplier", "margin", "maintenance_margin", "limit")
_TEXTS = ("pattern", "asset_class", "currency", "calendar", "settlement")
_ALIASES = {"symbol": "pattern", "lot_size": "qty_step", "lot": "qty_step", "step": "qty_step"}


def instrument_from_dict(raw: Any, where: str) -> Instrument:
    """One instrument from a TOML/JSON table (``commission`` a kind or a table with ``kind``); errors name the key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table of key = value, got {raw!r}")
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        name = _ALIASES.get(key, key)
        if name not in _FIELDS or name == "profile":
            known = sorted(set(_FIELDS) - {"profile"})
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        if name in kw:
            raise ConfigError(f"{where}: {key} given twice (as {name})")
        if name in _NUMBERS:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}.{name} must be a number, got {value!r}")
            value = float(value)
        elif name in _TEXTS:
            if not isinstance(value, str):
                raise ConfigError(f"{where}.{name} must be text, got {value!r}")
        elif name == "commission":
            value = _commission(value, f"{where}.commission")
        kw[name] = value
    if "pattern" not in kw:
        raise ConfigError(f"{where}.pattern: a symbol or glob pattern (BTC*) is required")
    return Instrument(**kw).check(where)


def _commission(value: Any, where: str) -> CommissionModel | None:
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a fee kind ({', '.join(COMMISSIONS)}) or a table with kind, got {value!r}")
    params = dict(value)
    kind = params.pop("kind", None)
    if kind is None:
        raise ConfigError(f"{where}: no kind (one of {', '.join(COMMISSIONS)})")
    return build_model(kind, COMMISSIONS, params, where)


def load_instruments(path: str | Path, where: str = "run.instruments") -> list[Instrument]:
    """The instruments of a TOML (``[[instruments]]``) or CSV file; ConfigError naming the file, row and key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{where}: {path}: {e.strerror or e}") from None
    if p.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        raws = [(_csv_row(row, f"{path} row {i}"), f"{path} row {i}") for i, row in enumerate(rows, 2)]
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{where}: {path}: not valid TOML: {e}") from None
        items = data.get("instruments")
        if not isinstance(items, list) or set(data) - {"instruments"}:
            raise ConfigError(f"{where}: {path}: expected only [[instruments]] tables")
        raws = [(item, f"{path}: [[instruments]] #{i}") for i, item in enumerate(items, 1)]
    return [instrument_from_dict(raw, w) for raw, w in raws]


def _csv_row(row: dict[str | None, Any], where: str) -> dict[str, Any]:
    """A CSV row as a table: empty cells left out, numbers parsed, ``commission.PARAM`` gathered under commission."""
    if None in row:
        raise ConfigError(f"{where}: more cells than header columns")
    out: dict[str, Any] = {}
    fee: dict[str, Any] = {}
    for key, cell in row.items():
        key = (key or "").strip()
        cell = (cell or "").strip()
        if not cell:
            continue
        if key.startswith("commission."):
            fee[key.partition(".")[2]] = _number(cell, f"{where}.{key}")
        elif key == "commission":
            fee["kind"] = cell
        elif _ALIASES.get(key, key) in _NUMBERS:
            out[key] = _number(cell, f"{where}.{key}")
        else:
            out[key] = cell
    if fee:
        out["commission"] = fee
    return out


def _number(cell: str, where: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise ConfigError(f"{where} must be a number, got {cell!r}") from None
