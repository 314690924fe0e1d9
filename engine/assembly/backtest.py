"""``tradeloop backtest``: a ``RunConfig`` assembled (:mod:`.build`), run, measured and recorded.

Tests and notebooks can call :func:`backtest` too.
"""
from __future__ import annotations

from pathlib import Path

import structlog

from tradeloop.engine.assembly.build import (build_risk, build_rules, build_strategy, check_symbols, load_inputs, run_id,
                                             trade_from_ts)
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.runs.result import BacktestResult
from tradeloop.engine.metrics.benchmark import benchmark_metrics, load_benchmark, span_of
from tradeloop.engine.metrics.gates import apply_gates, parse_gates
from tradeloop.engine.metrics.performance import compute_metrics
from tradeloop.engine.metrics.risk_events import risk_metrics
from tradeloop.engine.metrics.signals import signal_metrics
from tradeloop.engine.report.walkforward import write_run_report
from tradeloop.engine.runs.recorder import build_manifest, write_run
from tradeloop.engine.telemetry.logs import RunEvents, run_events
from tradeloop.engine.telemetry.progress import LazyProgress


def backtest(cfg: RunConfig, *, out: Path | None = None, write: bool = True,
             progress: bool | None = None) -> tuple[BacktestResult, Path | None]:
    """Run the backtest ``cfg`` describes; write its folder (with its log events) unless ``write`` is False."""
    with run_events() as events:
        return _backtest(cfg, out=out, write=write, progress=progress, events=events)


def _backtest(cfg: RunConfig, *, out: Path | None, write: bool, progress: bool | None,
              events: RunEvents) -> tuple[BacktestResult, Path | None]:
    log = structlog.get_logger("tradeloop.backtest")
    gates = parse_gates(cfg.gates)
    strategy = build_strategy(cfg)
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
    manifest = build_manifest("backtest", cfg, strategy, rules, inputs=inputs, benchmark=bench, models=result.models,
                              symbols=result.symbols, tz=result.tz)
    write_run(target, result, manifest, report=write_run_report, benchmark=bench, events=events)
    return result, target
