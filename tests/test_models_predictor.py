"""Specification of models.predictor and strategies.model_signal: one batched model call per
timestamp over every requested symbol with a full window; the streaming path equals the batch
(precomputed) path; the model_signal strategy runs end to end in a backtest; the worked example
trains on one period and backtests the next; importing engine/models/the strategy never imports
torch."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tradeloop.data.loaders import load_bars
from tradeloop.data.schema import Bar
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.models.errors import FeatureError, ModelError
from tradeloop.models.predictor import BUCKETS, Predictor, bucket, predict_series, softmax
from tradeloop.models.registry import Registry
from tradeloop.strategies.model_signal import ModelSignal, train_and_backtest
from tests.test_models_support import TINY_NET, needs_models_extra, qbot, trained

REPO = Path(__file__).resolve().parents[1]


class Counting:
    """A model wrapper that counts calls and batch sizes."""

    def __init__(self, model) -> None:
        self.model, self.spec, self.batches = model, model.spec, []

    def predict(self, windows):
        self.batches.append(len(windows))
        return self.model.predict(windows)


def three_symbols(start: str = "2012-01-01", end: str = "2013-06-01"):
    lo, hi = (int(np.datetime64(d, "ns").astype(np.int64)) for d in (start, end))
    return [load_bars(qbot(n)).between(lo, hi) for n in ("600519.SH", "000858.SZ", "300059.SZ")]


def timeline(series):
    """Bars grouped by timestamp, as the engine hands them over."""
    by_ts: dict[int, list[Bar]] = {}
    for s in series:
        for i in range(len(s)):
            by_ts.setdefault(int(s.ts[i]), []).append(s.bar(i))
    return [by_ts[t] for t in sorted(by_ts)]


def amounts(series, bars) -> dict[str, float]:
    """The amount column's value of each bar (Bar has no amount; the engine reads ctx.field('amount'))."""
    by = {s.symbol: s for s in series}
    return {b.symbol: float(by[b.symbol].extra["amount"][np.searchsorted(by[b.symbol].ts, b.ts)]) for b in bars}


def test_one_batched_call_per_timestamp_over_the_symbols_with_full_windows():
    root, ref = trained("tiny")
    model = Counting(Registry(root).load(ref, "onnx-cpu"))
    series = three_symbols()
    pred = Predictor(model, [s.symbol for s in series])
    need = model.spec.min_bars
    seen = {s.symbol: 0 for s in series}
    for bars in timeline(series):
        before = len(model.batches)
        out = pred.step(bars)
        for b in bars:
            seen[b.symbol] += 1
        ready = sorted(b.symbol for b in bars if seen[b.symbol] >= need)
        assert sorted(out) == ready                                   # warming-up symbols are left out
        assert len(model.batches) - before == (1 if ready else 0)     # one call for all of them
        if ready:
            assert model.batches[-1] == bucket(len(ready))            # padded to a warmed-up batch size
        for p in out.values():
            assert p.shape == (2,) and abs(p.sum() - 1.0) < 1e-9
    assert pred.calls == len(model.batches)


def test_live_batches_are_padded_to_bucket_sizes_without_changing_any_prediction():
    root, ref = trained("tiny")
    model = Counting(Registry(root).load(ref, "onnx-cpu"))
    series = three_symbols("2012-01-01", "2012-09-01")
    padded, plain = Predictor(model, [s.symbol for s in series]), Predictor(model, [s.symbol for s in series])
    plain.max_batch = 1   # one window per call: nothing to pad
    for bars in timeline(series):
        a, b = padded.step(bars), plain.step(bars)
        assert a.keys() == b.keys()
        for sym in a:
            np.testing.assert_allclose(a[sym], b[sym], atol=1e-6)
    assert set(model.batches) <= set(BUCKETS) and 4 in model.batches       # 3 symbols ran as 4
    assert [bucket(n) for n in (1, 3, 5, 64, 65, 4096, 5000)] == [1, 4, 8, 64, 128, 4096, 5000]


