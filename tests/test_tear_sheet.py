"""The run report as a tear sheet: log-scale returns, strategy vs benchmark, drawdown periods, rolling
statistics, return quantiles, readable metric names, the warm-up greyed, and only the config the run used.

Browser tests open the page offline in headless Chromium and look at the rendered pixels of the regions.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest

from tradeloop.engine.cli.main import main
from tradeloop.engine.metrics.curves import drawdown_periods, rolling_beta, rolling_volatility, weekly_returns
from tradeloop.engine.metrics.format import format_metric_unit, metric_label
from tradeloop.engine.report.run import used_config
from tradeloop.engine.research.walkforward import run_walkforward
from tradeloop.engine.research.windows import WindowSpec
from tests.browser import Chromium, chromium_binary
from tests.conftest import ORCL, need
from tests.test_report import write_benchmark_csv

MB = 1 << 20
DAY = 86_400_000_000_000
needs_chromium = pytest.mark.skipif(chromium_binary() is None, reason="no chromium binary (apt-get install chromium)")


def _days(n: int, first: str = "2020-01-01") -> np.ndarray:
    return np.datetime64(first, "ns").astype(np.int64) + np.arange(n, dtype=np.int64) * DAY


def _label(ns: int) -> str:
    return str(np.datetime64(int(ns), "ns").astype("datetime64[D]"))


# ------------------------------------------------------------------------------ the series
def test_drawdown_periods_give_start_valley_recovery_depth_and_length_deepest_first():
    e = np.array([100, 90, 80, 100, 110, 99, 105, 110, 120, 60, 70.0])
    days = _days(len(e))
    p = drawdown_periods(days, e, 100.0, top=5)
    assert [round(x.depth, 4) for x in p] == [-0.5, -0.2, -0.1]
    worst, second, third = p
    assert worst.recovery is None and worst.length_days == 1                # 9th to 10th day, not recovered
    assert (_label(second.start), _label(second.valley), _label(second.recovery)) == \
        ("2020-01-02", "2020-01-03", "2020-01-04")
    assert second.length_days == 2
    assert _label(third.start) == "2020-01-06" and _label(third.recovery) == "2020-01-08"
    assert drawdown_periods(days, e, 100.0, top=1) == [worst]
    assert drawdown_periods(days, np.arange(1.0, 12.0) * 100, 100.0) == []


def test_rolling_volatility_and_beta_agree_with_numpy_over_each_window():
    rng = np.random.default_rng(1)
    b = rng.normal(0, 0.01, 300)
    r = 2.0 * b + rng.normal(0, 0.001, 300)
    vol, beta = rolling_volatility(r, 126), rolling_beta(r, b, 126)
    assert np.isnan(vol[:125]).all() and np.isnan(beta[:125]).all()
    w = slice(300 - 126, 300)
    assert vol[-1] == pytest.approx(r[w].std(ddof=1) * np.sqrt(252))
    assert beta[-1] == pytest.approx(np.cov(r[w], b[w])[0, 1] / b[w].var(ddof=1))
    assert 1.9 < np.nanmin(beta) and np.nanmax(beta) < 2.1


def test_weekly_returns_run_monday_to_sunday():
    days = _days(14, "2024-01-01")                                          # a Monday
    e = 100.0 + np.arange(14)
    assert weekly_returns(days, e, 100.0) == pytest.approx([106 / 100 - 1, 113 / 106 - 1])


def test_metrics_read_with_names_and_units():
    assert metric_label("max_drawdown_duration") == "Longest drawdown"
    assert metric_label("some_new_key") == "Some new key"
    assert format_metric_unit("max_drawdown_duration", 5392) == "5,392 days"
    assert format_metric_unit("profit_factor", 1.3272) == "1.327x"
    assert format_metric_unit("total_return", 0.2302) == "23.02%"
    assert format_metric_unit("sharpe", None) == "n/a"


def test_the_config_shows_only_what_the_run_used():
    cfg = {"run": {"market": "", "cash": 1.0}, "market": {"lot_size": 100}, "live": {"venue": "sim"}, "gates": {},
           "risk": {"collar": None, "max_gross": None, "halt": {"enabled": False, "move": 0.05},
                    "drawdown": {"max": None, "daily_loss": None, "action": "block"},
                    "review": {"notional": None, "policy": "reject"}}}
    assert used_config(cfg, "backtest") == {"run": {"market": "", "cash": 1.0}}
    cfg["run"]["market"] = "cn-a"
    cfg["risk"]["drawdown"]["max"] = 0.2
    used = used_config(cfg, "paper")
    assert used["market"] == {"lot_size": 100} and used["live"] == {"venue": "sim"}
    assert used["risk"] == {"drawdown": {"max": 0.2, "daily_loss": None, "action": "block"}}


# ------------------------------------------------------------------------------ the page
def backtest(out: Path, *extra: str) -> Path:
    assert main(["backtest", "sma_cross", "--data", str(need(ORCL)), "--param", "size=1000", "--commission", "0.001",
                 "--out", str(out), "--quiet", *extra]) == 0
    return out / "report.html"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("tear")
    return backtest(base / "run", "--benchmark", str(write_benchmark_csv(base / "index.csv")))


def test_the_tear_sheet_holds_every_section(report):
    text = report.read_text()
    for title in ("Cumulative return, log scale", "Strategy vs benchmark", "Worst drawdown periods (top 5)",
                  "Yearly returns", "Return quantiles", "Rolling Sharpe (126", "Rolling volatility, annualized (126",
                  "Rolling beta to the benchmark (126"):
        assert title in text, title
    assert "<th>strategy</th><th>benchmark</th>" in text
    assert "not recovered" in text and "(ongoing)" in text           # ORCL's 2000 drawdown never came back
    assert "Longest drawdown" in text and "5,392 days" in text and "1.327x" in text
    manifest = text.split("<h2>Manifest</h2>")[1]
    for unused in ('"market":', '"live":', '"halt":', '"review":', '"chinext_20pct_from"'):
        assert unused not in manifest, unused


def test_a_warm_up_is_shaded_grey_and_left_out_of_the_tables(tmp_path):
    text = backtest(tmp_path / "run", "--set", 'run.trade_from="2000-01-03"').read_text()
    assert "Warm-up until 2000-01-03" in text
    assert text.count('class="warmup"') == 4                          # equity, log, underwater, exposure
    years = text.split("<h3>Yearly returns</h3>")[1].split("</table>")[0]
    assert "<td class=\"l\">2000</td>" in years and "1999" not in years
    dd = text.split("Worst drawdown periods")[1].split("</table>")[0]
    assert "1999-" not in dd


def test_a_run_without_warm_up_has_no_grey_region(report):
    assert 'class="warmup"' not in report.read_text()


def _region_shot(browser: Chromium, selector: str) -> tuple[dict, bytes]:
    box = browser.evaluate(f"(() => {{ const b = document.querySelector({selector!r}).getBoundingClientRect();"
                           "return {x: b.left + scrollX, y: b.top + scrollY, width: b.width, height: b.height}; })()")
    shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={**box, "scale": 1})
    return box, base64.b64decode(shot["data"])


def _share(png: bytes, test) -> float:
    from PIL import Image

    return float(np.mean(test(np.asarray(Image.open(io.BytesIO(png)).convert("HSV")))))


@needs_chromium
def test_a_screenshot_shows_the_log_scale_chart_and_the_drawdown_periods_table(report, tmp_path):
    with Chromium() as browser:
        visit = browser.open(report)
        assert visit.errors == [] and visit.offline_violations == []
        text = browser.evaluate("document.body.innerText")
        log_box, log_png = _region_shot(browser, 'svg[aria-label^="Cumulative return, log scale"]')
        dd_box, dd_png = _region_shot(browser, "table.drawdowns")
        rows = browser.evaluate("document.querySelectorAll('table.drawdowns tbody tr').length")
    (tmp_path / "log.png").write_bytes(log_png)
    (tmp_path / "dd.png").write_bytes(dd_png)
    assert "Worst drawdown periods (top 5)" in text and "not recovered" in text and rows == 5
    assert log_box["width"] > 500 and log_box["height"] > 120
    assert _share(log_png, lambda h: (h[..., 1] > 64) & (h[..., 2] > 40)) > 0.005     # both lines drawn
    assert dd_box["height"] > 100
    assert _share(dd_png, lambda h: h[..., 2] < 128) > 0.01                            # the table's text
    assert _share(dd_png, lambda h: (h[..., 0] < 10) & (h[..., 1] > 150)) > 0          # the red "not recovered"
    for chart in visit.charts:
        assert chart["path_length"] > 100 or chart["cells"] > 0 or chart["bars"] > 0, chart["title"]


@pytest.mark.parametrize("name, data, extra", [
    ("20 years daily with a benchmark", "qbot/sz.csv", ["--set", 'run.on_bad="drop"', "--benchmark", "BENCH"]),
    ("2 years of 5-minute bars", "zsh_a_etf/510050.csv", []),
])
@needs_chromium
def test_a_long_run_tear_sheet_stays_under_5_mb_and_every_chart_renders(shared_data, tmp_path, name, data, extra):
    extra = [str(shared_data / "stockhistorydata/000300.csv") if e == "BENCH" else e for e in extra]
    assert main(["backtest", "sma_cross", "--data", str(shared_data / data), "--param", "sizing=allin",
                 "--commission", "0.0005", "--out", str(tmp_path / "run"), "--quiet", *extra]) == 0
    path = tmp_path / "run" / "report.html"
    print(f"{name}: {path.stat().st_size:,} bytes")
    assert path.stat().st_size < 5 * MB
    with Chromium() as browser:
        visit = browser.open(path, screenshots=False)
    assert visit.errors == [] and visit.offline_violations == []
    titles = [c["title"] for c in visit.charts]
    assert any(t.startswith("Cumulative return, log scale") for t in titles)
    for chart in visit.charts:
        assert chart["path_length"] > 100 or chart["cells"] > 0 or chart["bars"] > 0, chart["title"]


def test_a_walk_forward_report_gets_the_tear_sheet_and_its_windows(tmp_path):
    from tests.test_walkforward import _sma_config

    _, out = run_walkforward(_sma_config(cash=1_000_000.0, start="2016-01-01"), WindowSpec("1y", "6m", warmup="3m"),
                             executor="serial", out=tmp_path / "wf", progress=False)
    text = (out / "report.html").read_text()
    for title in ("<h2>Walk-forward windows</h2>", "Cumulative return, log scale", "Worst drawdown periods",
                  "Return quantiles", "Yearly returns"):
        assert title in text, title
    assert text.index("Walk-forward windows") < text.index("Cumulative return, log scale")
