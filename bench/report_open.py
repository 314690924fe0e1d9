#!/usr/bin/env python3
"""How big are the reports of long runs, and how fast do they open in headless Chromium?

Runs two backtests over ../shared/data (a 20-year daily run against the CSI 300, and a 2-year
5-minute run), then opens each report.html from disk in headless Chromium with the network off,
``--repeat`` times, each time in a fresh browser. Prints one JSON line per case:

* ``size_mb``            report.html size (target: under 5 MB)
* ``open_s``             Page.navigate -> load event, wall clock (median, max) (target: under 3 s)
* ``open_and_paint_s``   navigate -> a full-page screenshot is back: laid out and painted (median, max)
* ``load_event_ms``      the page's own navigation timing, loadEventEnd (median)
* ``browser_start_s``    Chromium start until its DevTools answer (median; not part of opening)

Usage: python bench/report_open.py [--repeat N] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from tradeloop.engine.config.run import DataSpec, RunConfig  # noqa: E402
from tradeloop.engine.telemetry.logs import configure  # noqa: E402
from tradeloop.engine.assembly.backtest import backtest  # noqa: E402
from tests.browser import Chromium, chromium_binary  # noqa: E402

CASES = {  # name: (data file, run.on_bad, benchmark)
    "daily_20y_sz_vs_csi300": ("qbot/sz.csv", "drop", "stockhistorydata/000300.csv"),
    "5min_2y_510050": ("zsh_a_etf/510050.csv", "raise", None),
}


def make_run(name: str, out: Path) -> Path:
    """One SMA-cross backtest of the case, with its report."""
    path, on_bad, bench = CASES[name]
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    cfg.run.on_bad = on_bad
    cfg.params = {"sizing": "allin"}
    cfg.commission = {"kind": "percent", "rate": 0.0005, "minimum": 0.0}
    cfg.data = [DataSpec(str(SHARED / path))]
    if bench:
        cfg.run.benchmark = str(SHARED / bench)
    _, run = backtest(cfg, out=out / name, progress=False)
    return run


def measure(report: Path, repeat: int) -> dict[str, object]:
    """Open ``report`` ``repeat`` times, each in a fresh headless Chromium, and summarise the timings."""
    opens, paints, loads, starts = [], [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        with Chromium() as browser:
            starts.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            visit = browser.open(report, screenshots=False)
            browser.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            paints.append(time.perf_counter() - t1)
        if visit.errors or visit.offline_violations:
            raise SystemExit(f"{report}: errors {visit.errors}, requests {visit.offline_violations}")
        opens.append(visit.open_s)
        loads.append(visit.timing["load_ms"])
    return {"open_s": [round(statistics.median(opens), 3), round(max(opens), 3)],
            "open_and_paint_s": [round(statistics.median(paints), 3), round(max(paints), 3)],
            "load_event_ms": round(statistics.median(loads), 1),
            "browser_start_s": round(statistics.median(starts), 3),
            "charts": len(visit.charts)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", metavar="DIR", help="write the runs here instead of a temporary folder")
    a = ap.parse_args()
    if chromium_binary() is None:
        print("no chromium binary on PATH (apt-get install chromium)", file=sys.stderr)
        return 1
    configure(level="warning")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(a.keep or tmp)
        for name in CASES:
            run = make_run(name, base)
            report = run / "report.html"
            bars = json.loads((run / "metrics.json").read_text())["bars"]
            row = {"case": name, "bars": bars, "size_mb": round(report.stat().st_size / 2**20, 3),
                   **measure(report, a.repeat), "chromium": chromium_binary()}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
