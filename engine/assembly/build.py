"""The one assembly point: every part of a run built from its typed configuration (``RunConfig``).

Backtests, walk-forward windows, sweep points, live and paper sessions and the exchange
simulator's matching rules all take their strategy, inputs, fill rules, market profile and risk
pipeline from here, so a setting means the same thing in every mode.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tradeloop.brokers.costs import COMMISSIONS, SLIPPAGES, AShareCommission, build_model
from tradeloop.brokers.instruments import Instrument, InstrumentTable
from tradeloop.brokers.profiles import PROFILES, ChinaAShares, MarketProfile
from tradeloop.brokers.quotes import Latency, QuoteRules
from tradeloop.brokers.sim import FillRules
from tradeloop.data.errors import check_file
from tradeloop.data.loaders import file_sha256, load_bars
from tradeloop.data.schema import BarSeries, TickSeries
from tradeloop.engine.config.run import DataSpec, RunConfig, instrument_rows
from tradeloop.engine.config.sections import MarketSection
from tradeloop.engine.loop.strategy import Strategy, one_line, shown_path, strategy_failure
from tradeloop.errors import ConfigError
from tradeloop.risk.build import build_pipeline
from tradeloop.risk.pipeline import RiskPipeline


def resolve_strategy(spec: str) -> type[Strategy]:
    """``module:Class``, ``path/file.py:Class``, or the name of a module in ``strategies/``."""
    if ":" in spec:
        mod_name, _, cls_name = spec.rpartition(":")
        module = _import(mod_name)
        cls = getattr(module, cls_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
            raise ConfigError(f"strategy {spec!r}: {mod_name} has no Strategy subclass {cls_name!r}")
        return cls
    try:
        module = importlib.import_module(f"tradeloop.strategies.{spec}")
    except ModuleNotFoundError as e:
        if e.name != f"tradeloop.strategies.{spec}":
            raise import_failure(spec, e) from None
        raise ConfigError(f"strategy {spec!r}: no such module in strategies/ (or give module:Class)") from None
    except Exception as e:  # noqa: BLE001 - the module's own code failed: one line naming its file and line
        raise import_failure(spec, e) from None
    found = [c for c in vars(module).values()
             if inspect.isclass(c) and issubclass(c, Strategy) and c is not Strategy and c.__module__ == module.__name__]
    if len(found) != 1:
        raise ConfigError(f"strategy {spec!r}: strategies/{spec}.py defines {len(found)} strategies; use module:Class")
    return found[0]


def build_strategy(cfg: RunConfig) -> Strategy:
    """The strategy ``run.strategy`` names, made with the run's parameters (a bad one: ConfigError)."""
    return make_strategy(resolve_strategy(cfg.run.strategy), cfg.params)


def make_strategy(cls: type[Strategy], params: dict[str, Any]) -> Strategy:
    """``cls(**params)``, then its ``validate()``: every mode makes its strategy here.

    A parameter of the wrong type or out of its range, or a combination ``validate`` refuses
    (a ValueError), is a ConfigError naming it; any other exception of the strategy's own code
    (its ``__init__`` or ``validate`` failing) is a StrategyError naming its file and line.
    """
    try:
        strategy = cls(**params)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - user code: reported as one line, the traceback kept
        raise (strategy_failure(cls, e) or ConfigError(f"strategy {cls.__name__}: {one_line(e)}")) from e
    try:
        strategy.validate()
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"strategy {cls.__name__}: {' '.join(str(e).split())}") from None
    except Exception as e:  # noqa: BLE001
        raise (strategy_failure(cls, e) or ConfigError(f"strategy {cls.__name__}: {one_line(e)}")) from e
    return strategy


def import_failure(name: str, e: BaseException) -> ConfigError:
    """One line for a strategy module that cannot be imported: its file and line, and why."""
    if isinstance(e, SyntaxError) and e.filename:
        return ConfigError(f"strategy {name!r}: {shown_path(e.filename)}:{e.lineno}: {type(e).__name__}: {e.msg}")
    tb = [f for f in traceback.extract_tb(e.__traceback__) if "importlib._bootstrap" not in f.filename]
    where = f"{shown_path(tb[-1].filename)}:{tb[-1].lineno}: " if tb else ""
    return ConfigError(f"strategy {name!r}: {where}{one_line(e)}")


