"""Benchmark-relative metrics: alignment to the run's days, the figures, the manifest, and bad benchmark files.

Also the signal-accuracy hook: predictions.parquet in a run folder becomes ``signal_accuracy``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tradeloop.data.schema import NS_PER_DAY
from tradeloop.engine.metrics.benchmark import BENCHMARK_KEYS, Benchmark, align, benchmark_metrics, load_benchmark
from tradeloop.engine.cli.main import main
from tradeloop.errors import ConfigError
from tradeloop.engine.metrics.signals import signal_accuracy
from tests.conftest import ORCL, need

SAMPLE = ORCL  # backtrader's ORCL daily bars in ../shared/data; need(SAMPLE) skips where absent
D0 = int(np.datetime64("2024-01-01", "ns").astype(np.int64))


def days(*offsets: int) -> np.ndarray:
    return D0 + NS_PER_DAY * np.array(offsets, dtype=np.int64)


def bench(offsets, closes) -> Benchmark:
    return Benchmark(days(*offsets), np.array(closes, float), {"path": "b.csv"})


def write_csv(path: Path, rows: list[tuple[str, float]]) -> Path:
    path.write_text("Date,Open,High,Low,Close,Volume\n" + "".join(f"{d},{c},{c},{c},{c},1\n" for d, c in rows))
    return path


# ------------------------------------------------------------------------------------ alignment
def test_the_benchmark_close_is_carried_forward_never_taken_from_the_future():
    b = bench([1, 2, 5], [100, 110, 120])
    a = align(b, days(0, 1, 3, 4, 5, 6))
    # day 0 precedes the benchmark, day 6 follows it: no value; days 3-4 carry day 2's close
    np.testing.assert_array_equal(a, [np.nan, 100, 110, 110, 120, np.nan])


def test_metrics_of_a_run_against_a_benchmark_that_covers_it():
    b = bench([0, 1, 2, 3], [100, 110, 99, 110])
    ts, equity = days(0, 1, 2, 3), np.array([1000.0, 1050.0, 1050.0, 1100.0])
    m = benchmark_metrics(b, ts, equity, 1000.0)
    assert set(m) == set(BENCHMARK_KEYS)
    assert m["benchmark_days"] == 4
    assert m["benchmark_return"] == pytest.approx(0.10)                 # 100 -> 110, from the first day's close
    assert m["excess_return"] == pytest.approx(0.10 - 0.10)
    assert m["benchmark_max_drawdown"] == pytest.approx(0.10)           # 110 -> 99
    r, bb = np.array([0, 0.05, 0, 1100 / 1050 - 1]), np.array([0, 0.1, -0.1, 110 / 99 - 1])
    c = np.cov(r, bb)
    assert m["beta"] == pytest.approx(c[0, 1] / c[1, 1])
    assert m["alpha"] == pytest.approx((r.mean() - m["beta"] * bb.mean()) * 252)
    assert m["information_ratio"] == pytest.approx((r - bb).mean() / (r - bb).std(ddof=1))
    assert m["tracking_error"] == pytest.approx((r - bb).std(ddof=1) * np.sqrt(252))


def test_a_flat_benchmark_has_no_beta_rather_than_a_made_up_one():
    m = benchmark_metrics(bench([0, 1, 2], [5, 5, 5]), days(0, 1, 2), np.array([1.0, 1.1, 1.2]), 1.0)
    assert m["beta"] is None and m["alpha"] is None and m["benchmark_return"] == 0.0


def test_a_partial_cover_is_measured_over_the_covered_days_only():
    b = bench([2, 3], [100, 120])
    m = benchmark_metrics(b, days(0, 1, 2, 3), np.array([100.0, 200.0, 250.0, 300.0]), 100.0)
    assert m["benchmark_days"] == 2
    assert m["benchmark_return"] == pytest.approx(0.2)
    assert m["excess_return"] == pytest.approx(300 / 200 - 1 - 0.2)     # from the close before the cover


# ------------------------------------------------------------------------------ through the CLI
def backtest(out: Path, *extra: str) -> int:
    return main(["backtest", "sma_cross", "--data", str(need(SAMPLE)), "--param", "size=1000", "--out", str(out),
                 "--quiet", *extra])


def test_a_benchmark_run_records_the_file_and_its_aligned_closes(tmp_path):
    b = write_csv(tmp_path / "idx.csv", [(f"{y}-06-30", 100.0 + y - 1990) for y in range(1995, 2016)])
    assert backtest(tmp_path / "run", "--benchmark", str(b)) == 0
    run = tmp_path / "run"
    m = json.loads((run / "metrics.json").read_text())
    assert all(k in m for k in BENCHMARK_KEYS)
    assert m["benchmark_return"] == pytest.approx(124 / 105 - 1)        # from 1995-06-30 to 2014-06-30's close
    entry = json.loads((run / "manifest.json").read_text())["inputs"][-1]
    assert entry["role"] == "benchmark" and entry["path"] == str(b) and len(entry["sha256"]) == 64
    closes = pl.read_parquet(run / "benchmark.parquet")
    assert closes.columns == ["ts", "close"] and closes.height == m["days"]
    assert closes["close"].null_count() == m["days"] - m["benchmark_days"]   # days before 1995-06-30 uncovered


def test_the_benchmark_can_come_from_the_config_and_needs_only_dates_and_closes(tmp_path):
    b = tmp_path / "idx.csv"
    b.write_text("date,close\n1990-01-01,1.0\n2020-01-01,2.0\n")
    assert backtest(tmp_path / "run", "--set", f'run.benchmark="{b}"') == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["benchmark_days"] == 5036


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.csv", "benchmark file {p}/missing.csv not found"),
    (lambda p: write_csv(p / "bad.csv", [("2001-01-02", 1.0), ("2001-01-03", float("nan"))]), "benchmark {p}/bad.csv:3"),
    (lambda p: (p / "text.csv").write_text("hello\nworld\n") and p / "text.csv", "benchmark"),
    (lambda p: write_csv(p / "late.csv", [("2030-01-02", 1.0), ("2030-01-03", 2.0)]),
     "covers 2030-01-02..2030-01-03, no day of the run's data (1995-01-03..2014-12-31)"),
])
def test_a_bad_benchmark_file_is_a_clear_error_before_the_run(tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert backtest(tmp_path / "run", "--benchmark", str(path)) == 2
    assert message.format(p=tmp_path) in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_load_benchmark_rejects_non_positive_closes(tmp_path):
    path = write_csv(tmp_path / "neg.csv", [("2001-01-02", 1.0), ("2001-01-03", -1.0)])
    with pytest.raises(ConfigError, match="benchmark"):
        load_benchmark(path)


# -------------------------------------------------------------------------- signal accuracy hook
def test_predictions_in_the_run_folder_give_signal_accuracy(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pl.DataFrame({"ts": [1, 2, 3, 4, 5], "symbol": ["A"] * 5, "prediction": [1, 0, 1, 1, 0],
                  "outcome": [1, 1, 1, None, 0]}).write_parquet(run / "predictions.parquet")
    assert backtest(run, "--set", "gates.signal_accuracy=>= 0.7") == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["signal_accuracy"] == pytest.approx(3 / 4)                  # the null outcome is not scored
    assert m["gates"]["signal_accuracy"]["passed"] is True


def test_predictions_without_the_promised_columns_are_an_error(tmp_path):
    pl.DataFrame({"ts": [1], "prediction": [1]}).write_parquet(tmp_path / "p.parquet")
    with pytest.raises(ConfigError, match="missing symbol, outcome"):
        signal_accuracy(tmp_path / "p.parquet")
