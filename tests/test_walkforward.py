"""Specification of ``tradeloop walkforward``: durations, windows, the engine's trade-from start,
stitching, the embargo rule, failing windows, and the run folder it writes."""
from __future__ import annotations

import itertools
import json

import numpy as np
import polars as pl
import pytest

from tradeloop.data.loaders import load_bars
from tradeloop import Context, Strategy
from tradeloop.engine.cli.main import main
from tradeloop.errors import ConfigError
from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.assembly.backtest import backtest
from tradeloop.engine.research.walkforward import run_walkforward
from tradeloop.engine.research.windows import (
    Duration,
    WindowSpec,
    iso,
    make_windows,
    parse_duration,
    shift,
    to_ns,
)
from tests.test_walkforward_support import (
    SPEC,
    model_config,
    needs_models,
    qbot_files,
    tiny_train,
)


# ----------------------------------------------------------------------------------- durations
@pytest.mark.parametrize("text, expected", [("2y", Duration(2, "y")), ("6m", Duration(6, "m")),
                                            ("3M", Duration(3, "m")), ("20d", Duration(20, "d")),
                                            (" 2w ", Duration(2, "w"))])
def test_durations_are_a_number_and_a_calendar_unit(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["2", "y", "2x", "1.5y", "-3m", "0d", "", "3 months", "2y6m"])
def test_bad_durations_are_clear_errors(text):
    with pytest.raises(ConfigError, match=r"--test .*(not a duration|longer than zero).*e\.g\. 2y, 6m, 3w or 20d"):
        parse_duration(text, "--test")


def test_months_are_calendar_months_clamped_to_the_month_end():
    assert iso(shift(to_ns("2012-01-31", "x"), Duration(1, "m"))) == "2012-02-29"
    assert iso(shift(to_ns("2012-02-29", "x"), Duration(1, "y"))) == "2013-02-28"
    assert iso(shift(to_ns("2012-03-31", "x"), Duration(1, "m"), -1)) == "2012-02-29"
    assert iso(shift(to_ns("2012-01-01", "x"), Duration(2, "w"))) == "2012-01-15"


def test_a_bad_duration_on_the_command_line_exits_2_naming_the_flag(capsys):
    files = qbot_files()
    assert main(["walkforward", "sma_cross", "--data", str(files[0]), "--train", "2yrs", "--test", "3m"]) == 2
    err = capsys.readouterr().err
    assert "--train '2yrs': not a duration" in err and "2y, 6m, 3w or 20d" in err


# ------------------------------------------------------------------------------------- windows
def _timeline() -> np.ndarray:
    return np.unique(np.concatenate([load_bars(str(p)).ts for p in qbot_files()]))


def test_rolling_windows_step_by_the_test_span_and_embargo_bars_before_it():
    tl = _timeline()
    ws = make_windows(WindowSpec("2y", "6m", embargo=5), tl, to_ns("2010-01-01", "x"))
    assert len(ws) == 18                                  # tests 2012-01-01 .. 2021-01-01; the data ends 2020-09
    assert [iso(w.test_start) for w in ws[:3]] == ["2012-01-01", "2012-07-01", "2013-01-01"]
    assert [iso(w.train_start) for w in ws[:3]] == ["2010-01-01", "2010-07-01", "2011-01-01"]
    for w in ws:
        assert w.test_end == shift(w.test_start, Duration(6, "m"))
        first_test = int(np.searchsorted(tl, w.test_start))
        assert w.train_end == tl[first_test - 5]          # exactly 5 bars lie between training and test
        assert w.train_start < w.fit_end < w.train_end and w.warmup_start == shift(w.test_start, Duration(6, "m"), -1)


def test_anchored_windows_expand_from_the_start_of_the_data():
    ws = make_windows(WindowSpec("1y", "3m", step="6m", anchored=True), _timeline())
    assert {w.train_start for w in ws} == {_timeline()[0]}
    assert all(b.test_start == shift(a.test_start, Duration(6, "m")) for a, b in itertools.pairwise(ws))
    assert all(w.train_end == w.test_start for w in ws)   # no embargo asked for