def test_warm_up_runs_every_model_at_every_live_batch_size_untimed():
    """A runtime's first call at a new batch size builds its kernels (~10 ms for oneDNN bf16 vs ~2
    after): live, those first calls would land in the latency window and could trip the p99 limit."""
    from tradeloop.models.health import HealthLimits, HealthMonitor

    root, _ = trained("tiny")
    reg = Registry(root)
    primary, backup = Counting(reg.load("tiny@v0001", "onnx-cpu")), Counting(reg.load("tiny@v0002", "onnx-cpu"))
    monitor = HealthMonitor(primary, backup, HealthLimits())
    pred = Predictor(monitor, [f"S{i}" for i in range(5)], primary.spec)
    assert pred.warm_up() == 2 * 4
    assert primary.batches == backup.batches == [1, 2, 4, 8]
    assert np.isnan(monitor.p99_ms)   # nothing was timed


def test_the_engine_warms_the_predictor_up_live_and_precomputes_in_backtests(monkeypatch):
    import asyncio

    from tradeloop.engine.drivers.live import LiveDriver

    root, ref = trained("tiny")
    warmed: list[int] = []
    real = Predictor.warm_up
    monkeypatch.setattr(Predictor, "warm_up", lambda self: warmed.append(real(self)) or warmed[-1])
    series = three_symbols("2013-01-01", "2013-03-01")
    run_backtest(ModelSignal(model=ref, registry=root), series)
    assert warmed == []
    driver = LiveDriver(ModelSignal(model=ref, registry=root), [s.symbol for s in series])

    async def bars():
        for s in series:
            yield s.bar(0)

    asyncio.run(driver.run(bars()))
    assert warmed == [len([1, 2, 4])]   # 3 symbols: batch sizes 1, 2 and 4, no backup


def test_streaming_predictions_equal_the_batch_path():
    root, ref = trained("tiny")
    model = Registry(root).load(ref, "onnx-cpu")
    series = three_symbols()
    pred = Predictor(model, [s.symbol for s in series])
    batch = {s.symbol: predict_series(model, s) for s in series}
    rows = {s.symbol: -1 for s in series}
    for bars in timeline(series):
        out = pred.step(bars, amounts(series, bars))
        for b in bars:
            rows[b.symbol] += 1
        for sym, p in out.items():
            np.testing.assert_allclose(p, batch[sym][rows[sym]], atol=1e-6)
    # the precomputed path answers by row with the same numbers
    pre = Predictor(model, [s.symbol for s in series])
    pre.precompute(series)
    bars = [s.bar(len(s) - 1) for s in series]
    last = pre.step(bars, rows={s.symbol: len(s) - 1 for s in series})
    for s in series:
        np.testing.assert_allclose(last[s.symbol], batch[s.symbol][-1])


@pytest.mark.parametrize("runtime", ["onnx-cpu", "torch-cpu-bf16"])
def test_precompute_on_several_threads_gives_what_one_thread_gives(runtime):
    """Backtests precompute on every core (tasks of windows over worker threads): same numbers."""
    root, ref = trained("tiny")
    model = Registry(root).load(ref, runtime)
    series = three_symbols()
    syms = [s.symbol for s in series]
    one = Predictor(model, syms, batch_workers=1).precompute(series)
    many = Predictor(model, syms, batch_workers=3).precompute(series)
    small = Predictor(model, syms, batch_workers=2, batch_task=37).precompute(series)  # other batchings
    for s in series:
        np.testing.assert_array_equal(many[s.symbol], one[s.symbol])
        np.testing.assert_allclose(small[s.symbol], one[s.symbol], atol=1e-5)
        np.testing.assert_allclose(one[s.symbol], predict_series(model, s), atol=1e-6 if runtime == "onnx-cpu" else 1e-2)
    with pytest.raises(ValueError, match="batch workers must be an integer >= 1"):
        Predictor(model, syms, batch_workers=0)


class OnDevice:
    """A model that takes windows already on a (here: CPU) torch device, like torch-cuda."""

    on_device = True

    def __init__(self, model) -> None:
        self.model, self.spec, self.device_calls = model, model.spec, 0

    def predict(self, windows):
        return self.model.predict(windows)

    def predict_device(self, windows):
        self.device_calls += 1
        return self.model.predict(windows.numpy())


