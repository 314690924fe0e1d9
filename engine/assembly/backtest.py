"""``tradeloop backtest``: a ``RunConfig`` assembled (:mod:`.build`), run, measured and recorded.

Tests and notebooks can call :func:`backtest` too. When the strategy's own code fails, the run
folder is still written, with ``status: "failed"``, the error, the equity up to the failure and the
traceback in ``events.jsonl``; then the :class:`StrategyError` is raised (one line for the CLI).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import structlog

from tradeloop.brokers.quotes import QuoteRules
from tradeloop.brokers.instruments import periods_per_year
from tradeloop.errors import StrategyError

from tradeloop.data.schema import TickSeries
from tradeloop.engine.assembly.build import (build_actions, build_quotes, build_rolls, build_risk, build_rules, build_strategy,
                                             check_symbols, load_inputs, resolve_strategy, run_id, trade_from_ts)
from tradeloop.engine.config.run import RunConfig
from tradeloop.errors import ConfigError
from tradeloop.engine.drivers.backtest import no_steps, run_backtest
from tradeloop.engine.runs.result import BacktestResult
from tradeloop.engine.metrics.benchmark import benchmark_metrics, load_benchmark, span_of
from tradeloop.engine.metrics.gates import apply_gates, parse_gates
from tradeloop.engine.metrics.performance import compute_metrics
from tradeloop.engine.metrics.risk_events import risk_metrics
from tradeloop.engine.metrics.signals import signal_metrics
from tradeloop.engine.report.walkforward import write_run_report
from tradeloop.engine.runs.recorder import build_manifest, run_span, write_run
from tradeloop.engine.telemetry.logs import RunEvents, console_muted, run_events
from tradeloop.engine.telemetry.progress import LazyProgress


def backtest(cfg: RunConfig, *, out: Path | None = None, write: bool = True,
             progress: bool | None = None) -> tuple[BacktestResult, Path | None]:
    """Run the backtest ``cfg`` describes; write its folder (with its log events) unless ``write`` is False."""
    with run_events() as events:
        return _backtest(cfg, out=out, write=write, progress=progress, events=events)


def _backtest(cfg: RunConfig, *, out: Path | None, write: bool, progress: bool | None,
              events: RunEvents) -> tuple[BacktestResult, Path | None]:
    log = structlog.get_logger("tradeloop.backtest")
    cfg.validate()
    gates = parse_gates(cfg.gates)
    failure: StrategyError | None = None
    try:
        strategy = build_strategy(cfg)
    except StrategyError as e:   # its __init__ raised: recorded below as a failed run of no steps
        if not write:
            raise
        strategy, failure = None, e
    series, inputs = load_inputs(cfg, hashes=write)
    actions = build_actions(cfg, series, inputs, log)   # corporate actions to apply; notes into the manifest
    bench = (load_benchmark(cfg.run.benchmark, on_bad=cfg.run.on_bad, span=span_of(series))
             if cfg.run.benchmark else None)
    rules = build_rules(cfg)
    check_symbols(rules.market, [s.symbol for s in series], rules.instruments)
    risk = build_risk(cfg, rules)
    ticks = [s for s in series if isinstance(s, TickSeries)]
    quotes = build_quotes(cfg) if ticks else None
    rolls = build_rolls(cfg, series) if cfg.rolls else None   # [[rolls]]: futures rolls (engine/loop/rolls.py)
    if rolls and ticks:
        raise ConfigError("[[rolls]]: rolls are for bar inputs; this run has tick inputs")
    if failure is None:
        try:
            with LazyProgress("backtest", enabled=progress) as bar:
                if ticks:   # tick inputs: on_tick, quote fills (brokers/quotes.py); bars beside them go to on_bar
                    from tradeloop.engine.drivers.ticks import run_tick_backtest
                    result = run_tick_backtest(strategy, ticks, [s for s in series if not isinstance(s, TickSeries)],
                                               cash=cfg.run.cash, rules=rules, quotes=quotes, risk=risk,
                                               order_prefix=cfg.run.order_prefix, log=log, progress=bar,
                                               trade_from=trade_from_ts(cfg), partial_on_failure=True)
                else:
                    result = run_backtest(strategy, series, cash=cfg.run.cash, rules=rules, risk=risk,
                                          order_prefix=cfg.run.order_prefix, log=log, progress=bar,
                                          trade_from=trade_from_ts(cfg), partial_on_failure=True, actions=actions,
                                          rolls=rolls)
        except StrategyError as e:
            if not write:
                raise
            failure, result = e, e.result
    else:
        result = no_steps(series, cfg.run.cash)
    result.trade_from = trade_from = trade_from_ts(cfg)   # metrics over the traded span only
    P = periods_per_year(rules.instruments, [s.symbol for s in series])   # 365 for 24/7 markets, else 252
    result.metrics = compute_metrics(result.ts, result.equity, result.start_cash, result.fills,
                                     gross_exposure=result.gross_exposure, trade_from=trade_from, periods_per_year=P,
                                     multipliers={s.symbol: f.multiplier for s in series
                                                  if (f := rules.instruments.future(s.symbol)) is not None} or None)
    if bench is not None:
        result.metrics.update(benchmark_metrics(bench, result.ts, result.equity, result.start_cash,
                                                trade_from=trade_from, periods_per_year=P))
    result.metrics.update(risk_metrics(result.risk_events, result.tz))
    if failure is not None:
        target = Path(out or cfg.run.out or Path("runs") / run_id(cfg, cfg.run.strategy.rpartition(":")[2]))
        _write_failed(target, cfg, strategy, rules, result, inputs, bench, failure, events, log, quotes)
        raise failure
    log.info("backtest_done", strategy=cfg.run.strategy, bars=result.bars, fills=len(result.fills),
             final_value=round(result.final_value, 6), seconds=round(result.elapsed_s, 3))
    if not write:
        apply_gates(gates, result.metrics)
        return result, None
    target = Path(out or cfg.run.out or Path("runs") / run_id(cfg, cfg.run.strategy.rpartition(":")[2]))
    result.metrics.update(signal_metrics(target))
    apply_gates(gates, result.metrics)
    manifest = build_manifest("backtest", cfg, strategy, rules, inputs=inputs, benchmark=bench, models=result.models,
                              symbols=result.symbols, tz=result.tz, span=run_span(result.ts, trade_from))
    _add_quotes(manifest, quotes)
    if cfg.rolls:   # the rolls done (rolls.parquet holds them too); the stated ones are in config.rolls
        manifest["details"]["rolls"] = list(getattr(result, "rolls", None) or [])
    write_run(target, result, manifest, report=write_run_report, benchmark=bench, events=events)
    return result, target


def _add_quotes(manifest: dict, quotes: QuoteRules | None) -> None:
    """A tick run's quote rules (size limit, resting limits, latency) go beside its fill rules."""
    if quotes is not None:
        manifest["fill_rules"]["quotes"] = asdict(quotes)


def _write_failed(target: Path, cfg: RunConfig, strategy: object, rules: object, result: BacktestResult,
                  inputs: list, bench: object, failure: StrategyError, events: RunEvents, log: object,
                  quotes: QuoteRules | None = None) -> None:
    """The folder of a run its strategy ended: ``status: "failed"``, the error, what ran, the traceback
    in events.jsonl. The console stays quiet (the caller shows one line), so the message names the folder."""
    with console_muted():
        log.error("strategy_failed", error=str(failure), traceback=failure.detail, bars=result.bars)
        made = strategy if strategy is not None else resolve_strategy(cfg.run.strategy)
        manifest = build_manifest("backtest", cfg, made, rules,
                                  inputs=inputs, benchmark=bench, models=result.models, symbols=result.symbols,
                                  tz=result.tz, status="failed", error=str(failure),
                                  span=run_span(result.ts, result.trade_from),
                                  params=None if strategy is not None else dict(cfg.params))
        _add_quotes(manifest, quotes)
        write_run(target, result, manifest, report=write_run_report, benchmark=bench, events=events)
    failure.args = (f"{failure} (run folder {target}: status failed, traceback in {target / 'events.jsonl'})",)
