"""Run folders: what a backtest writes, that reruns are bit-identical, and the CLI around it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tradeloop.engine.cli.main import main
from tests.conftest import ORCL, SHARED_DATA, need

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ORCL  # backtrader's ORCL daily bars in ../shared/data; need(SAMPLE) skips where absent
FILES = ("manifest.json", "metrics.json", "equity.parquet", "orders.parquet", "order_events.parquet", "fills.parquet")


def backtest_cli(out: Path, *extra: str) -> int:
    return main(["backtest", "sma_cross", "--data", str(need(SAMPLE)), "--param", "size=1000", "--cash", "100000",
                 "--commission", "0.001", "--out", str(out), "--quiet", *extra])


def test_a_run_writes_every_file_with_the_promised_columns(tmp_path):
    assert backtest_cli(tmp_path / "run") == 0
    run = tmp_path / "run"
    for name in FILES:
        assert (run / name).exists(), name
    fills = pl.read_parquet(run / "fills.parquet")
    assert fills.columns[:6] == ["ts", "symbol", "side", "qty", "price", "commission"]
    assert fills.height == 195
    assert set(fills["side"]) == {"BUY", "SELL"}
    equity = pl.read_parquet(run / "equity.parquet")
    assert equity.columns[:3] == ["ts", "cash", "equity"]
    assert equity.height == 5036
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("final_value", "total_return", "annual_return", "volatility", "sharpe", "sortino", "max_drawdown",
                "max_drawdown_duration", "calmar", "trades", "win_rate", "profit_factor",
                "max_consecutive_losing_days", "turnover", "exposure"):
        assert key in metrics, key
    assert round(metrics["final_value"], 6) == 123023.329537
    assert 0 < metrics["max_drawdown"] < 1
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["inputs"][0]["sha256"] and manifest["versions"]["numpy"]
    assert manifest["strategy"]["params"]["size"] == 1000
    assert manifest["config"]["commission"]["rate"] == 0.001


def test_naive_timestamps_are_written_back_exactly_as_read(tmp_path):
    backtest_cli(tmp_path / "run")
    fills = pl.read_parquet(tmp_path / "run" / "fills.parquet")
    assert fills["ts"].dtype == pl.Datetime("ns")
    file_dates = {line.split(",")[0] for line in need(SAMPLE).read_text().splitlines()[1:]}
    written = [str(t) for t in fills["ts"]]
    assert written[0] == "1995-05-12 00:00:00"  # the date as it appears in the file, no zone shift
    assert all(w.endswith(" 00:00:00") and w[:10] in file_dates for w in written)


def test_rerun_is_bit_identical(tmp_path):
    backtest_cli(tmp_path / "a")
    backtest_cli(tmp_path / "b")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_config_file_holds_what_the_flags_hold(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
[run]
strategy = "sma_cross"
cash = 100000
[params]
size = 1000
[[data]]
path = "{need(SAMPLE)}"
symbol = "ORCL"
[commission]
kind = "percent"
rate = 0.001
""")
    assert main(["backtest", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    fills = pl.read_parquet(tmp_path / "run" / "fills.parquet")
    assert fills.height == 195 and fills["symbol"][0] == "ORCL"
    # --set overrides a key of the file
    assert main(["backtest", "--config", str(cfg), "--set", "params.size=10", "--out", str(tmp_path / "r2"),
                 "--quiet"]) == 0
    assert pl.read_parquet(tmp_path / "r2" / "fills.parquet")["qty"][0] == 10


def test_symbol_follows_its_data_flag(tmp_path):
    assert main(["backtest", "sma_cross", "--data", str(need(SAMPLE)), "--symbol", "ORCL", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    assert pl.read_parquet(tmp_path / "r" / "fills.parquet")["symbol"].unique().to_list() == ["ORCL"]


@pytest.mark.parametrize("argv, message", [
    (["--param", "fast=abc"], "parameter 'fast' expects int"),
    (["--param", "nope=1"], "unknown parameter"),
    (["--set", "run.cash=lots"], "cash must be a number"),
    (["--set", "nope.x=1"], "unknown section"),
    (["--set", "risk.x=1"], "no key 'risk.x'"),
])
def test_bad_configuration_is_a_clear_error(tmp_path, capsys, argv, message):
    assert backtest_cli(tmp_path / "r", *argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_strategy_and_missing_file(tmp_path, capsys):
    bars = tmp_path / "bars.csv"
    bars.write_text("Date,Open,High,Low,Close,Volume\n2024-01-02,1,1,1,1,1\n")
    assert main(["backtest", "no_such", "--data", str(bars), "--out", str(tmp_path / "r")]) == 2
    assert "no_such" in capsys.readouterr().err
    assert main(["backtest", "sma_cross", "--data", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err


def test_bad_data_is_reported_with_file_line_and_field(tmp_path, capsys):
    bad = need(SHARED_DATA / "pyalgotrade" / "orcl-2010-googlefinance-malformed.csv")
    assert main(["backtest", "sma_cross", "--data", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "orcl-2010-googlefinance-malformed.csv:3" in err and "Open" in err
    assert not (tmp_path / "r").exists()


def test_data_import_then_backtest_from_the_catalog(tmp_path):
    cat = tmp_path / "cat"
    assert main(["data", "import", str(need(SAMPLE)), "--catalog", str(cat)]) == 0
    assert main(["backtest", "sma_cross", "--catalog", str(cat), "--data", "orcl-1995-2014", "--param", "size=1000",
                 "--commission", "0.001", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert round(m["final_value"], 6) == 123023.329537


def test_a_backtest_never_imports_torch(tmp_path):
    """Heavy imports happen only when a model is used (the 2 s small-file figure is in bench/)."""
    code = ("import sys; from tradeloop.engine.cli.main import main; "
            f"main(['backtest','sma_cross','--data',{str(need(SAMPLE))!r},'--out',{str(tmp_path / 'r')!r},'--quiet']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split()[-1] == "False"