def test_device_ring_path_gives_the_same_predictions_as_the_host_path():
    """The torch-cuda path (feature rows mirrored into a device ring, windows gathered there), run on the CPU."""
    needs_models_extra()
    from tradeloop.models.runtime.torch_cuda import GpuFeatureRing

    root, ref = trained("tiny")
    base = Registry(root).load(ref, "onnx-cpu")
    series = three_symbols()
    syms = sorted(s.symbol for s in series)
    host = Predictor(base, syms)
    dev_model = OnDevice(base)
    dev = Predictor(dev_model, syms, device_ring=GpuFeatureRing(3, 16, 16, device="cpu"))
    for bars in timeline(series):
        a, b = host.step(bars, amounts(series, bars)), dev.step(bars, amounts(series, bars))
        assert a.keys() == b.keys()
        for s in a:
            assert np.array_equal(a[s], b[s])
    assert dev_model.device_calls == dev.calls > 0


def test_request_and_run_answer_only_the_requested_symbols():
    root, ref = trained("tiny")
    series = three_symbols()
    pred = Predictor(Registry(root).load(ref, "onnx-cpu"), [s.symbol for s in series])
    for bars in timeline(series):
        pred.update_bars(bars)
    pred.request("600519.SH")
    assert list(pred.run()) == ["600519.SH"]
    assert pred.run() == {}  # requests are consumed by a run
    with pytest.raises(ModelError, match="unknown symbol 'AAPL'"):
        pred.request("AAPL")


