"""report.html: written by every backtest and by `tradeloop report`, self-contained, complete, and it renders.

The rendering test opens the report in headless Chromium (skipped only where no chromium binary
exists) with the network off, and checks that every chart drew its data and nothing logged an error.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tradeloop.engine.report import run as report_mod
from tradeloop.engine.cli.main import main
from tradeloop.engine.runs.folders import load_run
from tests.browser import Chromium, chromium_binary
from tests.conftest import ORCL, need

SAMPLE = ORCL  # backtrader's ORCL daily bars in ../shared/data; need(SAMPLE) skips where absent
MB = 1 << 20
CHARTS = ("Equity vs benchmark", "Excess return", "Underwater", "Monthly returns", "Rolling Sharpe",
          "Distribution of daily returns", "Positions")


def write_benchmark_csv(path: Path) -> Path:
    """A made-up index over the sample's dates (a seeded random walk), as a plain OHLCV CSV."""
    dates = [line.split(",")[0] for line in need(SAMPLE).read_text().splitlines()[1:]]
    close = 1000.0 * np.exp(np.cumsum(np.random.default_rng(7).normal(0.0003, 0.01, len(dates))))
    rows = [f"{d},{c:.4f},{c:.4f},{c:.4f},{c:.4f},1000" for d, c in zip(dates, close)]
    path.write_text("Date,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")
    return path


