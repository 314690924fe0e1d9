"""Fill rules as JSON-able config, so a second process (the exchange simulator) fills with exactly a run's rules.

``rules_to_dict`` names each cost model by its config kind (``costs.COMMISSIONS`` / ``costs.SLIPPAGES``)
and the market by its profile name (``profiles.PROFILES``), with every constructor parameter, so
``rules_from_dict(rules_to_dict(r)) == r``. Reading is strict: an unknown key, kind or market, or a
value of the wrong type, is a ValueError naming it; a key left out takes the dataclass's default.

    {"fill_at": "open", "participation": null, "lot_size": 0.0,
     "commission": {"kind": "per_share", "per_share": 0.005, "minimum": 1.0},
     "slippage": {"kind": "volume_share", "impact": 0.1},
     "market": null,          # or {"name": "cn-a", "lot_size": 100, ..., "commission": {"kind": "cn_a", ...}}
     "instruments": [{"pattern": "BTC*", "asset_class": "crypto", "qty_step": 0.0001, ...,
                      "commission": {"kind": "percent", ...} or null}]      # brokers/instruments.py

A rules *file* may also carry the tick rules (brokers/quotes.py ``QuoteRules``, its ``Latency`` nested) under
``"quotes"``, read as strictly (:func:`quote_rules_to_dict` / :func:`quote_rules_from_dict`,
:func:`load_exchange_rules`); without it the exchange matches ticks as trades with the bar rules::

     "quotes": {"size_limit": true, "limit_on": "quote", "trade_through": true, "queue": "none",
                "latency": {"entry_ns": 0, "data_ns": 0, "jitter": null, "jitter_ns": 0, "seed": 0}}
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import msgspec

from tradeloop.brokers.costs import COMMISSIONS, SLIPPAGES
from tradeloop.brokers.instruments import Instrument, InstrumentTable, instrument_from_dict
from tradeloop.errors import ConfigError, check_fields
from tradeloop.brokers.profiles import PROFILES, MarketProfile
from tradeloop.brokers.quotes import Latency, QuoteRules
from tradeloop.brokers.sim import FillRules


def rules_to_dict(rules: FillRules) -> dict[str, Any]:
    """``rules`` as a JSON-able dict; ValueError for a model or market that has no config name."""
    return {"fill_at": rules.fill_at, "participation": rules.participation, "lot_size": rules.lot_size,
            "commission": _model_to_dict(rules.commission, COMMISSIONS, "commission"),
            "slippage": _model_to_dict(rules.slippage, SLIPPAGES, "slippage"),
            "market": None if rules.market is None else _market_to_dict(rules.market),
            "instruments": [_instrument_to_dict(i) for i in rules.instruments.entries]}


def rules_from_dict(data: Any) -> FillRules:
    """The FillRules ``data`` (as written by :func:`rules_to_dict`) describes; ValueError naming what is wrong."""
    d = _object(data, "rules")
    _known_keys(FillRules, d, "rules")
    kw: dict[str, Any] = {}
    hints = typing.get_type_hints(FillRules)
    for key, value in d.items():
        if key == "commission":
            kw[key] = _model_from_dict(value, COMMISSIONS, "rules.commission")
        elif key == "slippage":
            kw[key] = _model_from_dict(value, SLIPPAGES, "rules.slippage")
        elif key == "market":
            kw[key] = None if value is None else _market_from_dict(value)
        elif key == "instruments":
            kw[key] = _instruments_from_list(value)
        else:
            kw[key] = _convert(value, hints[key], f"rules.{key}")
    return _construct(FillRules, kw, "rules")


def quote_rules_to_dict(quotes: QuoteRules) -> dict[str, Any]:
    """``quotes`` (with its latency) as a JSON-able dict; ``quote_rules_from_dict`` reads it back equal."""
    return {"size_limit": quotes.size_limit, "limit_on": quotes.limit_on, "trade_through": quotes.trade_through,
            "queue": quotes.queue, "latency": _params(quotes.latency)}


def quote_rules_from_dict(data: Any) -> QuoteRules:
    """The QuoteRules ``data`` describes: unknown keys, wrong types and bad values are a ValueError naming them."""
    d = dict(_object(data, "rules.quotes"))
    _known_keys(QuoteRules, d, "rules.quotes")
    kw: dict[str, Any] = {}
    hints = typing.get_type_hints(QuoteRules)
    for key, value in d.items():
        if key == "latency":
            lat = _object(value, "rules.quotes.latency")
            _known_keys(Latency, lat, "rules.quotes.latency")
            lhints = typing.get_type_hints(Latency)
            kw[key] = _construct(Latency, {k: _convert(v, lhints[k], f"rules.quotes.latency.{k}")
                                           for k, v in lat.items()}, "rules.quotes.latency")
        else:
            kw[key] = _convert(value, hints[key], f"rules.quotes.{key}")
    return _construct(QuoteRules, kw, "rules.quotes")


def write_rules(path: str | Path, rules: FillRules, quotes: QuoteRules | None = None) -> Path:
    """Write ``rules`` (and the tick rules ``quotes``, if given) as JSON to ``path`` (for
    ``python -m tradeloop.brokers.exchange --rules PATH``); the path."""
    path = Path(path)
    data = rules_to_dict(rules)
    if quotes is not None:
        data["quotes"] = quote_rules_to_dict(quotes)
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


def load_rules(path: str | Path) -> FillRules:
    """The FillRules in the JSON file ``path``; a one-line ValueError naming the file when it cannot be used
    (a file with tick rules is read with :func:`load_exchange_rules`)."""
    rules, quotes = load_exchange_rules(path)
    if quotes is not None:
        raise ValueError(f"rules file {path}: has tick rules ('quotes'): read it with load_exchange_rules")
    return rules


def load_exchange_rules(path: str | Path) -> tuple[FillRules, QuoteRules | None]:
    """The FillRules and the tick rules (None: the file has no ``"quotes"``) in the JSON file ``path``;
    a one-line ValueError naming the file when it cannot be used."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ValueError(f"rules file {path}: {e.strerror or e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ValueError(f"rules file {path}: not JSON ({e})") from None
    try:
        if isinstance(data, dict) and "quotes" in data:
            data = dict(data)
            quotes = quote_rules_from_dict(data.pop("quotes"))
        else:
            quotes = None
        return rules_from_dict(data), quotes
    except ValueError as e:
        raise ValueError(f"rules file {path}: {e}") from None


# ---------------------------------------------------------------------------- writing
def _model_to_dict(model: Any, registry: dict[str, Any], what: str) -> dict[str, Any]:
    for kind, cls in registry.items():
        if cls is None and model is None:
            return {"kind": kind}
        if cls is not None and type(model) is cls:
            return {"kind": kind, **_params(model)}
    raise ValueError(f"{what} model {type(model).__name__} has no config kind (known: {', '.join(registry)})")


def _instrument_to_dict(inst: Instrument) -> dict[str, Any]:
    out = {f.name: getattr(inst, f.name) for f in dataclasses.fields(inst)}
    out["commission"] = None if inst.commission is None else _model_to_dict(inst.commission, COMMISSIONS, "commission")
    return out


def _instruments_from_list(value: Any) -> InstrumentTable:
    if not isinstance(value, list):
        raise ValueError(f"rules.instruments: expected a list of objects, got {type(value).__name__}")
    rows = []
    for i, item in enumerate(value, 1):
        d = dict(_object(item, f"rules.instruments #{i}"))
        profile = d.pop("profile", "")
        d = {k: v for k, v in d.items() if v is not None}   # null: the default (no margin, the run's fees)
        inst = instrument_from_dict(d, f"rules.instruments #{i}")
        if not isinstance(profile, str):
            raise ValueError(f"rules.instruments #{i}.profile: must be text, got {profile!r}")
        rows.append(dataclasses.replace(inst, profile=profile))
    return InstrumentTable(tuple(rows))


def _market_to_dict(market: MarketProfile) -> dict[str, Any]:
    name = getattr(type(market), "name", None)
    if PROFILES.get(name) is not type(market):
        raise ValueError(f"market profile {type(market).__name__} is not one of {', '.join(PROFILES)}")
    return {"name": name, **_params(market)}


def _params(obj: Any) -> dict[str, Any]:
    """Every constructor parameter of a model or profile dataclass, JSON-able (sets sorted, fee models nested)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        v = getattr(obj, f.name)
        if isinstance(v, (set, frozenset)):
            v = sorted(v)
        elif dataclasses.is_dataclass(v):  # a profile's own fee model
            v = _model_to_dict(v, COMMISSIONS, f.name)
        out[f.name] = v
    return out


# ---------------------------------------------------------------------------- reading
def _object(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    return data


def _known_keys(cls: type, d: dict[str, Any], where: str) -> None:
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in d:
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")


def _convert(value: Any, hint: Any, where: str) -> Any:
    try:
        return msgspec.convert(value, hint)
    except msgspec.ValidationError as e:
        raise ValueError(f"{where}: {e}") from None


def _construct(cls: type, kw: dict[str, Any], where: str) -> Any:
    try:
        return cls(**kw)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from None


def _fields_from_dict(cls: type, d: dict[str, Any], where: str) -> Any:
    """``cls`` (a model or profile dataclass) from its parameters, each checked against its annotation."""
    _known_keys(cls, d, where)
    hints = typing.get_type_hints(cls)
    kw: dict[str, Any] = {}
    for key, value in d.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):  # a profile's own fee model: {"kind": ..., ...}
            model = _model_from_dict(value, COMMISSIONS, f"{where}.{key}")
            if not isinstance(model, hint):
                want = next((k for k, c in COMMISSIONS.items() if c is hint), hint.__name__)
                raise ValueError(f"{where}.{key}: must be of kind {want!r}, not {value.get('kind')!r}")
            kw[key] = model
        else:
            kw[key] = _convert(value, hint, f"{where}.{key}")
    return _construct(cls, kw, where)


def _model_from_dict(data: Any, registry: dict[str, Any], where: str) -> Any:
    d = dict(_object(data, where))
    if "kind" not in d:
        raise ValueError(f"{where}: no 'kind' (one of {', '.join(registry)})")
    kind = d.pop("kind")
    if not isinstance(kind, str) or kind not in registry:
        raise ValueError(f"{where}: unknown kind {kind!r} (known: {', '.join(registry)})")
    cls = registry[kind]
    if cls is None:
        if d:
            raise ValueError(f"{where}: kind {kind!r} takes no parameters, got {', '.join(map(repr, d))}")
        return None
    model = _fields_from_dict(cls, d, f"{where}({kind})")
    try:
        check_fields(model, f"{where}({kind})")   # the ranges a run's config is held to: no looser in a rules file
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return model


def _market_from_dict(data: Any) -> MarketProfile:
    d = dict(_object(data, "rules.market"))
    name = d.pop("name", None)
    if not isinstance(name, str) or name not in PROFILES:
        raise ValueError(f"rules.market: unknown market name {name!r} (known: {', '.join(PROFILES)})")
    return _fields_from_dict(PROFILES[name], d, f"rules.market({name})")