def test_softmax_is_stable():
    p = softmax(np.array([[1000.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(p, [[1.0, 0.0], [0.5, 0.5]])


# -- the strategy --------------------------------------------------------------------------------

class Recording(ModelSignal):
    """ModelSignal that also records every probability it acted on."""

    def on_start(self, ctx):
        super().on_start(ctx)
        self.seen: list[tuple[int, str, float]] = []

    def on_bars(self, ctx, bars):
        super().on_bars(ctx, bars)
        for s, p in ctx.predictions.items():
            if any(b.symbol == s for b in bars):
                self.seen.append((ctx.now, s, float(p[1])))


def test_model_signal_runs_end_to_end_in_a_backtest():
    root, ref = trained("tiny")
    series = three_symbols("2013-01-01", "2015-01-01")
    strategy = Recording(model=ref, registry=root, enter=0.5, exit=0.5)
    result = run_backtest(strategy, series, cash=1_000_000)
    assert strategy.decisions > 0 and result.fills
    model = Registry(root).load(ref, "onnx-cpu")
    batch = {s.symbol: (s.ts, predict_series(model, s)) for s in series}
    for ts, sym, up in strategy.seen[::25]:
        tss, probs = batch[sym]
        assert up == pytest.approx(probs[int(np.searchsorted(tss, ts)), 1], abs=1e-6)
    first = min(ts for ts, _, _ in strategy.seen)
    assert all(f.ts > first for f in result.fills)  # an order on bar t fills at t+1 at the earliest
    assert strategy.health_events == []


def test_the_run_log_says_which_runtime_path_computed_the_predictions():
    """bf16 results differ in the last digits between the native kernels and the torch path, so the
    run's events say which one ran (and whether oneDNN fused the linears)."""
    from structlog.testing import capture_logs

    from tradeloop.models.runtime.native import load_kernels

    root, ref = trained("tiny")
    with capture_logs() as logs:
        run_backtest(ModelSignal(model=ref, registry=root, runtime="torch-cpu-bf16"), three_symbols(), cash=1_000_000)
    loaded = [e for e in logs if e["event"] == "predictor_loaded"]
    assert len(loaded) == 1
    assert loaded[0]["runtime"] == "torch-cpu-bf16" and loaded[0]["device"] == "cpu" and loaded[0]["threads"] == 1
    assert loaded[0]["native"] is (load_kernels() is not None) and isinstance(loaded[0]["fused"], bool)


def test_the_run_manifest_names_the_model_version_that_ran_not_just_latest(tmp_path):
    """A later version under the same name must not make an old run unexplainable: the manifest
    records the version ``@latest`` resolved to, its runtime and feature hash."""
    import json

    from tradeloop.engine.cli.main import main

    root, ref = trained("tiny")
    data = qbot("600519.SH")
    assert main(["backtest", "model_signal", "--data", str(data), "--param", "model=tiny@latest",
                 "--param", f"registry={root}", "--set", "run.trade_from=2013-01-01", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    (used,) = manifest["models"]
    info = Registry(root).info("tiny@latest")
    assert used["requested"] == "tiny@latest" and used["version"] == ref == str(info.ref)
    assert used["runtime"] == "onnx-cpu" and used["device"] == "cpu" and used["backup"] is None
    assert used["feature_hash"] == info.spec.hash and used["created_at"] == info.metadata["created_at"]


def test_a_live_health_switch_is_a_risk_event_of_the_run():
    """The engine records the monitor's switch to the backup in the run's audit trail (logged,
    written to risk_events.parquet, shown in the report), at the timestamp it happened."""
    import asyncio

    from structlog.testing import capture_logs

    from tradeloop.engine.drivers.live import LiveDriver

    root, ref = trained("tiny")
    series = three_symbols("2013-01-01", "2013-12-31")
    strategy = ModelSignal(model=ref, registry=root, backup="tiny@v0002", p99_ms=1e-6)  # every call too slow
    driver = LiveDriver(strategy, [s.symbol for s in series], cash=1_000_000)

    async def bars():
        for _, _, i, s in sorted(((s.ts[i], s.symbol, i, s) for s in series for i in range(len(s))),
                                 key=lambda e: e[:2]):
            yield s.bar(i)

    with capture_logs() as logs:
        engine = asyncio.run(driver.run(bars()))
    switches = [e for e in engine.risk.events if e.check == "model_health"]
    assert [e.action for e in switches] == ["switch", "breach"]   # to the backup; then no backup left
    assert f"switched {ref} (onnx-cpu) -> tiny@v0002 (onnx-cpu)" in switches[0].reason
    assert switches[0].value > 1e-6 and switches[0].ts in {int(t) for s in series for t in s.ts}
    assert "kept tiny@v0002 (onnx-cpu) (no backup left)" in switches[1].reason
    logged = [e for e in logs if e["event"] == "risk_event" and e["check"] == "model_health"]
    assert [e["action"] for e in logged] == ["switch", "breach"]
    assert engine.models[0]["version"] == ref and engine.models[0]["backup"] == "tiny@v0002"


def test_a_strategy_can_declare_its_predictor_on_the_class():
    """``predictor = PredictorSpec(...)`` (or a bare "NAME@VERSION") is opened before on_start and
    gives the same probabilities as ctx.use_predictor in on_start."""
    from tradeloop import PredictorSpec, Strategy

    root, ref = trained("tiny")
    series = three_symbols("2013-01-01", "2013-06-01")

    class Declared(Strategy):
        predictor = PredictorSpec(ref, registry=root, runtime="onnx-cpu")

        def on_start(self, ctx):
            self.open_at_start = ctx._engine.predictor is not None
            self.seen = []

        def on_bars(self, ctx, bars):
            self.seen += sorted((ctx.now, s, float(p[1])) for s, p in ctx.predictions.items())

    class InOnStart(Declared):
        predictor = None

        def on_start(self, ctx):
            super().on_start(ctx)
            ctx.use_predictor(ref, registry=root, runtime="onnx-cpu")

    declared, explicit = Declared(), InOnStart()
    run_backtest(declared, series)
    run_backtest(explicit, series)
    assert declared.open_at_start and not explicit.open_at_start
    assert declared.seen and declared.seen == explicit.seen


def test_a_bad_predictor_declaration_names_the_strategy():
    from tradeloop import Strategy

    class Wrong(Strategy):
        predictor = 42

    with pytest.raises(ValueError, match="Wrong.predictor must be 'NAME@VERSION' or a PredictorSpec, got 42"):
        run_backtest(Wrong(), three_symbols()[:1])


def test_model_signal_on_every_core_trades_exactly_as_on_one():
    """batch_workers only spreads the backtest's batch inference over threads; it never changes a fill."""
    root, ref = trained("tiny")
    series = three_symbols("2013-01-01", "2014-01-01")
    fills = [run_backtest(ModelSignal(model=ref, registry=root, enter=0.5, exit=0.5, batch_workers=n), series,
                          cash=1_000_000).fills for n in (1, 0)]
    assert fills[0] and fills[0] == fills[1]


@pytest.mark.parametrize("params, words", [({}, "set --param model"),
                                           ({"model": "x@latest", "enter": 0.4, "exit": 0.6}, "exit <= enter")])
def test_model_signal_parameter_errors_are_clear(params, words):
    with pytest.raises(ValueError, match=words):
        run_backtest(ModelSignal(**params), three_symbols()[:1])


def test_worked_example_trains_on_one_period_and_backtests_the_next(tmp_path):
    needs_models_extra()
    files = [str(qbot("600519.SH")), str(qbot("000858.SZ"))]
    ref, result = train_and_backtest(
        files, str(tmp_path / "reg"), name="qbot_small", train_start="2010-01-01", train_end="2012-01-01",
        val_end="2012-07-01", test_end="2013-07-01", warmup_from="2011-09-01",
        train_overrides={"epochs": 1, "progress": False, "threads": 1, "net": TINY_NET,
                         "features": {"lookback": 16}},
        strategy_params={"enter": 0.5, "exit": 0.5})
    assert ref == "qbot_small@v0001"
    start = int(np.datetime64("2012-07-01", "ns").astype(np.int64))
    assert result.fills and all(f.ts > start for f in result.fills)   # trades only in the test period
    meta = Registry(tmp_path / "reg").info(ref).metadata
    assert meta["training_window"]["val_end"] == "2012-07-01" and meta["metrics"]["test"]["n"] > 0


def test_importing_engine_models_and_the_strategy_does_not_import_torch():
    root, ref = trained("tiny")
    code = (
        "import sys\n"
        "import tradeloop.engine, tradeloop.engine.drivers.backtest, tradeloop.models, tradeloop.models.features, "
        "tradeloop.models.labels, tradeloop.models.dataset, tradeloop.models.nets, tradeloop.models.registry, "
        "tradeloop.models.runtime, tradeloop.models.health, tradeloop.models.predictor, tradeloop.models.train, "
        "tradeloop.models.export, tradeloop.strategies.model_signal\n"
        "assert 'torch' not in sys.modules, 'import'\n"
        "from tradeloop.models.registry import Registry\n"
        f"m = Registry({root!r}).load({ref!r}, 'onnx-cpu')\n"
        "import numpy as np\n"
        "m.predict(np.zeros((1, 16, 16), np.float32))\n"
        "assert 'torch' not in sys.modules, 'onnx runtime'\n"
        "assert 'tensorrt' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_model_signal_with_an_unknown_model_names_what_the_registry_has():
    from tradeloop.models.errors import RegistryError

    root, _ = trained("tiny")
    with pytest.raises(RegistryError, match="no model named 'nosuch'.*models there: .*tiny"):
        run_backtest(ModelSignal(model="nosuch@latest", registry=root), three_symbols()[:1])


def test_engine_runs_the_model_at_step_4_the_same_in_backtest_and_live():
    """Backtests look precomputed probabilities up; the live driver calls the model per timestamp."""
    import asyncio

    from tradeloop.engine.drivers.live import LiveDriver


    root, ref = trained("tiny")
    # the A-share files have an amount column: live bars carry it too (wire v2), so the VWAP feature
    # and every probability are the backtest's
    series = three_symbols("2013-01-01", "2014-01-01")
    assert all("amount" in s.extra for s in series)
    bt_strategy, live_strategy = (Recording(model=ref, registry=root, enter=0.5, exit=0.5) for _ in range(2))
    bt = run_backtest(bt_strategy, series, cash=1_000_000)
    driver = LiveDriver(live_strategy, [s.symbol for s in series], cash=1_000_000)

    async def bars():
        events = sorted(((s.ts[i], s.symbol, i, s) for s in series for i in range(len(s))), key=lambda e: e[:2])
        for _, _, i, s in events:
            yield s.bar(i)

    engine = asyncio.run(driver.run(bars()))
    assert bt.fills
    assert len(live_strategy.seen) == len(bt_strategy.seen) > 0
    for (t1, s1, p1), (t2, s2, p2) in zip(live_strategy.seen, bt_strategy.seen):
        assert (t1, s1) == (t2, s2) and p1 == pytest.approx(p2, abs=1e-5)
    assert [(f.ts, f.symbol, f.side, f.qty, f.price) for f in engine.fills] == \
        [(f.ts, f.symbol, f.side, f.qty, f.price) for f in bt.fills]


def test_a_bad_bar_met_while_workers_already_predict_stops_the_precompute_naming_it():
    """Features are computed series by series while the worker threads predict the earlier ones:
    a bad bar in a later series is still the precompute's error, naming symbol and bar."""
    root, ref = trained("tiny")
    model = Registry(root).load(ref, "onnx-cpu")
    series = three_symbols()
    series[-1].close[40] = math.nan
    with pytest.raises(FeatureError, match=rf"{series[-1].symbol}.*bar 40.*finite and positive"):
        Predictor(model, [s.symbol for s in series], batch_workers=2).precompute(series)
