#!/usr/bin/env python3
"""tradeloop vs backtrader on the same SMA strategy and data, in one process tree.

Runs ../shared/bench/bt_sma.py (backtrader) and ``tradeloop backtest sma_cross`` on the
1M-bar series and the 100 x 10k universe (built by ../shared/bench/make_long.py and
make_multi.py when missing), then prints one JSON line per case with bars/s of each engine,
the ratio, both fill hashes and tradeloop's peak RSS.

backtrader's bars/s counts its engine run only (its CSV parsing is excluded, as in the bench
README); tradeloop's counts its whole run, loading and validating the CSV files included.
Each engine runs in its own subprocess so peak RSS is per engine.

Usage: python bench/vs_backtrader.py [--case long|multi|all] [--repeat N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
TMP = Path(tempfile.gettempdir()) / "bench_data"

OURS = r"""
import json, sys, time, resource, hashlib
t0 = time.perf_counter()
from tradeloop.engine.config.run import RunConfig, DataSpec
from tradeloop.engine.assembly.backtest import backtest
cfg = RunConfig()
cfg.run.strategy = "sma_cross"
cfg.run.cash = 100000.0
cfg.commission = {"kind": "percent", "rate": 0.001}
cfg.params = {"size": int(sys.argv[1])}
cfg.data = [DataSpec(p) for p in sys.argv[2:]]
t1 = time.perf_counter()
result, _ = backtest(cfg, write=False, progress=False)
t2 = time.perf_counter()
import numpy as np
h = hashlib.sha256()
for f in result.fills:
    stamp = str(np.datetime64(f.ts, "ns").astype("datetime64[s]")).replace("T", " ")
    size = str(int(f.qty)) if float(f.qty).is_integer() else repr(f.qty)
    h.update(f"{stamp},{f.symbol},{f.side.value},{size},{f.price:.6f}\n".encode())
print(json.dumps({"bars": result.bars, "fills": len(result.fills), "final_value": result.final_value,
                  "fills_sha256": h.hexdigest(), "run_s": t2 - t1, "import_s": t1 - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def ensure_data() -> dict[str, tuple[list[str], int]]:
    long_csv = TMP / "long" / "orcl_long_1m.csv"
    if not long_csv.exists():
        subprocess.run([sys.executable, str(SHARED / "bench" / "make_long.py")], check=True)
    multi = TMP / "multi"
    if not (multi / "sym099.csv").exists():
        subprocess.run([sys.executable, str(SHARED / "bench" / "make_multi.py")], check=True)
    return {"long": ([str(long_csv)], 1000), "multi": (sorted(str(p) for p in multi.glob("*.csv")), 10)}


def run_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=HERE.parent).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", choices=["long", "multi", "all"], default="all")
    ap.add_argument("--repeat", type=int, default=1, help="runs per engine; the median is reported")
    ap.add_argument("--skip-backtrader", action="store_true")
    a = ap.parse_args()
    cases = ensure_data()
    # warm the file cache (and numba's on-disk cache, for strategies that use its kernels)
    run_json([sys.executable, "-c", OURS, "1000", str(SHARED / "data" / "backtrader" / "orcl-2014.txt")])
    for name in (["long", "multi"] if a.case == "all" else [a.case]):
        files, size = cases[name]
        ours = [run_json([sys.executable, "-c", OURS, str(size), *files]) for _ in range(a.repeat)]
        ours.sort(key=lambda r: r["run_s"])
        o = ours[len(ours) // 2]
        row = {"case": name, "bars": o["bars"], "machine": f"{platform.machine()} {os.cpu_count()} cores",
               "tradeloop_bars_per_s": o["bars"] / o["run_s"], "tradeloop_run_s": o["run_s"],
               "tradeloop_peak_rss_mb": round(o["peak_rss_mb"], 1), "tradeloop_fills": o["fills"],
               "tradeloop_final_value": round(o["final_value"], 6), "tradeloop_fills_sha256": o["fills_sha256"]}
        if not a.skip_backtrader:
            bts = [run_json([sys.executable, str(SHARED / "bench" / "bt_sma.py"), *files, "--size", str(size),
                             "--max-fills", "0"]) for _ in range(a.repeat)]
            bts.sort(key=lambda r: r["t_run_s"])
            b = bts[len(bts) // 2]
            row.update({"backtrader_bars_per_s": b["bars_per_sec"], "backtrader_run_s": b["t_run_s"],
                        "backtrader_fills": b["n_fills"], "backtrader_final_value": round(b["final_value"], 6),
                        "backtrader_fills_sha256": b["fills_sha256"],
                        "ratio": (o["bars"] / o["run_s"]) / b["bars_per_sec"],
                        "same_fills": b["fills_sha256"] == o["fills_sha256"]})
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
