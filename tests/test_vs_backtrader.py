"""tradeloop agrees with backtrader itself, fill by fill, on real files.

backtrader runs ../shared/bench/bt_sma.py (the reference SMA crossover) in a subprocess; we
run ``sma_cross`` on the same bars and compare every fill and the final value. Files other
than the bench's own are first normalised to the plain CSV layout bt_sma.py reads, so both
engines see identical bars.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tradeloop.data.loaders import load_bars
from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.assembly.backtest import backtest

from tests.conftest import SHARED  # noqa: E402  (../shared, or the folder above $TRADELOOP_SHARED_DATA)
BT_SMA = SHARED / "bench" / "bt_sma.py"

pytest.importorskip("backtrader")
pytestmark = pytest.mark.skipif(not BT_SMA.exists(), reason="../shared/bench is not beside the checkout")


def write_plain_csv(src: Path, dst: Path, **load_kw) -> Path:
    """The bars of ``src`` (any format our loader reads) as Date,Open,High,Low,Close,Volume."""
    s = load_bars(src, **load_kw)
    stamps = s.ts.astype("datetime64[ns]").astype("datetime64[s]").astype(str)
    with open(dst, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Date", "Open", "High", "Low", "Close", "Volume"])
        cols = (s.open, s.high, s.low, s.close, s.volume)
        for i in range(len(s)):
            w.writerow([stamps[i].replace("T", " "), *(repr(float(col[i])) for col in cols)])
    return dst


def run_bt(files: list[Path], tmp: Path, *extra: str) -> tuple[dict, list[tuple]]:
    out = tmp / "bt_fills.csv"
    proc = subprocess.run([sys.executable, str(BT_SMA), *map(str, files), "--fills-out", str(out), *extra],
                          capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    with open(out) as fh:
        rows = [(r["datetime"], r["symbol"], r["side"], float(r["size"]), float(r["price"]), float(r["commission"]))
                for r in csv.DictReader(fh)]
    return res, rows


def run_ours(files: list[Path], tmp: Path, **params) -> tuple[object, list[tuple]]:
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    cfg.run.cash = 100_000.0
    cfg.commission = {"kind": "percent", "rate": 0.001}
    cfg.params = params
    cfg.data = [DataSpec(str(f)) for f in files]
    result, _ = backtest(cfg, write=False, progress=False)
    rows = []
    for f in result.fills:
        stamp = str(np.datetime64(f.ts, "ns").astype("datetime64[s]")).replace("T", " ")
        rows.append((stamp, f.symbol, f.side.value, f.qty, f.price, f.commission))
    return result, rows


def assert_same(bt: tuple[dict, list[tuple]], ours: tuple[object, list[tuple]]) -> None:
    (bt_res, bt_rows), (result, our_rows) = bt, ours
    assert len(our_rows) == len(bt_rows), (len(our_rows), len(bt_rows))
    for i, (a, b) in enumerate(zip(our_rows, bt_rows)):
        assert a[:4] == b[:4], f"fill {i}: ours {a} backtrader {b}"
        assert a[4] == pytest.approx(b[4], abs=5e-7), f"fill {i}: price {a[4]} vs {b[4]}"
        assert a[5] == pytest.approx(b[5], rel=1e-6, abs=1e-6), f"fill {i}: commission {a[5]} vs {b[5]}"
    assert result.final_value == pytest.approx(bt_res["final_value"], abs=1e-6)


@pytest.mark.parametrize("name", ["orcl-1995-2014.txt", "nvda-1999-2014.txt", "yhoo-1996-2014.txt"])
def test_bench_files_fill_for_fill(name, tmp_path):
    f = SHARED / "data" / "backtrader" / name
    assert_same(run_bt([f], tmp_path), run_ours([f], tmp_path, size=1000))


def test_orcl_reference_result():
    """The figures in ../shared/bench/README.md: 195 fills, final value 123023.329537."""
    f = SHARED / "data" / "backtrader" / "orcl-1995-2014.txt"
    result, rows = run_ours([f], Path("."), size=1000)
    assert len(rows) == 195
    assert round(result.final_value, 6) == 123023.329537


@pytest.mark.parametrize("rel, kw", [
    ("qbot/600519.SH.csv", {}),                   # A-share, tushare export
    ("stockhistorydata/000300.csv", {}),          # GBK, Chinese headers, newest first
    ("backtesting_py/EURUSD.csv", {}),             # hourly FX
    ("kronos/XSHG_5min_600977.csv", {}),           # 5-minute A-share bars
    ("pyalgotrade/orcl-2000-yahoofinance.csv", {}),  # newest first, unadjusted splits
])
def test_untuned_files_fill_for_fill(rel, kw, tmp_path):
    src = SHARED / "data" / rel
    plain = write_plain_csv(src, tmp_path / (Path(rel).name.split(".")[0] + ".csv"), **kw)
    assert_same(run_bt([plain], tmp_path, "--size", "100"), run_ours([plain], tmp_path, size=100))


def test_allin_sizing_and_rejections_match(tmp_path):
    f = SHARED / "data" / "backtrader" / "nvda-1999-2014.txt"
    bt = run_bt([f], tmp_path, "--sizing", "allin")
    ours = run_ours([f], tmp_path, sizing="allin", target=0.95)
    assert_same(bt, ours)
    rejected = sum(o.status.value == "REJECTED" for o in ours[0].orders)
    assert rejected == bt[0]["rejected_orders"]


def test_multi_symbol_portfolio_matches(tmp_path):
    files = [SHARED / "data" / "backtrader" / n for n in ("orcl-2003-2005.txt", "yhoo-2003-2005.txt")]
    assert_same(run_bt(files, tmp_path, "--size", "500"), run_ours(files, tmp_path, size=500))
