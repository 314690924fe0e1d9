"""``tradeloop backtest``: a ``RunConfig`` assembled (:mod:`.build`), run, measured and recorded.

Tests and notebooks can call :func:`backtest` too.
"""
from __future__ import annotations

from pathlib import Path

import structlog

from tradeloop.brokers.costs import describe
from tradeloop.engine.assembly.build import (build_risk, build_rules, build_strategy, check_symbols, load_inputs, run_id,
                                             trade_from_ts)
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.drivers.backtest import BacktestResult, run_backtest
from tradeloop.engine.metrics.benchmark import benchmark_metrics, load_benchmark, span_of, write_benchmark
from tradeloop.engine.metrics.gates import apply_gates, parse_gates
from tradeloop.engine.metrics.performance import compute_metrics
from tradeloop.engine.metrics.risk_events import risk_metrics
from tradeloop.engine.metrics.signals import signal_metrics
from tradeloop.engine.report.run import write_report
from tradeloop.engine.runs.recorder import package_versions, write_run
from tradeloop.engine.telemetry.logs import logs_run_events
from tradeloop.engine.telemetry.progress import LazyProgress


@logs_run_events
def backtest(cfg: RunConfig, *, out: Path | None = None, write: bool = True,
             progress: bool | None = None) -> tuple[BacktestResult, Path | None]:
    """Run the backtest ``cfg`` describes; write its folder unless ``write`` is False."""
    log = structlog.get_logger("tradeloop.backtest")
    gates = parse_gates(cfg.gates)
    strategy = build_strategy(cfg)
    cls = type(strategy)
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