def test_overlapping_test_spans_and_too_little_data_are_refused():
    with pytest.raises(ConfigError, match="--step 3m is shorter than --test 6m: test spans would overlap"):
        make_windows(WindowSpec("1y", "6m", step="3m"), _timeline())
    with pytest.raises(ConfigError, match=r"too short for a 20y training span"):
        make_windows(WindowSpec("20y", "6m"), _timeline())
    with pytest.raises(ConfigError, match="--embargo -1"):
        make_windows(WindowSpec("1y", "6m", embargo=-1), _timeline())


# ----------------------------------------------------------------------------- trade-from start
def _sma_config(**run) -> RunConfig:
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    cfg.params = {"size": 100}
    cfg.data = [DataSpec(path=str(p)) for p in qbot_files()]
    for k, v in run.items():
        setattr(cfg.run, k, v)
    return cfg


def test_the_engine_refuses_orders_before_trade_from_but_the_strategy_sees_every_bar():
    res, _ = backtest(_sma_config(start="2011-01-01", end="2012-01-01", trade_from="2011-07-01"), write=False,
                      progress=False)
    t0 = to_ns("2011-07-01", "x")
    early = [o for o in res.orders if o.created_ts < t0]
    assert early and all(o.status.value == "REJECTED" and o.reason.startswith("trade_from: no orders before 2011-07-01")
                         for o in early)
    assert res.fills and min(f.ts for f in res.fills) > t0
    assert res.equity[res.ts < t0].tolist() == [100_000.0] * int((res.ts < t0).sum())
    # warm indicators: the first order from trade_from on is a buy at a crossover the unrestricted run
    # (flat there too, after a downward cross) also traded on, not one 30 bars later when a cold SMA fills
    free, _ = backtest(_sma_config(start="2011-01-01", end="2012-01-01"), write=False, progress=False)
    first = min((o for o in res.orders if o.created_ts >= t0), key=lambda o: o.created_ts)
    assert first.side.value == "BUY"
    assert (first.created_ts, first.symbol, "BUY") in {(o.created_ts, o.symbol, o.side.value) for o in free.orders}
    with pytest.raises(ConfigError, match="run.trade_from 'soon': not a date"):
        backtest(_sma_config(trade_from="soon"), write=False, progress=False)


# ---------------------------------------------------------------------------------- stitching
def test_sma_cross_walks_forward_with_each_window_starting_from_the_last_ones_equity(tmp_path):
    cfg = _sma_config(cash=1_000_000.0, start="2010-01-01")
    spec = WindowSpec("1y", "6m", warmup="3m")
    wf, out = run_walkforward(cfg, spec, executor="serial", out=tmp_path / "wf", progress=False)
    assert len(wf.windows) == 20 and all(o.ok for o in wf.windows)
    spans = [o.span for o in wf.windows]
    assert spans[0].result.start_cash == 1_000_000.0
    for a, b in itertools.pairwise(spans):
        assert b.result.start_cash == a.final_value                       # carried exactly
        assert b.result.equity[0] == b.result.start_cash                  # flat on its first bar: no orders before it
        assert {f.symbol for f in a.handoff} == {s for s, q in _held(a.result.fills).items() if q}
    # each window is exactly a standalone backtest from its warm-up start, trading from its test start
    for o in (wf.windows[3], wf.windows[11]):
        w = o.window
        alone, _ = backtest(_sma_config(cash=o.span.result.start_cash, start=iso(w.warmup_start), end=iso(w.test_end),
                                        trade_from=iso(w.test_start), order_prefix=f"W{w.index + 1:03d}O"),
                            write=False, progress=False)
        assert alone.fills == o.span.result.fills
        assert alone.equity[alone.ts >= w.test_start].tolist() == o.span.result.equity.tolist()
    # the run folder: one stitched run, per-window and combined metrics, one report
    m = json.loads((out / "metrics.json").read_text())
    assert m["final_value"] == spans[-1].final_value and m["start_cash"] == 1_000_000.0
    assert [w["window"] for w in m["windows"]] == list(range(1, 21))
    assert m["windows"][5]["metrics"]["start_cash"] == spans[5].result.start_cash and m["walkforward"]["failed"] == 0
    eq = pl.read_parquet(out / "equity.parquet")
    assert eq.height == sum(len(s.result.ts) for s in spans) and eq["ts"].is_sorted()
    fills = pl.read_parquet(out / "fills.parquet")
    assert fills.height == sum(len(s.result.fills) + len(s.handoff) for s in spans)
    assert fills.filter(pl.col("order_id").str.ends_with("HANDOFF"))["commission"].sum() == 0.0
    manifest = json.loads((out / "manifest.json").read_text())
    details = manifest["details"]
    assert manifest["kind"] == "walkforward" and details["spec"]["train"] == "1y"
    assert details["windows"][0]["test_start"] == "2011-01-01" and details["training"] is None
    report = (out / "report.html").read_text()
    assert "<h2>Walk-forward windows</h2>" in report and "2020-07-01 .. 2021-01-01" in report
    assert main(["report", str(out), "--out", str(tmp_path / "again.html")]) == 0    # re-rendered the same way
    assert (tmp_path / "again.html").read_text() == report


