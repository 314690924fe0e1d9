"""Walk-forward backtests: retrain on a rolling (or expanding) span, trade the span after it, stitch.

``tradeloop walkforward STRATEGY --data ... --train 2y --test 3m [--step 3m] [--embargo N]
[--anchored] [--warmup 6m] [--val 0.2] [--train-config train.toml] [--executor serial|process|dask]``

Windows (:mod:`tradeloop.engine.research.windows` gives the arithmetic): window k tests [test_start, test_end) and
trains on [train_start, train_end), where train_end lies ``embargo`` bars before test_start.

Per window, in this order:

1. Training (strategies that declare a ``model`` parameter, e.g. ``model_signal``): the bars of
   every input cut to [train_start, train_end) are all the training step ever sees: features and
   labels are computed from that slice alone, labels never read a bar at or after train_end, and
   the validation split (early stopping) is the last ``val`` of it. The model is registered as
   ``<train.name>-w<k>`` (k 1-based, 3 digits; one model name per window, so version numbers do
   not depend on which window finished first), and its metadata.json names the window under
   ``walkforward``. The embargo must be at least the label horizon (ConfigError otherwise); it
   defaults to the horizon. Training runs on the chosen executor, one work unit per window; a unit
   carries the run configuration (input file or catalog paths, never loaded frames) and the window,
   and writes its model to the registry, which must therefore be a path every worker can reach.
   Training uses a fixed thread count (``train.threads``, default 1), which makes the weights
   bit-identical whichever executor or process ran them. Strategies without a ``model`` parameter
   (``sma_cross``) skip this step. A training config with ``kind = "kline"`` trains a K-line
   forecaster instead (``models.kline.train.KlineTrainConfig``; e.g. ``forecast_trend``): tokenizer and
   transformer from scratch on the window's training span, validation on its last ``val`` part.
2. Backtest of the test span, in this process, one window after the other: the strategy sees bars
   from ``warmup_start`` (``--warmup`` before test_start, default 6m) so indicators and the
   predictor's feature windows are warm on the first test bar, but the engine refuses every order
   placed before test_start (``run.trade_from``, an engine option; the refused orders are counted
   per window as ``warmup_orders_refused``). Bars at or after test_end are cut off before it runs.

Stitching (:mod:`tradeloop.engine.research.stitch`): each window starts flat with the previous window's ending equity
as its cash (the first with ``run.cash``), so the test spans join into one continuous account; a
window's positions open at its last bar are handed off to cash at that bar's closes (no costs, one
``W<k>-HANDOFF`` fill per symbol). Because of this carry the backtests run in order; they are
cheap next to training, which runs in parallel. A window that fails (training or backtest) is
reported with its error in ``metrics.json`` and the report, is absent from the stitched curve, and
the next window starts with the last ending equity; the other windows finish.

The run folder (``runs/<id>/`` or ``--out``) holds what a backtest writes (engine/runs/recorder.py):
``manifest.json`` (``kind: walkforward``; its ``details`` hold the walk-forward spec, the training
settings and the windows with their models), ``metrics.json`` (the stitched run's metrics at the
top level, ``windows``: one entry per window with its spans, model, training accuracy and its own
metrics, and ``walkforward`` counts),
``equity.parquet``, ``fills.parquet``, ``orders.parquet``, ``order_events.parquet``,
``risk_events.parquet``, ``events.jsonl`` and one ``report.html`` with a table of the windows.
Nothing in them depends on the executor.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from tradeloop.errors import ConfigError

from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.research.executors import Executor, Result, call_unit, run_units
from tradeloop.engine.telemetry.logs import RunEvents, run_events
from tradeloop.engine.telemetry.progress import LazyProgress
from tradeloop.engine.research.stitch import Span, cut_span, handoff_fills, stitch
from tradeloop.engine.loop.strategy import Strategy
from tradeloop.engine.research.windows import Window, WindowSpec, iso, make_windows, to_ns

#: training keys the walk-forward sets per window; a training config must not give them
PER_WINDOW_KEYS = ("data", "symbols", "train_start", "train_end", "val_end", "test_end", "progress")
DEFAULT_HORIZON = 5  # models.train.TrainConfig's default label horizon


@dataclass
class WindowOutcome:
    """What happened to one window: its span (when it ran), model and training metrics, or its error."""

    window: Window
    model: str | None = None
    training: dict[str, Any] | None = None
    span: Span | None = None
    error: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def entry(self) -> dict[str, Any]:
        """This window's entry in ``metrics.json``: spans, model, status, training accuracy, metrics."""
        out: dict[str, Any] = {**self.window.describe(), "status": "ok" if self.ok else "error",
                               "error": self.error, "model": self.model, "training": self.training}
        if self.span is not None:
            out["warmup_orders_refused"] = self.span.refused
            out["metrics"] = self.span.metrics()
        return out


