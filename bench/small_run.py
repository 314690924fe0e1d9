#!/usr/bin/env python3
"""Wall time of a whole `tradeloop backtest` process on a small file (backtrader's ORCL daily bars,
../shared/data/backtrader/orcl-1995-2014.txt, or the same file under $TRADELOOP_SHARED_DATA).

Target: under 2 s, process start to exit, with numba's on-disk cache warm (the first run on a
machine compiles the indicator kernels once). Also reports whether torch was imported: heavy
imports happen only when a model is used. Prints one JSON line.

Usage: python bench/small_run.py [--repeat N]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TRADELOOP_SHARED_DATA") or ROOT.parent / "shared" / "data")
SAMPLE = SHARED_DATA / "backtrader" / "orcl-1995-2014.txt"


def once(out: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tradeloop", "backtest", "sma_cross", "--data", str(SAMPLE),
                    "--param", "size=1000", "--cash", "100000", "--commission", "0.001", "--out", str(out),
                    "--quiet"], check=True, cwd=ROOT, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    if not SAMPLE.exists():
        sys.exit(f"{SAMPLE} not found: put ../shared beside the clone or set TRADELOOP_SHARED_DATA")
    with tempfile.TemporaryDirectory() as tmp:
        first = once(Path(tmp) / "warm")
        times = [once(Path(tmp) / f"r{i}") for i in range(a.repeat)]
    probe = subprocess.run([sys.executable, "-c", "import sys, tradeloop.engine.assembly.backtest; print('torch' in sys.modules)"],
                           capture_output=True, text=True, cwd=ROOT).stdout.strip()
    print(json.dumps({"bars": 5036, "first_run_s": round(first, 3), "median_s": round(statistics.median(times), 3),
                      "max_s": round(max(times), 3), "target_s": 2.0, "torch_imported": probe == "True"}))


if __name__ == "__main__":
    main()