def _import(name: str):
    if name.endswith(".py"):
        path = Path(name)
        if not path.exists():
            raise ConfigError(f"strategy file {name} not found")
        # the file's folder goes on sys.path, as for a script run by python, so a strategy can import
        # the user's own modules beside it (their data.py or models/ shadow nothing of ours: ours are tradeloop.*)
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - a syntax or import error in the user's file: one line
            raise import_failure(name, e) from None
        return module
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name and not name.startswith(f"{e.name}."):
            raise import_failure(name, e) from None
        raise ConfigError(f"strategy module {name!r} not found") from None
    except Exception as e:  # noqa: BLE001
        raise import_failure(name, e) from None


def load_inputs(cfg: RunConfig, *, hashes: bool = True) -> tuple[list[BarSeries | TickSeries], list[dict[str, Any]]]:
    """Every input of the run as a BarSeries (a TickSeries for ``kind = "ticks"``), plus its manifest
    entry (path, sha256, rows).

    ``hashes=False`` leaves the sha256 out, for runs that write no manifest (sweep points): hashing
    a large file costs about as much as parsing it.

    Files are parsed and hashed in a thread pool (polars and hashlib release the GIL); the
    result does not depend on the order the threads finish in, and the first failing input
    in the order given is the error reported.
    """
    if not cfg.data:
        raise ConfigError("no input data: give --data PATH or --ticks PATH (or [[data]] in the config)")
    catalog = None
    if cfg.run.catalog:
        from tradeloop.data.catalog import Catalog  # pyarrow is imported only when a catalog is used
        catalog = Catalog(cfg.run.catalog)
    for spec in cfg.data:
        if catalog is None and not Path(spec.path).exists():
            raise ConfigError(f"input file {spec.path} not found")
        if catalog is None:  # a directory, FIFO or device: refused before a thread opens (and blocks on) it
            check_file(spec.path)

    def one(spec: DataSpec) -> tuple[BarSeries | TickSeries, dict[str, Any]]:
        if spec.kind == "ticks":
            series, entry = _tick_input(cfg, spec)
        elif catalog is not None:
            series = catalog.read(spec.path)
            entry = {"catalog": cfg.run.catalog, "symbol": spec.path, **catalog.meta(spec.path)}
            if spec.symbol:
                series = _renamed(series, spec.symbol)
        else:
            series = load_bars(spec.path, spec.symbol, columns=spec.columns, encoding=spec.encoding, tz=spec.tz,
                               date_format=spec.date_format, on_bad=spec.on_bad or cfg.run.on_bad)
            entry = {"path": spec.path, "symbol": series.symbol}
        if cfg.run.start or cfg.run.end:
            series = series.between(_ts(cfg.run.start), _ts(cfg.run.end))
        entry["rows"] = len(series)
        return series, entry

    workers = min(len(cfg.data), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = [pool.submit(file_sha256, spec.path) if hashes and catalog is None else None for spec in cfg.data]
        loaded = list(pool.map(one, cfg.data))
    for (_, entry), h in zip(loaded, digests):
        if h is not None:
            entry["sha256"] = h.result()
    return [s for s, _ in loaded], [e for _, e in loaded]


def _tick_input(cfg: RunConfig, spec: DataSpec) -> tuple[TickSeries, dict[str, Any]]:
    """A ``kind = "ticks"`` input: a tick file (data/ticks.py), or with ``run.catalog`` a tick symbol of it."""
    if cfg.run.catalog:
        from tradeloop.data.tick_catalog import TickCatalog
        cat = TickCatalog(cfg.run.catalog)
        series = cat.read(spec.path, _ts(cfg.run.start), _ts(cfg.run.end))
        if spec.symbol:
            series = dataclasses.replace(series, symbol=spec.symbol)
        return series, {"catalog": cfg.run.catalog, "symbol": spec.path, "kind": "ticks",
                        "days": cat.days(spec.path)}
    from tradeloop.data.ticks import load_ticks
    on_bad = spec.on_bad or cfg.run.on_bad
    if on_bad == "repair":
        raise ConfigError(f"tick input {spec.path}: on_bad = \"repair\" is for bars; ticks take raise or drop")
    series = load_ticks(spec.path, spec.symbol, columns=spec.columns, encoding=spec.encoding, tz=spec.tz,
                        date_format=spec.date_format, on_bad=on_bad)
    return series, {"path": spec.path, "symbol": series.symbol, "kind": "ticks"}


def build_quotes(cfg: RunConfig) -> QuoteRules:
    """The tick fill rules of ``[quotes]`` (brokers/quotes.py): size limit, resting limits, latency."""
    q = cfg.quotes
    try:
        latency = Latency(entry_ns=round(q.entry_ms * 1e6), data_ns=round(q.data_ms * 1e6),
                          jitter=None if q.jitter == "none" else q.jitter, jitter_ns=round(q.jitter_ms * 1e6),
                          seed=q.seed)
        return QuoteRules(size_limit=q.size_limit, limit_on=q.limit_on, trade_through=q.trade_through,
                          latency=latency, queue=q.queue)
    except ValueError as e:
        raise ConfigError(f"[quotes]: {e}") from None


def _renamed(s: BarSeries, symbol: str) -> BarSeries:
    return BarSeries(symbol, s.ts, s.open, s.high, s.low, s.close, s.volume, s.extra, s.tz, s.source)


def _ts(text: str | None) -> int | None:
    if not text:
        return None
    import numpy as np
    return int(np.datetime64(text, "ns").astype("int64"))


def trade_from_ts(cfg: RunConfig) -> int | None:
    """``run.trade_from`` as int64 ns (None when unset); a ConfigError naming the key when it is not a date."""
    if not cfg.run.trade_from:
        return None
    try:
        return _ts(str(cfg.run.trade_from))
    except ValueError:
        raise ConfigError(f"run.trade_from {cfg.run.trade_from!r}: not a date (use YYYY-MM-DD)") from None


def build_rules(cfg: RunConfig) -> FillRules:
    c = dict(cfg.commission)
    s = dict(cfg.slippage)
    market = market_profile(cfg)
    try:
        commission = market.commission if market is not None else build_model(c.pop("kind", "percent"), COMMISSIONS, c)
        slippage = build_model(s.pop("kind", "none"), SLIPPAGES, s)
        return FillRules(fill_at=cfg.run.fill_at, participation=cfg.run.participation,
                         lot_size=market.lot_size if market is not None else cfg.run.lot_size,
                         commission=commission, slippage=slippage, market=market,
                         instruments=instrument_table(cfg, market))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def instrument_table(cfg: RunConfig, market: MarketProfile | None) -> InstrumentTable:
    """The run's instrument table: ``[[instruments]]``, then the ``run.instruments`` file, then, with a market
    profile, the profile's own instrument for every symbol (its lot as the quantity step, its tick and fees,
    its calendar), so an A-share run resolves every symbol through the same table as a crypto run."""
    rows = instrument_rows(cfg)
    if market is not None:
        for i, row in enumerate(rows, 1):
            for key in ("qty_step", "tick", "commission"):
                if getattr(row, key) != getattr(Instrument(row.pattern), key):
                    raise ConfigError(f"instruments ({row.pattern}): market {market.name} sets {key} for its symbols; "
                                      "set it in [market] instead")
        rows.append(profile_instrument(market))
    return InstrumentTable(tuple(rows))


def profile_instrument(market: MarketProfile) -> Instrument:
    """The instrument a market profile stands for: every symbol (``*``), the profile's lot, tick and fees."""
    cls = {"cn-a": ("equity", "CNY", "cn-a")}.get(market.name, ("equity", "", ""))
    return Instrument("*", asset_class=cls[0], tick=market.tick, qty_step=float(market.lot_size),
                      currency=cls[1], commission=getattr(market, "commission", None), calendar=cls[2],
                      profile=market.name)


def build_risk(cfg: RunConfig, rules: FillRules, *, live: bool = False) -> RiskPipeline:
    """The risk pipeline of ``cfg`` (:mod:`tradeloop.risk.build`); ``live`` keeps reviews in ``live.state``."""
    return build_pipeline(cfg.risk, rules, allow_short=cfg.run.allow_short, state=cfg.live.state, live=live)


def run_id(cfg: RunConfig, strategy: str) -> str:
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{strategy}-{time.strftime('%Y%m%d-%H%M%S')}-{digest}"


DEFAULT_COMMISSION = {"kind": "percent", "rate": 0.0, "minimum": 0.0}


def market_profile(cfg: RunConfig) -> MarketProfile | None:
    """The profile ``run.market`` names, built from ``[market]``; None without one."""
    name = cfg.run.market
    if not name:
        if cfg.market != MarketSection():
            raise ConfigError("[market] is set but no market is chosen: give --market cn-a (or run.market)")
        return None
    if name not in PROFILES:
        raise ConfigError(f"unknown market {name!r} (known: {', '.join(sorted(PROFILES))})")
    if cfg.commission != DEFAULT_COMMISSION:
        raise ConfigError(f"market {name} sets its own fees: use [market] commission_rate, commission_min, "
                          "stamp_duty, transfer_fee instead of [commission] / --commission")
    if cfg.run.lot_size and cfg.run.lot_size != cfg.market.lot_size:
        raise ConfigError(f"run.lot_size {cfg.run.lot_size:g} differs from market.lot_size {cfg.market.lot_size}; "
                          "set the lot in [market]")
    m = cfg.market
    try:
        fees = AShareCommission(m.commission_rate, m.commission_min, m.stamp_duty, m.transfer_fee)
        for key in ("commission_rate", "commission_min", "stamp_duty", "transfer_fee"):
            if getattr(m, key) is not None and getattr(m, key) < 0:
                raise ValueError(f"{key} must not be negative, not {getattr(m, key)!r}")
        return ChinaAShares(lot_size=m.lot_size, t_plus_1=m.t_plus_1, tick=m.tick, main_limit=m.main_limit,
                            growth_limit=m.growth_limit, st_limit=m.st_limit, chinext_20pct_from=m.chinext_20pct_from,
                            st=frozenset(m.st), commission=fees)
    except ValueError as e:
        raise ConfigError(f"[market]: {e}") from None


def check_symbols(market: MarketProfile | None, symbols: list[str], instruments: InstrumentTable | None = None) -> None:
    """Every symbol must be one the market knows (an A-share code for cn-a); the instruments traded must be
    quoted in one currency."""
    if instruments:
        instruments.check_symbols(symbols)
    board = getattr(market, "board", None)
    if board is None:
        return
    for symbol in symbols:
        try:
            board(symbol)
        except ValueError as e:
            raise ConfigError(f"market {market.name}: {e}") from None


def build_actions(cfg: RunConfig, series: list[BarSeries], inputs: list[dict[str, Any]] | None = None,
                  log: Any = None) -> dict[str, Any]:
    """The corporate actions each input's prices call for (``data.actions.resolve``): symbol -> ActionTable.

    Sources: the file's own ``dividend`` / ``split`` columns, the input's ``actions`` file, then
    ``run.actions`` (for every input, rows matched by symbol). ``adjusted``: the input's setting, else
    ``run.adjusted``, else detected. Each input's manifest entry (``inputs``) gets a ``corporate_actions``
    note; where actions are listed for adjusted prices they are not applied and a warning is logged
    (``double_adjustment``). A malformed actions file is a DataError naming its file, line and field.
    """
    from tradeloop.data.actions import load_actions, resolve
    files: dict[str, dict[str, dict[int, tuple[float, float]]]] = {}

    def actions_of(path: str | None) -> dict[str, dict[int, tuple[float, float]]]:
        if not path:
            return {}
        if path not in files:
            files[path] = load_actions(path)
        return files[path]

    out: dict[str, Any] = {}
    for i, s in enumerate(series):
        if isinstance(s, TickSeries):   # tick inputs carry no corporate actions
            continue
        spec = cfg.data[i] if i < len(cfg.data) else None
        extra = {**actions_of(cfg.run.actions).get(s.symbol, {}),
                 **actions_of(spec.actions if spec is not None else None).get(s.symbol, {})}
        adjusted = spec.adjusted if spec is not None and spec.adjusted is not None else cfg.run.adjusted
        table, note = resolve(s, adjusted=adjusted, extra=extra)
        if note["listed"] == 0 and not extra:
            continue
        if "warning" in note and log is not None:
            log.warning("double_adjustment", symbol=s.symbol, listed=note["listed"], detail=note["warning"])
        if inputs is not None and i < len(inputs):
            inputs[i]["corporate_actions"] = note
        if len(table):
            out[s.symbol] = table
    return out


def build_rolls(cfg: RunConfig, series: list) -> list:
    """The run's futures rolls (``[[rolls]]``, engine/loop/rolls.py): by date, or by open interest between the
    two contracts' series; ConfigError naming ``rolls #N`` when a contract is not among the inputs or has no
    open_interest column."""
    from tradeloop.engine.config.run import roll_rows, to_ns
    from tradeloop.engine.loop.rolls import Roll, rolls_by_open_interest
    by_symbol = {s.symbol: s for s in series}
    out = []
    for i, raw in enumerate(roll_rows(cfg), 1):
        where = f"rolls #{i}"
        for key in ("from", "to"):
            if raw[key] not in by_symbol:
                raise ConfigError(f"{where}.{key}: {raw[key]!r} is not among the inputs "
                                  f"({', '.join(sorted(by_symbol)) or 'none'}): add its data")
        if "date" in raw:
            out.append(Roll(int(to_ns(raw["date"], f"{where}.date")), raw["from"], raw["to"]))
            continue
        try:
            found = rolls_by_open_interest([by_symbol[raw["from"]], by_symbol[raw["to"]]])
        except ValueError as e:
            raise ConfigError(f"{where}.by: {e}") from None
        if not found:
            raise ConfigError(f"{where}.by: {raw['to']}'s open interest never rises above {raw['from']}'s "
                              "in the data: no roll")
        out.extend(found)
    return sorted(out)