def backtest(out: Path, *extra: str) -> int:
    return main(["backtest", "sma_cross", "--data", str(need(SAMPLE)), "--param", "size=1000", "--commission", "0.001",
                 "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """The sample backtest with a benchmark and two gates (one passes, one fails)."""
    base = tmp_path_factory.mktemp("report")
    bench = write_benchmark_csv(base / "index.csv")
    assert backtest(base / "run", "--benchmark", str(bench), "--set", "gates.sharpe=>= 2",
                    "--set", "gates.max_drawdown=<= 0.25") == 0
    return base / "run"


def test_every_backtest_writes_its_report(run_dir):
    assert (run_dir / "report.html").is_file()


def test_the_report_is_self_contained(run_dir):
    text = (run_dir / "report.html").read_text()
    assert "<script" not in text.lower()                  # no scripts at all, inline or fetched
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text, re.IGNORECASE)
    assert "@import" not in text and "url(" not in text  # no stylesheet or font fetched by CSS
    assert text.count("<svg") >= len(CHARTS)


def test_the_report_holds_every_section(run_dir):
    text = (run_dir / "report.html").read_text()
    for title in CHARTS:
        assert title in text, title
    for heading in ("Acceptance gates", "Metrics", "Trades", "Risk events", "Manifest"):
        assert f"<h2>{heading}" in text, heading
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for entry in manifest["inputs"]:                       # the data file and the benchmark, with hashes
        assert entry["sha256"] in text
    assert manifest["versions"]["numpy"] in text
    assert ">PASS<" in text and ">FAIL<" in text
    assert "97 closed round trip(s) from 195 fills" in text
    assert text.split("<h2>Risk events</h2>")[1].lstrip().startswith('<p class="note">none</p>')


def test_tradeloop_report_rewrites_the_same_page(run_dir, tmp_path, capsys):
    out = tmp_path / "again.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text() == (run_dir / "report.html").read_text()


def test_the_report_does_not_depend_on_when_it_was_made(tmp_path):
    backtest(tmp_path / "a" / "run")
    backtest(tmp_path / "b" / "run")
    assert (tmp_path / "a" / "run" / "report.html").read_bytes() == (tmp_path / "b" / "run" / "report.html").read_bytes()


def test_without_a_benchmark_the_report_says_how_to_add_one(tmp_path):
    backtest(tmp_path / "run")
    text = (tmp_path / "run" / "report.html").read_text()
    assert "No benchmark: give --benchmark PATH" in text and "Excess return" not in text


def test_a_run_without_bars_still_gets_a_report_that_says_so(tmp_path):
    assert backtest(tmp_path / "run", "--set", 'run.start="2030-01-01"') == 0
    text = (tmp_path / "run" / "report.html").read_text()
    assert "The run has no bars" in text and "<svg" not in text and "<h2>Manifest</h2>" in text


def test_a_short_run_says_why_it_has_no_rolling_sharpe(tmp_path):
    assert backtest(tmp_path / "run", "--set", 'run.start="2014-11-01"') == 0
    assert "needs 126 days; the run has 41" in (tmp_path / "run" / "report.html").read_text()


def test_risk_events_are_listed_when_the_run_has_them(run_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for f in run_dir.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    pl.DataFrame({"ts": ["2001-03-02 00:00:00"], "check": ["drawdown_stop"],
                  "reason": ["equity 9% below its peak"]}).write_parquet(run / "risk_events.parquet")
    assert main(["report", str(run)]) == 0
    section = (run / "report.html").read_text().split("<h2>Risk events</h2>")[1]
    assert "1 risk event(s)" in section and "drawdown_stop" in section and "equity 9% below its peak" in section


def test_a_long_trade_list_is_cut_with_a_note(run_dir, monkeypatch):
    monkeypatch.setattr(report_mod, "MAX_TRADES", 10)
    text = report_mod.render_report(load_run(run_dir))
    trades = text.split("<h2>Trades</h2>")[1].split("<h2>")[0]
    assert "Showing the first 5 and the last 5; every fill is in fills.parquet" in trades
    assert trades.count("<tr>") == 1 + 10 + 1          # header, 10 trades, the gap row


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "nowhere", "not found"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "missing manifest.json, metrics.json, equity.parquet"),
    (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is not a folder"),
])
def test_report_on_a_bad_run_folder_is_a_clear_error(tmp_path, capsys, setup, message):
    assert main(["report", str(setup(tmp_path))]) == 2
    assert message in capsys.readouterr().err


def test_report_on_a_damaged_file_names_it(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for f in run_dir.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    (run / "metrics.json").write_text("{not json")
    assert main(["report", str(run)]) == 2
    assert "metrics.json: cannot read it as JSON" in capsys.readouterr().err
    (run / "metrics.json").write_bytes((run_dir / "metrics.json").read_bytes())
    (run / "equity.parquet").write_bytes(b"garbage")
    assert main(["report", str(run)]) == 2
    assert "equity.parquet: cannot read it as Parquet" in capsys.readouterr().err


@pytest.mark.parametrize("name, data, extra", [
    ("20 years daily", "qbot/sz.csv", ["--set", 'run.on_bad="drop"', "--benchmark", "BENCH"]),
    ("2 years of 5-minute bars", "zsh_a_etf/510050.csv", []),
])
def test_long_runs_give_a_report_under_5_mb(shared_data, tmp_path, name, data, extra):
    extra = [str(shared_data / "stockhistorydata/000300.csv") if e == "BENCH" else e for e in extra]
    assert main(["backtest", "sma_cross", "--data", str(shared_data / data), "--param", "sizing=allin",
                 "--commission", "0.0005", "--out", str(tmp_path / "run"), "--quiet", *extra]) == 0
    assert (tmp_path / "run" / "report.html").stat().st_size < 5 * MB


# ------------------------------------------------------------------------------ in a real browser
def _colored_share(png: bytes) -> float:
    """Share of pixels with a saturated color (series, bars, cells), not white/grey/black text or grid."""
    from PIL import Image

    hsv = np.asarray(Image.open(io.BytesIO(png)).convert("HSV"))
    return float(np.mean((hsv[..., 1] > 64) & (hsv[..., 2] > 40)))


@pytest.mark.skipif(chromium_binary() is None, reason="no chromium binary (apt-get install chromium)")
def test_the_report_renders_offline_in_headless_chromium(run_dir, tmp_path):
    with Chromium() as browser:
        visit = browser.open(run_dir / "report.html")
    (tmp_path / "report.png").write_bytes(visit.screenshot)   # kept with the test's tmp folder for a look
    assert visit.errors == []
    assert visit.offline_violations == []
    assert visit.requests == [(run_dir / "report.html").resolve().as_uri()]
    titles = [c["title"] for c in visit.charts]
    for expected in CHARTS:
        assert any(t.startswith(expected) for t in titles), (expected, titles)
    for chart, png in zip(visit.charts, visit.chart_pngs):
        assert chart["width"] > 300 and chart["height"] > 100, chart
        drew = chart["path_length"] > 100 or chart["cells"] > 0 or chart["bars"] > 0
        assert drew, chart
        assert _colored_share(png) > 0.002, chart["title"]       # the data is on screen, not just axes
    assert _colored_share(visit.screenshot) > 0.005
