"""Terminal output: one table style for every summary (engine/telemetry/tables.py), --quiet, --json, progress.

The snapshots are tests/snapshots/<table>-<width>.txt, rendered from fixed metrics (no clock, no
real run). After a deliberate change of the style, rewrite them with
``TRADELOOP_UPDATE_SNAPSHOTS=1 pytest tests/test_tables.py`` and read the diff.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tradeloop.engine.cli.main import main, summary_pairs
from tradeloop.engine.cli.models import bench_text
from tradeloop.engine.cli.walkforward import walkforward_text
from tradeloop.engine.research.sweep import SweepResult, sweep_text
from tradeloop.engine.runs.listing import RunRow, compare_rows, compare_text, runs_text
from tradeloop.engine.telemetry import progress as progress_mod
from tradeloop.engine.telemetry.progress import LazyProgress
from tradeloop.engine.telemetry.tables import Column, ns_date, render_pairs, render_table
from tests.conftest import ORCL, need

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"
WIDTHS = (80, 160)

M = {"final_value": 123456.789, "total_return": 0.23456, "annual_return": 0.0712, "sharpe": 0.8123, "sortino": 1.2,
     "max_drawdown": -0.1834, "volatility": 0.15, "win_rate": 0.55, "profit_factor": 1.42, "trades": 1234,
     "benchmark_return": 0.31, "beta": 0.74,
     "gates": {"max_dd": {"rule": "max_drawdown > -0.25", "passed": True, "reason": "-18.34% > -25.00%"}}}
OUT = Path("runs/sma_cross-20240101-000000-a-rather-long-run-folder-name-for-narrow-terminals")
SWEEP = {"strategy": "sma_cross", "metric": "sharpe", "order": "descending",
         "grid": {"params.fast": [5, 10], "commission.rate": [0.0, 0.001]}, "points": 4, "ok": 3, "failed": 1,
         "ranking": [{"rank": 1, "point": 1, "params": {"params.fast": 5, "commission.rate": 0.001}, "sharpe": 0.9123,
                      "total_return": 0.5012, "max_drawdown": -0.2011, "trades": 40},
                     {"rank": 2, "point": 2, "params": {"params.fast": 10, "commission.rate": 0.0}, "sharpe": 0.5,
                      "total_return": 0.25, "max_drawdown": -0.3, "trades": 20},
                     {"rank": 3, "point": 0, "params": {"params.fast": 5, "commission.rate": 0.0}, "sharpe": None,
                      "total_return": -0.0123, "max_drawdown": -0.4567, "trades": 1234567}],
         "errors": [{"point": 3, "params": {"params.fast": 10, "commission.rate": 0.001},
                     "error": "ValueError: a long message that goes on and on about why this point failed"}],
         "best": {"point": 1, "params": {"params.fast": 5, "commission.rate": 0.001}, "sharpe": 0.9123,
                  "deflated_sharpe": 0.7312, "trials": 3}}
WF = {**M, "windows": [
    {"window": 1, "test_start": "2012-01-04", "model": "wf@v0001", "training": {"val_accuracy": 0.5312},
     "metrics": {"total_return": 0.05, "sharpe": 0.7, "max_drawdown": -0.05, "trades": 12}, "status": "ok"},
    {"window": 2, "test_start": "2012-04-02T09:30:00", "model": None, "training": None, "metrics": None,
     "status": "error", "error": "TrainingError: no samples in the training span"}]}
RUNS = [RunRow("sma_cross-20240101-000000", "backtest", "sma_cross", "1995-01-03", "2014-12-31", M, 0),
        RunRow("wf-20240102-000000", "walkforward", "ml_signal", "2010-01-04", "2014-12-31",
               {**M, "sharpe": None, "total_return": -0.0532}, 0),
        RunRow("paper-20240103-000000", "paper (failed)", "sma_cross", "?", "?", {}, 0)]
CMP_PATHS = [Path("runs/sma_cross-20240101-000000"), Path("runs/sma_cross-20240105-000000")]
CMP = [M, {**M, "sharpe": 1.5, "total_return": -0.05, "trades": 98765}]
BENCH = {"model": "qbot@v0003", "threads": 1, "cpu": "x86_64", "cpu_count": 2,
         "cpu_flags": {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_bf16": False, "amx_int8": False},
         "cpu_cap": None, "python": "3.12.3",
         "runtimes": [{"runtime": "onnx-cpu", "chunk": None, "device": "cpu", "threads": 1,
                       "agreement": {"windows": 4321, "max_abs_diff": 1.9e-06, "same_class": 1.0},
                       "batches": [{"batch": 1, "iters": 5000, "p50_ms": 0.1234, "p99_ms": 0.2345,
                                    "windows_per_s": 8103.7, "windows_per_cpu_s": 8200.1},
                                   {"batch": 4096, "iters": 12, "p50_ms": 250.5, "p99_ms": 301.25,
                                    "windows_per_s": 16351.3, "windows_per_cpu_s": 16400.9}]},
                      {"runtime": "torch-cpu-bf16", "chunk": None, "device": "cpu", "threads": 1,
                       "agreement": {"windows": 4321, "max_abs_diff": 0.0061, "same_class": 0.9931},
                       "batches": [{"batch": 1, "iters": 3100, "p50_ms": 0.9, "p99_ms": 1.5,
                                    "windows_per_s": 1111.1, "windows_per_cpu_s": 1150.0},
                                   {"batch": 4096, "iters": 5, "p50_ms": 1200.0, "p99_ms": 1333.3,
                                    "windows_per_s": 3413.3, "windows_per_cpu_s": 3500.0}]}],
         "load_avg_1m": [1.52, 1.87]}

TABLES = {
    "backtest": lambda w: render_pairs("backtest", summary_pairs(M, 2468, 5000, 0.5, OUT), w),
    "sweep": lambda w: sweep_text(SweepResult(None, SWEEP, Path("runs/sweep-sma_cross-20240101-000000")), width=w),
    "walkforward": lambda w: walkforward_text(WF, Path("runs/wf-20240102-000000"), 12.34, w),
    "runs-list": lambda w: runs_text(RUNS, "runs", w),
    "runs-compare": lambda w: compare_text(CMP_PATHS, CMP, w),
    "models-bench": lambda w: bench_text(BENCH, w),
}
# the cells each table must show whole (at every width it keeps their column)
WHOLE = {
    "backtest": ["123,456.79", "23.46%", "-18.34%", "1,234", "2,468", "PASS -18.34% > -25.00%"],
    "sweep": ["0.912", "50.12%", "1,234,567", "-1.23%", "73.1%"],
    "walkforward": ["2012-04-02 09:30:00", "5.00%", "0.700", "123,456.79"],
    "runs-list": ["sma_cross-20240101-000000", "23.46%", "-5.32%", "0.812"],
    "runs-compare": ["123,456.79", "1.500", "-5.00%", "98,765"],
    "models-bench": ["torch-cpu-bf16", "4,096", "0.123", "250.500", "16,351"],
}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", list(TABLES))
def test_table_snapshot(name, width):
    text = TABLES[name](width)
    path = SNAPSHOTS / f"{name}-{width}.txt"
    if os.environ.get("TRADELOOP_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} at {width} columns differs from {path}"
    lines = text.splitlines()
    assert max(map(len, lines)) <= width, [ln for ln in lines if len(ln) > width]
    assert "…" not in text and "..." not in text.replace(" .. ", "")      # no ellipsis: nothing cut
    for cell in WHOLE[name]:
        assert cell in text, cell
    assert "\x1b[" not in text                                              # no colour codes


@pytest.mark.parametrize("width", [40, 50, 60, 80, 100, 160])
@pytest.mark.parametrize("name", list(TABLES))
def test_no_line_is_wider_than_the_terminal_and_no_value_is_lost(name, width):
    text = TABLES[name](width)
    assert max(map(len, text.splitlines())) <= width
    words = set(text.split())
    for cell in WHOLE[name]:
        # a cell may wrap at its spaces on a narrow terminal, but no number or word in it is cut
        if "not shown" not in text or cell in text:
            assert all(w in words for w in cell.split()), (cell, text)


def test_a_narrow_terminal_drops_the_least_important_columns_and_says_which():
    text = runs_text(RUNS, "runs", 50)
    assert "not shown, too narrow: span, strategy, kind" in " ".join(text.split())
    assert "sma_cross-20240101-000000" in text and "23.46%" in text      # the id and the return stay
    wide = runs_text(RUNS, "runs", 160)
    assert "not shown" not in wide and "1995-01-03 .. 2014-12-31" in wide


def test_a_column_that_cannot_be_dropped_wraps_without_losing_characters():
    cols = [Column("name"), Column("value")]
    long = "runs/" + "x" * 70
    text = render_table(None, cols, [("path", long)], width=40)
    assert max(map(len, text.splitlines())) <= 40
    assert "".join(text.split()).count("x" * 70) == 1


def test_sweeps_show_percentages_as_the_backtest_does():
    text = TABLES["sweep"](160)
    assert "50.12%" in text and "0.5012" not in text and "-20.11%" in text


def test_compare_rows_use_the_report_formats():
    rows = {r[0]: r[1:] for r in compare_rows(CMP)}
    assert rows["total_return"] == ["23.46%", "-5.00%"] and rows["trades"] == ["1,234", "98,765"]


def test_ns_stamps_read_as_dates():
    assert ns_date(1262563200 * 10**9) == "2010-01-04"
    assert ns_date(1262597400 * 10**9) == "2010-01-04 09:30:00"
    assert ns_date(None) == "n/a"


def test_human_logs_show_dates_and_json_logs_keep_numbers(capsys):
    import structlog

    from tradeloop.engine.telemetry.logs import configure
    ts = 1262597400 * 10**9
    try:
        configure()
        structlog.get_logger("t").info("risk_event", ts=ts, last_ts=1262563200 * 10**9, begin=5)
        people = capsys.readouterr().err
        assert "ts=2010-01-04T09:30:00" in people and "last_ts=2010-01-04" in people and "begin=5" in people
        configure(json=True)
        structlog.get_logger("t").info("risk_event", ts=ts)
        assert json.loads(capsys.readouterr().err.splitlines()[-1])["ts"] == ts
    finally:
        configure()


# ------------------------------------------------------------------------------ --quiet and --json
@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    for name, fast in (("a", "10"), ("b", "20")):
        assert main(["backtest", "sma_cross", "--data", str(need(ORCL)), "--param", f"fast={fast}",
                     "--param", "slow=60", "--out", str(base / name), "--quiet"]) == 0
    return base


def test_quiet_prints_nothing(runs_root, tmp_path, capsys):
    capsys.readouterr()
    data = str(need(ORCL))
    assert main(["backtest", "sma_cross", "--data", data, "--out", str(tmp_path / "bt"), "--quiet"]) == 0
    assert main(["sweep", "sma_cross", "--data", data, "--grid", "fast=10,20", "--set", "params.slow=60",
                 "--executor", "serial", "--out", str(tmp_path / "sw"), "--quiet"]) == 0
    assert main(["walkforward", "sma_cross", "--data", data, "--train", "2y", "--test", "2y", "--executor", "serial",
                 "--out", str(tmp_path / "wf"), "--quiet"]) == 0
    assert main(["runs", "list", "--root", str(runs_root), "--quiet"]) == 0
    assert main(["runs", "compare", "a", "b", "--root", str(runs_root), "--out", str(tmp_path / "c.html"),
                 "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "c.html").is_file() and (tmp_path / "sw" / "sweep.json").is_file()


def test_json_is_one_object_on_stdout(runs_root, tmp_path, capsys):
    capsys.readouterr()
    data = str(need(ORCL))

    def run(*argv: str) -> dict:
        assert main([*argv, "--json"]) == 0
        out = capsys.readouterr().out
        assert out.count("\n") == 1
        return json.loads(out)

    bt = run("backtest", "sma_cross", "--data", data, "--out", str(tmp_path / "bt"))
    assert bt["command"] == "backtest" and bt["metrics"]["trades"] > 0 and bt["run_folder"] == str(tmp_path / "bt")
    sw = run("sweep", "sma_cross", "--data", data, "--grid", "fast=10,20", "--set", "params.slow=60",
             "--executor", "serial", "--out", str(tmp_path / "sw"))
    assert sw["command"] == "sweep" and len(sw["ranking"]) == 2 and sw["best"]["point"] in (0, 1)
    wf = run("walkforward", "sma_cross", "--data", data, "--train", "2y", "--test", "2y", "--executor", "serial",
             "--out", str(tmp_path / "wf"))
    assert wf["command"] == "walkforward" and wf["metrics"]["walkforward"]["failed"] == 0 and wf["metrics"]["windows"]
    ls = run("runs", "list", "--root", str(runs_root))
    assert [r["id"] for r in ls["runs"]] == ["a", "b"] and ls["runs"][0]["first"] == "1995-01-03"
    cmp = run("runs", "compare", "a", "b", "--root", str(runs_root), "--out", str(tmp_path / "c.html"))
    assert set(cmp["runs"]) == {"a", "b"} and "sharpe" in cmp["runs"]["a"] and cmp["page"] == str(tmp_path / "c.html")


# ------------------------------------------------------------------------------------ progress
class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_progress_on_a_pipe_is_a_line_within_a_second_that_repeats(monkeypatch):
    err = _Pipe()
    monkeypatch.setattr(sys, "stderr", err)
    t0 = time.perf_counter()
    with LazyProgress("sweep", delay=0.3, every=0.3) as bar:
        bar(0, 10)
        while "sweep: 0/10" not in err.getvalue() and time.perf_counter() - t0 < 2:   # nothing finished yet
            time.sleep(0.02)
        assert time.perf_counter() - t0 < 1.0
        bar(4, 10)
        time.sleep(0.8)
    lines = err.getvalue().splitlines()
    assert len(lines) >= 3 and lines[0].startswith("sweep: 0/10 (0%)")
    assert any(ln.startswith("sweep: 4/10 (40%)") and "left" in ln for ln in lines)
    assert lines[-1].endswith("done")


def test_quiet_turns_progress_off(monkeypatch):
    err = _Pipe()
    monkeypatch.setattr(sys, "stderr", err)
    progress_mod.set_quiet(True)
    try:
        with LazyProgress("x", delay=0.05, every=0.05) as bar:
            bar(1, 2)
            time.sleep(0.2)
    finally:
        progress_mod.set_quiet(False)
    assert err.getvalue() == ""


SLOW = '''
import time
from tradeloop import Strategy


class Slow(Strategy):
    """Sleeps at every bar: a backtest long enough to report progress."""

    def on_bars(self, ctx, bars):
        time.sleep(0.0006)
'''


def test_a_backtest_on_a_pipe_reports_progress_lines_on_stderr(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW)
    cmd = [sys.executable, "-m", "tradeloop", "backtest", f"{tmp_path / 'slow.py'}:Slow", "--data", str(need(ORCL)),
           "--out", str(tmp_path / "run"), "--json"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    for line in p.stderr:
        if line.startswith("backtest: "):
            seen.append((time.perf_counter() - t0, line.strip()))
    out = p.stdout.read()
    assert p.wait(timeout=60) == 0
    assert json.loads(out)["command"] == "backtest"            # stdout keeps only the JSON object
    assert len(seen) >= 2, seen                                 # a first line and at least one more
    assert seen[0][0] < 1.0 + 2.5, seen                         # within a second of the work starting (plus start-up)
    assert all("/5,036 (" in text for _, text in seen), seen   # the total is known from the start


def test_models_bench_prints_the_table_or_the_json_dict_or_nothing(monkeypatch, capsys):
    import tradeloop.models.bench as bench_mod

    seen = []
    monkeypatch.setattr(bench_mod, "run_bench", lambda a: seen.append(a) or BENCH)
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["models", "bench", "--runtime", "onnx-cpu,torch-cpu-bf16", "--batch", "1,4096"]) == 0
    out = capsys.readouterr().out
    assert out == bench_text(BENCH, 100) and out.startswith("models bench qbot@v0003")
    assert seen[0].runtime == "onnx-cpu,torch-cpu-bf16" and seen[0].batch == "1,4096"
    assert main(["models", "bench", "--json"]) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and json.loads(line) == BENCH
    assert main(["models", "bench", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