@dataclass
class WalkForwardResult:
    """The stitched run, every window's outcome, the summary written to metrics.json, and where."""

    result: Any            # engine.backtest.BacktestResult of the stitched test spans
    windows: list[WindowOutcome]
    out: Path | None
    seconds: float
    executor: str


# ------------------------------------------------------------------------------ configuration
def takes_model(cls: type[Strategy]) -> bool:
    """A strategy trains per window when it declares a ``model`` parameter."""
    return "model" in cls.declared_params()


def training_config(train: dict[str, Any] | None, strategy: str, needs_model: bool) -> dict[str, Any] | None:
    """The user's training settings checked and completed (name, threads); None for strategies without a model."""
    if not needs_model:
        if train:
            raise ConfigError(f"strategy {strategy!r} has no 'model' parameter, so it trains nothing: "
                              "remove the training config ([train] / --train-config)")
        return None
    if not train:
        raise ConfigError(f"strategy {strategy!r} takes a model: give a training config ([train] in --config, "
                          "or --train-config FILE with the keys of models.train.TrainConfig)")
    given = sorted(set(train) & set(PER_WINDOW_KEYS))
    if given:
        raise ConfigError(f"training config: {', '.join(given)} set per window by the walk-forward; remove them")
    out = dict(train)
    out.setdefault("name", f"wf-{strategy.rpartition(':')[2].rpartition('/')[2].removesuffix('.py')}")
    if out.get("threads") is None:
        out["threads"] = 1
    out["registry"] = str(Path(str(out.get("registry", "runs/models"))).resolve())  # workers may run elsewhere
    from tradeloop.models.errors import ModelError
    from tradeloop.models.train import TrainConfig, _validate
    try:  # every key and value checked now, with placeholder dates, not once per window
        if out.get("kind") == "kline":
            from tradeloop.models.kline.train import KlineTrainConfig
            KlineTrainConfig.from_dict({**out, "data": ["-"], "train_end": "2001-01-01", "val_end": "2002-01-01"})
            return out
        _validate(TrainConfig.from_dict({**out, "data": ["-"], "train_end": "2001-01-01", "val_end": "2002-01-01"}))
    except ModelError as e:
        raise ConfigError(str(e)) from None
    return out


def check_embargo(spec: WindowSpec, train: dict[str, Any] | None, embargo_given: bool) -> WindowSpec:
    """The spec with its embargo defaulted to the label horizon, or a ConfigError when it is shorter."""
    if train is None:
        return spec
    horizon = int(train.get("horizon", DEFAULT_HORIZON))
    if not embargo_given:
        return WindowSpec(**{**spec.to_dict(), "embargo": horizon})
    if spec.embargo < horizon:
        raise ConfigError(f"--embargo {spec.embargo} is smaller than the label horizon ({horizon} bars): the labels "
                          f"of the last training bars look {horizon} bars ahead, so the embargo between training "
                          f"and test must be at least {horizon} bars (use --embargo {horizon} or more)")
    return spec


def _absolute(cfg: RunConfig) -> RunConfig:
    """A copy whose local paths are absolute (training units may run in another folder or process)."""
    from tradeloop.engine.research.sweep import _absolute as absolute
    return absolute(cfg)


# ------------------------------------------------------------------------------ training unit
def _finite(x: Any) -> Any:
    return x if not isinstance(x, float) or math.isfinite(x) else None


def train_window(unit: dict[str, Any]) -> dict[str, Any]:
    """Train and register one window's model from the inputs cut to its training span (runs on any executor)."""
    from tradeloop.models.registry import Registry
    from tradeloop.models.train import TrainConfig, train

    from tradeloop.engine.assembly.build import load_inputs
    cfg = RunConfig.from_dict(unit["config"], f"walk-forward window {unit['window']['index'] + 1}")
    w = Window.from_dict(unit["window"])
    series, _ = load_inputs(cfg, hashes=False)
    cut = [s for s in (s.between(w.train_start, w.train_end) for s in series) if len(s)]
    if not cut:
        raise ValueError(f"no bars in the training span {iso(w.train_start)} .. {iso(w.train_end)}")
    if unit["train"].get("kind") == "kline":
        return _train_forecaster_window(unit, w, cut)
    tc = TrainConfig.from_dict({**unit["train"], "name": unit["model"],
                                "data": [s.source or s.symbol for s in cut], "symbols": [s.symbol for s in cut],
                                "train_start": iso(w.train_start), "train_end": iso(w.fit_end),
                                "val_end": iso(w.train_end), "test_end": None, "progress": False})
    ref = train(tc, cut, metadata={"walkforward": {**w.describe(), "run": unit["run"]}})
    m = Registry(tc.registry).info(ref).metadata.get("metrics", {})
    val = m.get("val") or {}
    return {"model": ref, "training": {
        "epochs_run": m.get("epochs_run"), "train_n": (m.get("train") or {}).get("n"), "val_n": val.get("n"),
        "train_accuracy": _finite((m.get("train") or {}).get("accuracy")), "val_accuracy": _finite(val.get("accuracy")),
        "val_baseline_majority": _finite(val.get("baseline_majority"))}}


