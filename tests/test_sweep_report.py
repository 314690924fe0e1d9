"""The sweep folder's report.html (engine/report/sweep.py): ranking, grid heat map or bars, deflated Sharpe explained."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from tradeloop.engine.cli.main import main
from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.report.sweep import render_sweep_report
from tradeloop.engine.research.sweep import parse_grid, run_sweep
from tests.browser import Chromium, chromium_binary
from tests.conftest import ORCL, need

needs_chromium = pytest.mark.skipif(chromium_binary() is None, reason="no chromium binary (apt-get install chromium)")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    cfg.run.start, cfg.run.end = "2005-01-01", "2008-01-01"
    cfg.data = [DataSpec(path=str(need(ORCL)))]
    out = tmp_path_factory.mktemp("sweep") / "sw"
    run_sweep(cfg, parse_grid(["fast=5,10,20", "slow=30,60"]), executor="serial", out=out, progress=False)
    return out


def test_a_2d_sweep_writes_a_report_with_the_heat_map_ranking_and_dsr_explained(sweep_dir):
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    text = (sweep_dir / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>") and "<script" not in text and "http" not in text.split("</style>")[1]
    assert 'data-kind="heatmap"' in text and 'data-cells="6"' in text
    assert "fast (rows) x slow (columns)" in text and "fast=5" in text and "slow=60" in text
    assert text.count("<tr>") == 1 + summary["ok"]                      # header + one row per ranked point
    best = summary["best"]
    assert f"{best['deflated_sharpe']:.1%}" in text
    assert f"after allowing for having tried {best['trials']} points" in text
    assert f"variance {best['trials_sharpe_variance_daily']:.3g}" in text
    assert "probability that the best point&#x27;s Sharpe ratio is real" in text


def test_tradeloop_report_rewrites_a_sweep_folder_and_a_1d_grid_gets_bars(sweep_dir, tmp_path, capsys):
    (sweep_dir / "report.html").unlink()
    assert main(["report", str(sweep_dir)]) == 0
    assert capsys.readouterr().out.strip() == str(sweep_dir / "report.html")
    assert 'data-kind="heatmap"' in (sweep_dir / "report.html").read_text()
    summary = json.loads((sweep_dir / "sweep.json").read_text())
    one = {**summary, "grid": {"params.fast": summary["grid"]["params.fast"]},
           "ranking": [{**r, "params": {"params.fast": r["params"]["params.fast"]}} for r in summary["ranking"]
                       if r["params"]["params.slow"] == 30]}
    html = render_sweep_report(one)
    assert 'data-kind="bar"' in html and 'data-bars="3"' in html and "Sharpe ratio by fast" in html
    none = render_sweep_report({**summary, "best": None, "ranking": []})
    assert "no best point" in none


@needs_chromium
def test_the_sweep_report_renders_the_heat_map_in_chromium(sweep_dir, tmp_path):
    from PIL import Image

    with Chromium() as browser:
        visit = browser.open(sweep_dir / "report.html")
        assert visit.errors == [] and visit.offline_violations == []
        box = browser.evaluate("(() => { const b = document.querySelector('svg[data-kind=\"heatmap\"]')"
                               ".getBoundingClientRect(); return {x: b.left + scrollX, y: b.top + scrollY, "
                               "width: b.width, height: b.height}; })()")
        shot = browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip={**box, "scale": 1})
        text = browser.evaluate("document.body.innerText")
    png = base64.b64decode(shot["data"])
    (tmp_path / "heatmap.png").write_bytes(png)
    assert box["width"] > 500 and box["height"] > 80
    hsv = np.asarray(Image.open(io.BytesIO(png)).convert("HSV"))
    assert float(np.mean(hsv[..., 1] > 40)) > 0.05          # coloured cells, not a blank region
    assert float(np.mean(hsv[..., 2] < 128)) > 0.002        # the labels' text
    assert "deflated Sharpe" in text and "Ranking" in text
