"""Turning a ``RunConfig`` into a finished backtest: load inputs, build the parts, run, write.

This is what ``tradeloop backtest`` calls; tests and notebooks can call it too.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from brokers.costs import COMMISSIONS, SLIPPAGES, build_model, describe
from brokers.sim import FillRules
from data.loaders import file_sha256, load_bars
from data.schema import BarSeries
from risk.pipeline import RiskPipeline

from .backtest import BacktestResult, run_backtest
from .benchmark import benchmark_metrics, load_benchmark, span_of, write_benchmark
from .config import ConfigError, DataSpec, RunConfig
from .gates import apply_gates, parse_gates
from .logs import logs_run_events
from .metrics import compute_metrics
from .progress import LazyProgress
from .report import write_report
from .riskbuild import build_pipeline, check_symbols, market_profile
from .riskrun import risk_metrics
from .runio import package_versions, write_run
from .signals import signal_metrics
from .strategy import Strategy


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
        module = importlib.import_module(f"strategies.{spec}")
    except ModuleNotFoundError as e:
        if e.name != f"strategies.{spec}":
            raise
        raise ConfigError(f"strategy {spec!r}: no such module in strategies/ (or give module:Class)") from None
    found = [c for c in vars(module).values()
             if inspect.isclass(c) and issubclass(c, Strategy) and c is not Strategy and c.__module__ == module.__name__]
    if len(found) != 1:
        raise ConfigError(f"strategy {spec!r}: strategies/{spec}.py defines {len(found)} strategies; use module:Class")
    return found[0]


def _import(name: str):
    if name.endswith(".py"):
        path = Path(name)
        if not path.exists():
            raise ConfigError(f"strategy file {name} not found")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise ConfigError(f"strategy module {name!r} not found") from None


def load_inputs(cfg: RunConfig, *, hashes: bool = True) -> tuple[list[BarSeries], list[dict[str, Any]]]:
    """Every input of the run as a BarSeries, plus its manifest entry (path, sha256, rows).

    ``hashes=False`` leaves the sha256 out, for runs that write no manifest (sweep points): hashing
    a large file costs about as much as parsing it.

    Files are parsed and hashed in a thread pool (polars and hashlib release the GIL); the
    result does not depend on the order the threads finish in, and the first failing input
    in the order given is the error reported.
    """
    if not cfg.data:
        raise ConfigError("no input data: give --data PATH (or [[data]] in the config)")
    catalog = None
    if cfg.run.catalog:
        from data.catalog import Catalog  # pyarrow is imported only when a catalog is used
        catalog = Catalog(cfg.run.catalog)
    for spec in cfg.data:
        if catalog is None and not Path(spec.path).exists():
            raise ConfigError(f"input file {spec.path} not found")

    def one(spec: DataSpec) -> tuple[BarSeries, dict[str, Any]]:
        if catalog is not None:
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
                         commission=commission, slippage=slippage, market=market)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_risk(cfg: RunConfig, rules: FillRules, *, live: bool = False) -> RiskPipeline:
    """The risk pipeline of ``cfg`` (see engine/riskbuild.py); ``live`` keeps reviews in ``live.state``."""
    return build_pipeline(cfg, rules, live=live)


def run_id(cfg: RunConfig, strategy: str) -> str:
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{strategy}-{time.strftime('%Y%m%d-%H%M%S')}-{digest}"


@logs_run_events
def backtest(cfg: RunConfig, *, out: Path | None = None, write: bool = True,
             progress: bool | None = None) -> tuple[BacktestResult, Path | None]:
    """Run the backtest ``cfg`` describes; write its folder unless ``write`` is False."""
    log = structlog.get_logger("tradeloop.backtest")
    cls = resolve_strategy(cfg.run.strategy)
    gates = parse_gates(cfg.gates)
    try:
        strategy = cls(**cfg.params)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    series, inputs = load_inputs(cfg, hashes=write)
    bench = (load_benchmark(cfg.run.benchmark, on_bad=cfg.run.on_bad, span=span_of(series))
             if cfg.run.benchmark else None)
    rules = build_rules(cfg)
    check_symbols(rules.market, [s.symbol for s in series])
    risk = build_risk(cfg, rules)
    with LazyProgress("backtest", enabled=progress) as bar:
        result = run_backtest(strategy, series, cash=cfg.run.cash, rules=rules, risk=risk,
                              order_prefix=cfg.run.order_prefix, log=log, progress=bar,
                              trade_from=trade_from_ts(cfg))
    result.metrics = compute_metrics(result.ts, result.equity, result.start_cash, result.fills,
                                     gross_exposure=result.gross_exposure)
    if bench is not None:
        result.metrics.update(benchmark_metrics(bench, result.ts, result.equity, result.start_cash))
    result.metrics.update(risk_metrics(result.risk_events, result.tz))
    log.info("backtest_done", strategy=cfg.run.strategy, bars=result.bars, fills=len(result.fills),
             final_value=round(result.final_value, 6), seconds=round(result.elapsed_s, 3))
    if not write:
        apply_gates(gates, result.metrics)
        return result, None
    target = Path(out or cfg.run.out or Path("runs") / run_id(cfg, cfg.run.strategy.rpartition(":")[2]))
    result.metrics.update(signal_metrics(target))
    apply_gates(gates, result.metrics)
    config = cfg.to_dict()
    config["run"].pop("out", None)  # where a run was written is not part of what it is
    manifest = {
        "config": config,
        "strategy": {"class": f"{cls.__module__}:{cls.__qualname__}", "params": strategy.params},
        "fill_rules": {"fill_at": rules.fill_at, "participation": rules.participation, "lot_size": rules.lot_size,
                       "commission": describe(rules.commission), "slippage": describe(rules.slippage),
                       "market": rules.market.describe() if rules.market is not None else None},
        "inputs": inputs + ([bench.entry] if bench is not None else []),
        "models": result.models,
        "seed": cfg.run.seed,
        "versions": package_versions(),
        "symbols": result.symbols,
        "tz": result.tz,
    }
    write_run(target, result, manifest)
    if bench is not None:
        write_benchmark(target, bench, result.ts, result.tz)
    write_report(target)
    return result, target