def _train_forecaster_window(unit: dict[str, Any], w: Window, cut: list[Any]) -> dict[str, Any]:
    """A K-line forecaster trained on the window's training span (validation: its last part) and registered."""
    from tradeloop.models.kline.train import KlineTrainConfig, train_forecaster
    from tradeloop.models.registry import Registry

    tc = KlineTrainConfig.from_dict({**unit["train"], "name": unit["model"],
                                     "data": [s.source or s.symbol for s in cut],
                                     "symbols": [s.symbol for s in cut], "train_start": iso(w.train_start),
                                     "train_end": iso(w.fit_end), "progress": False,
                                     "val_end": iso(w.train_end) if w.train_end > w.fit_end else None})
    ref = train_forecaster(tc, cut, metadata={"walkforward": {**w.describe(), "run": unit["run"]}})
    m = Registry(tc.registry).info(ref).metadata.get("metrics", {})
    val = (m.get("transformer") or {}).get("val") or {}
    return {"model": ref, "training": {
        "train_n": (m.get("windows") or {}).get("train"), "val_n": val.get("n"),
        "val_coarse_ce": _finite(val.get("coarse_ce")), "val_fine_ce": _finite(val.get("fine_ce")),
        "train_accuracy": None, "val_accuracy": None}}


# ------------------------------------------------------------------------------- backtest step
def backtest_window(cfg: RunConfig, cls: type[Strategy], series: list[Any], w: Window, cash: float,
                    model: str | None, registry: str | None, log: Any) -> Span:
    """Backtest [warmup_start, test_end) from ``cash``, trading from test_start; its test span."""
    from tradeloop.engine.drivers.backtest import run_backtest
    from tradeloop.engine.assembly.build import build_risk, build_rules, make_strategy
    params = dict(cfg.params)
    if model is not None:
        params["model"] = model
        if "registry" in cls.declared_params():
            params["registry"] = registry
    strategy = make_strategy(cls, params)
    cut = [s for s in (s.between(w.warmup_start, w.test_end) for s in series) if len(s)]
    if not any(len(s.between(w.test_start, w.test_end)) for s in cut):
        raise ValueError(f"no bars in the test span {iso(w.test_start)} .. {iso(w.test_end)}")
    rules = build_rules(cfg)
    result = run_backtest(strategy, cut, cash=cash, rules=rules, risk=build_risk(cfg, rules),
                          order_prefix=f"W{w.index + 1:03d}{cfg.run.order_prefix}", log=log, trade_from=w.test_start,
                          partial_on_failure=True)   # a failure names the strategy's file and line
    return cut_span(result, w)


# --------------------------------------------------------------------------------------- run
def _timeline(series: list[Any]) -> np.ndarray:
    return np.unique(np.concatenate([s.ts for s in series])) if series else np.empty(0, np.int64)


def train_windows(outcomes: list[WindowOutcome], units: list[dict[str, Any]], executor: Executor | str, *,
                  workers: int | None, address: str | None, progress: bool | None, log: Any) -> None:
    """Step 1: train every window's model on the executor; record each model or error in ``outcomes``."""
    results = run_units(train_window, units, executor, label="walk-forward: training", workers=workers,
                        address=address, progress=progress)
    for o, r in zip(outcomes, results):
        if r.ok:
            o.model, o.training = r.value["model"], r.value["training"]
        else:
            o.error, o.detail = f"training: {r.error}", r.detail
            log.warning("walkforward_window_failed", window=o.window.index + 1, step="training", error=r.error)