def _held(fills) -> dict[str, float]:
    out: dict[str, float] = {}
    for f in fills:
        out[f.symbol] = out.get(f.symbol, 0.0) + f.signed_qty
    return out


def test_the_command_reads_walkforward_and_train_tables_from_the_config(tmp_path, capsys):
    files = qbot_files()
    conf = tmp_path / "wf.toml"
    conf.write_text(f"""
[run]
strategy = "sma_cross"
start = "2010-01-01"
end = "2013-01-01"
[params]
size = 100
[[data]]
path = "{files[0]}"
[walkforward]
train = "1y"
test = "1y"
""")
    assert main(["walkforward", "--config", str(conf), "--set", "walkforward.test=6m", "--executor", "serial",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [w["test_start"] for w in m["windows"]] == ["2011-01-01", "2011-07-01", "2012-01-01", "2012-07-01"]
    assert main(["walkforward", "--config", str(conf), "--set", "walkforward.tset=6m"]) == 2
    assert "[walkforward] has no key 'tset'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ embargo
def test_an_embargo_shorter_than_the_label_horizon_is_refused(tmp_path, capsys):
    needs_models()
    cfg = model_config(qbot_files())
    with pytest.raises(ConfigError, match=r"--embargo 4 is smaller than the label horizon \(5 bars\)"):
        run_walkforward(cfg, WindowSpec("1y", "6m", embargo=4), tiny_train(tmp_path / "reg"), embargo_given=True,
                        executor="serial", write=False, progress=False)
    assert not (tmp_path / "reg").exists()                 # refused before anything trained
    train = tmp_path / "train.toml"
    train.write_text(f'registry = "{tmp_path / "reg"}"\nhorizon = 10\nepochs = 1\n')
    assert main(["walkforward", "model_signal", "--data", str(qbot_files()[0]), "--train", "1y", "--test", "6m",
                 "--embargo", "5", "--train-config", str(train)]) == 2
    assert "--embargo 5 is smaller than the label horizon (10 bars)" in capsys.readouterr().err


def test_without_an_embargo_a_model_gets_one_as_long_as_its_label_horizon(tmp_path):
    needs_models()
    wf, _ = run_walkforward(model_config(qbot_files()), WindowSpec("1y", "6m"), tiny_train(tmp_path, horizon=3),
                            executor="serial", write=False, progress=False)
    tl = _timeline()
    for o in wf.windows:
        assert o.ok and o.window.train_end == tl[int(np.searchsorted(tl, o.window.test_start)) - 3]
    from tradeloop.models.registry import Registry
    meta = Registry(tmp_path).info(wf.windows[1].model).metadata
    assert meta["walkforward"]["window"] == 2 and meta["walkforward"]["test_start"] == "2011-07-01"
    assert meta["training_window"]["val_end"] == iso(wf.windows[1].window.train_end)


def test_a_model_strategy_needs_training_settings_and_others_refuse_them(tmp_path):
    with pytest.raises(ConfigError, match="takes a model: give a training config"):
        run_walkforward(model_config(qbot_files()), SPEC, None, executor="serial", write=False, progress=False)
    with pytest.raises(ConfigError, match="has no 'model' parameter"):
        run_walkforward(_sma_config(), SPEC, {"epochs": 1}, executor="serial", write=False, progress=False)
    needs_models()
    with pytest.raises(ConfigError, match="train_end, val_end set per window by the walk-forward"):
        run_walkforward(model_config(qbot_files()), SPEC, tiny_train(tmp_path, train_end="2011-01-01",
                                                                      val_end="2011-06-01"),
                        executor="serial", write=False, progress=False)
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1"):
        run_walkforward(model_config(qbot_files()), SPEC, tiny_train(tmp_path, epochs=0), executor="serial",
                        write=False, progress=False)


# ------------------------------------------------------------------------------ failing windows
class FailsInSummer2011(Strategy):
    """A buyer that raises on any bar of 2011-07 .. 2011-09 (inside one window's test span only)."""

    def on_bars(self, ctx: Context, bars) -> None:
        if to_ns("2011-07-01", "x") <= ctx.now < to_ns("2011-10-01", "x"):
            raise RuntimeError("boom in the summer of 2011")
        for bar in bars:
            if not ctx.position(bar.symbol):
                ctx.buy(bar.symbol, 100)


def test_a_failing_backtest_window_is_reported_and_the_others_finish(tmp_path):
    cfg = _sma_config(cash=1_000_000.0, start="2010-01-01", end="2013-01-01")
    cfg.run.strategy = f"{__name__}:FailsInSummer2011"
    cfg.params = {}
    wf, out = run_walkforward(cfg, WindowSpec("1y", "6m", warmup="2m"), executor="serial", out=tmp_path / "run",
                              progress=False)
    assert [o.ok for o in wf.windows] == [True, False, True, True]
    error = wf.windows[1].error   # the strategy's own file and line (engine/loop/strategy.py strategy_failure)
    assert error.startswith("backtest: strategy error: ") and "test_walkforward.py:" in error
    assert error.endswith(" in on_bars: RuntimeError: boom in the summer of 2011")
    assert wf.windows[2].span.result.start_cash == wf.windows[0].span.final_value   # the failed window is skipped
    m = json.loads((out / "metrics.json").read_text())
    assert m["walkforward"]["failed"] == 1 and m["windows"][1]["status"] == "error" and "metrics" not in m["windows"][1]
    assert "boom in the summer of 2011" in (out / "report.html").read_text()
    manifest = json.loads((out / "manifest.json").read_text())   # the run did not do all it was asked: failed
    assert manifest["status"] == "failed" and manifest["error"].startswith("window 2: backtest: strategy error: ")


def test_a_failing_training_window_is_reported_and_the_others_finish(tmp_path):
    needs_models()
    src = qbot_files()[0]
    gapped = tmp_path / src.name                           # 600519.SH without 2010-03 .. 2010-12: window 1 cannot train
    df = pl.read_csv(src, infer_schema_length=0)
    d = df["trade_date"].cast(pl.Int64)
    df.filter((d < 20100301) | (d >= 20110101)).write_csv(gapped)
    wf, _ = run_walkforward(model_config([gapped]), SPEC, tiny_train(tmp_path / "reg"), executor="process",
                            workers=2, write=False, progress=False)
    first = wf.windows[0]
    assert not first.ok and first.error.startswith("training: TrainingError: the training split has")
    assert first.model is None and first.span is None
    assert all(o.ok and o.model and o.span is not None for o in wf.windows[1:])
    assert wf.windows[1].span.result.start_cash == 1_000_000.0
    assert wf.result.metrics["walkforward"] == {"windows": 3, "ok": 2, "failed": 1,
                                                "warmup_orders_refused": wf.result.metrics["walkforward"][
                                                    "warmup_orders_refused"]}