def backtest_windows(outcomes: list[WindowOutcome], cfg: RunConfig, cls: type[Strategy], series: list[Any],
                     registry: str | None, *, progress: bool | None, log: Any) -> None:
    """Step 2: backtest the windows in order, each from the last ending equity; a failure skips its window."""
    cash = float(cfg.run.cash)
    with LazyProgress("walk-forward: backtests", enabled=progress) as bar:
        for n, o in enumerate(outcomes, 1):
            if o.ok and not cash > 0:
                o.error = f"backtest: the account is ruined (equity {cash}) before this window"
            elif o.ok:
                r: Result = call_unit(lambda w, c=cash, m=o.model: backtest_window(cfg, cls, series, w, c, m,
                                                                                 registry, log),
                                      o.window.index, o.window)
                if r.ok:
                    o.span = r.value
                    cash = o.span.final_value
                    log.info("walkforward_window", window=o.window.index + 1, test_start=iso(o.window.test_start),
                             model=o.model, final_value=round(cash, 6))
                else:
                    o.error, o.detail = f"backtest: {r.error}", r.detail
                    log.warning("walkforward_window_failed", window=o.window.index + 1, step="backtest",
                                error=r.error)
            bar(n, len(outcomes))


def stitched_result(outcomes: list[WindowOutcome], series: list[Any], cash: float, bench: Any,
                    periods_per_year: int = 252) -> Any:
    """Step 3: hand-offs, the stitched BacktestResult and its metrics (combined, per window, counts)."""
    from tradeloop.engine.metrics.benchmark import benchmark_metrics
    from tradeloop.engine.metrics.performance import compute_metrics
    from tradeloop.engine.metrics.risk_events import risk_metrics
    spans = [o.span for o in outcomes if o.span is not None]
    for span in spans:
        span.periods_per_year = periods_per_year   # per-window metrics annualise like the stitched run
    for span in spans[:-1]:
        span.handoff = handoff_fills(span, series)
    result = stitch(spans, cash, sorted(s.symbol for s in series), series[0].tz if series else None)
    if spans:
        result.metrics = compute_metrics(result.ts, result.equity, result.start_cash, result.fills,
                                         gross_exposure=result.gross_exposure, periods_per_year=periods_per_year)
        if bench is not None:
            result.metrics.update(benchmark_metrics(bench, result.ts, result.equity, result.start_cash,
                                                    periods_per_year=periods_per_year))
    result.metrics.update(risk_metrics(result.risk_events, result.tz))
    result.metrics["windows"] = [o.entry() for o in outcomes]
    result.metrics["walkforward"] = {"windows": len(outcomes), "ok": sum(o.ok for o in outcomes),
                                     "failed": sum(not o.ok for o in outcomes),
                                     "warmup_orders_refused": sum(s.refused for s in spans)}
    return result


def run_walkforward(cfg: RunConfig, spec: WindowSpec, train: dict[str, Any] | None = None, *,
                    embargo_given: bool | None = None, executor: Executor | str = "process",
                    workers: int | None = None, address: str | None = None, out: str | Path | None = None,
                    write: bool = True, progress: bool | None = None) -> tuple[WalkForwardResult, Path | None]:
    """Run the walk-forward ``spec`` of ``cfg``; write the stitched run folder (with its log events) unless
    ``write`` is False.

    ``embargo_given`` False (default: True when ``spec.embargo`` is non-zero) lets a model's
    embargo default to its label horizon.
    """
    with run_events() as events:
        return _run_walkforward(cfg, spec, train, embargo_given=embargo_given, executor=executor, workers=workers,
                                address=address, out=out, write=write, progress=progress, events=events)


def _run_walkforward(cfg: RunConfig, spec: WindowSpec, train: dict[str, Any] | None, *, embargo_given: bool | None,
                     executor: Executor | str, workers: int | None, address: str | None, out: str | Path | None,
                     write: bool, progress: bool | None, events: RunEvents) -> tuple[WalkForwardResult, Path | None]:
    from tradeloop.engine.metrics.benchmark import load_benchmark, span_of
    from tradeloop.engine.metrics.gates import apply_gates, parse_gates
    from tradeloop.engine.assembly.build import build_rules, check_symbols, load_inputs, resolve_strategy, run_id
    log = structlog.get_logger("tradeloop.walkforward")
    t0 = time.perf_counter()
    cfg.validate()
    cls = resolve_strategy(cfg.run.strategy)
    gates = parse_gates(cfg.gates)
    train = training_config(train, cfg.run.strategy, takes_model(cls))
    if train is None:   # the parameters are those of every window: refused once, before any window runs
        from tradeloop.engine.assembly.build import make_strategy
        make_strategy(cls, dict(cfg.params))
    spec = check_embargo(spec, train, spec.embargo != 0 if embargo_given is None else embargo_given)
    run_out = out or cfg.run.out
    cfg = _absolute(cfg)
    for key in ("start", "end"):  # a TOML date (--set run.start=2010-01-01) is kept as its ISO text
        value = getattr(cfg.run, key)
        if value is not None and not isinstance(value, str):
            setattr(cfg.run, key, value.isoformat())
    cfg.run.trade_from = None  # the walk-forward sets it per window
    series, inputs = load_inputs(cfg)
    rules = build_rules(cfg)
    check_symbols(rules.market, [s.symbol for s in series], rules.instruments)
    windows = make_windows(spec, _timeline(series), to_ns(cfg.run.start, "run.start") if cfg.run.start else None)
    bench = (load_benchmark(cfg.run.benchmark, on_bad=cfg.run.on_bad, span=span_of(series))
             if cfg.run.benchmark else None)
    rid = Path(run_out).name if run_out else run_id(cfg, f"wf-{cfg.run.strategy.rpartition(':')[2]}")
    outcomes = [WindowOutcome(w) for w in windows]
    ex_name = executor if isinstance(executor, str) else executor.name
    log.info("walkforward_start", strategy=cfg.run.strategy, windows=len(windows), training=train is not None,
             executor=ex_name, first_test=iso(windows[0].test_start), last_test_end=iso(windows[-1].test_end))
    t1 = time.perf_counter()
    if train is not None:
        units = [{"index": w.index, "window": w.to_dict(), "config": cfg.to_dict(), "train": train,
                  "model": f"{train['name']}-w{w.index + 1:03d}", "run": rid} for w in windows]
        train_windows(outcomes, units, executor, workers=workers, address=address, progress=progress, log=log)
    t2 = time.perf_counter()
    backtest_windows(outcomes, cfg, cls, series, train["registry"] if train is not None else None,
                     progress=progress, log=log)
    t3 = time.perf_counter()
    from tradeloop.brokers.instruments import periods_per_year
    result = stitched_result(outcomes, series, cfg.run.cash, bench,
                             periods_per_year(rules.instruments, [s.symbol for s in series]))
    apply_gates(gates, result.metrics)
    wf = WalkForwardResult(result, outcomes, None, time.perf_counter() - t0, ex_name)
    log.info("walkforward_done", strategy=cfg.run.strategy, windows=len(outcomes),
             failed=result.metrics["walkforward"]["failed"], final_value=round(result.final_value, 6),
             executor=ex_name, seconds=round(wf.seconds, 3), setup_s=round(t1 - t0, 3), train_s=round(t2 - t1, 3),
             backtest_s=round(t3 - t2, 3))
    if not write:
        return wf, None
    if not any(o.span is not None for o in outcomes):
        raise ConfigError("walk-forward: every window failed; nothing to write: "
                          + "; ".join(f"window {o.window.index + 1}: {o.error}" for o in outcomes[:3]))
    wf.out = write_walkforward(Path(run_out or Path("runs") / rid), wf, cfg, spec, train, cls, inputs, bench,
                               events)
    return wf, wf.out


def write_walkforward(target: Path, wf: WalkForwardResult, cfg: RunConfig, spec: WindowSpec,
                      train: dict[str, Any] | None, cls: type[Strategy], inputs: list[dict[str, Any]],
                      bench: Any, events: RunEvents | None = None) -> Path:
    """Step 4: the run folder (:func:`tradeloop.engine.runs.recorder.write_run`), its details the spec, training and windows."""
    from tradeloop.engine.assembly.build import build_rules
    from tradeloop.engine.report.walkforward import write_run_report
    from tradeloop.engine.runs.recorder import build_manifest, run_span, write_run
    result = wf.result
    first = next((o.span for o in wf.windows if o.span is not None), None)
    span = run_span(result.ts, None, first.warmup_from if first is not None else None)
    details = {"spec": spec.to_dict(), "training": train,
               "windows": [{**o.window.describe(), "model": o.model} for o in wf.windows]}
    failed = [o for o in wf.windows if not o.ok]   # a run with failed windows did not do what it was asked
    error = "; ".join(f"window {o.window.index + 1}: {o.error}" for o in failed) or None
    manifest = build_manifest("walkforward", cfg, cls, build_rules(cfg), params=dict(cfg.params), inputs=inputs,
                              benchmark=bench, models=result.models, symbols=result.symbols, tz=result.tz,
                              status="failed" if failed else "completed", error=error,
                              details=details, model_packages=train is not None, span=span)
    return write_run(target, result, manifest, report=write_run_report, benchmark=bench, events=events)
