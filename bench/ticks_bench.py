#!/usr/bin/env python3
"""Tick benchmark for tradeloop: the null and EMA-cross workloads of shared/bench/ticks (README there).

Each workload runs in its own process (peak RSS per run); the whole run is timed, Parquet loading
included. The reference loop (shared/bench/ticks/ref_py.py) runs in the same batch as the peer, and
the fills are compared by ``tickcommon.digest``. Usage:

    python bench/ticks_bench.py [--n 1|10] [--repeat 1] [--file PATH]      (make the data first:
    python shared/bench/ticks/make_ticks.py --n 1000000 --out $TMPDIR/ticks/ticks_1m.csv --parquet)

nautilus_trader is not run here (its own venv: ``shared/bench/ticks/nt_ticks.py``); the README's
figures (44k / 190k ticks/s on this machine kind) are printed for context.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "bench", "ticks"))


def load_series(path: str):
    """Parquet (make_ticks.py) -> TickSeries (bid/ask quotes with the last trade price)."""
    import numpy as np
    import pyarrow.parquet as pq
    from tradeloop.data.schema import TickSeries
    pf = pq.ParquetFile(path)   # row group by row group into preallocated columns: peak RSS ~ the columns
    n = pf.metadata.num_rows
    f = np.float64
    out = {"ts": np.empty(n, np.int64), **{c: np.empty(n, f) for c in
                                          ("bid", "ask", "last", "bid_size", "ask_size", "last_volume")}}
    a = 0
    for i in range(pf.num_row_groups):
        g = pf.read_row_group(i)
        b = a + g.num_rows
        out["ts"][a:b] = g.column("ts").cast("int64").to_numpy()
        for c in ("bid", "ask", "last", "bid_size", "ask_size", "last_volume"):
            out[c][a:b] = g.column(c).to_numpy()
        del g
        a = b
    return TickSeries("RM", out["ts"], np.arange(n, dtype=np.int64), out["last"], out["last_volume"],
                      out["bid"], out["ask"], out["bid_size"], out["ask_size"],
                      np.zeros(n, np.int8))


def child(workload: str, path: str) -> None:
    t0 = time.perf_counter()
    from tradeloop.engine.drivers.ticks import run_tick_backtest
    from tradeloop.engine.loop.strategy import Strategy
    from tradeloop.brokers.costs import PercentCommission
    from tradeloop.brokers.quotes import QuoteRules
    from tradeloop.brokers.sim import FillRules
    sys.path.insert(0, BENCH)
    import tickcommon as tc

    class Null(Strategy):
        pass

    class EmaCross(Strategy):
        """README workload (b): EMA(0.01) of the mid; cross up & flat -> buy 1, cross down & long -> sell."""

        def on_start(self, ctx):
            self.ema = self.prev = 0.0
            self.first = True

        def on_tick(self, ctx, t):
            mid = (t.bid + t.ask) / 2.0
            if self.first:
                self.ema = mid
                self.first = False
                return
            ema = self.ema = self.ema + 0.01 * (mid - self.ema)
            d = mid - ema
            prev = self.prev
            self.prev = d
            if prev <= 0.0 < d:
                if ctx.position("RM") == 0:
                    ctx.buy("RM", 1)
            elif prev >= 0.0 > d and ctx.position("RM") == 1:
                ctx.sell("RM", 1)

    series = load_series(path)
    t_load = time.perf_counter() - t0
    rules = FillRules(commission=PercentCommission(0.0))
    res = run_tick_backtest(Null() if workload == "null" else EmaCross(), [series], cash=10_000_000.0,
                            rules=rules, quotes=QuoteRules(size_limit=False))
    wall = time.perf_counter() - t0
    fills = [(f.ts, 1 if f.side.name == "BUY" else -1, f.price) for f in res.fills]
    n = len(series)
    pnl, pos = tc.pnl(fills, series.bid, series.ask) if workload == "sma" else (0.0, 0)
    print(json.dumps({"engine": "tradeloop", "workload": workload, "ticks": n, "wall_s": wall, "t_load_s": t_load,
                      "t_run_s": res.elapsed_s, "ticks_per_sec": n / wall, "run_ticks_per_sec": n / res.elapsed_s,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "fills": len(fills), "final_pnl": round(pnl, 4), "open_pos": pos,
                      "fills_sha256": tc.digest(fills) if workload == "sma" else None,
                      "equity_samples": len(res.ts)}), flush=True)


def run(cmd: list[str], env=None) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{cmd} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1, choices=(1, 10))
    ap.add_argument("--file")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--child", nargs=2, metavar=("WORKLOAD", "PATH"))
    a = ap.parse_args()
    if a.child:
        return child(*a.child)
    sys.path.insert(0, BENCH)
    import tickcommon as tc
    path = a.file or tc.DEFAULT[a.n]
    if not os.path.exists(path):
        raise SystemExit(f"no {path}: run {BENCH}/make_ticks.py --n {a.n * 1_000_000} --out "
                         f"{os.path.dirname(path)}/ticks_{a.n}m.csv --parquet")
    env = dict(os.environ, TMPDIR=os.path.dirname(os.path.dirname(path)))
    rows = []
    for wl in ("null", "sma"):
        for _ in range(a.repeat):
            ours = run([sys.executable, __file__, "--child", wl, path])
            ref = run([sys.executable, os.path.join(BENCH, "ref_py.py"), wl, str(a.n)], env=env)
            same = ours["fills"] == ref["fills"] and ours.get("fills_sha256") == ref.get("fills_sha256")
            rows.append((wl, ours, ref, same))
            print(f"{wl:4} tradeloop {ours['ticks_per_sec'] / 1e6:6.2f}M ticks/s whole run "
                  f"({ours['run_ticks_per_sec'] / 1e6:.2f}M run only, load {ours['t_load_s']:.2f}s), "
                  f"peak RSS {ours['peak_rss_mb']:.0f} MB, fills {ours['fills']} pnl {ours['final_pnl']} | "
                  f"ref_py {ref['ticks_per_sec'] / 1e6:.2f}M ticks/s run-only, fills {ref['fills']} "
                  f"pnl {ref['final_pnl']} | fills equal: {same} | vs nautilus (README: 44k sma / 190k null): "
                  f"{ours['ticks_per_sec'] / (44_000 if wl == 'sma' else 190_000):.0f}x", flush=True)
    print(json.dumps([{"workload": w, "tradeloop": o, "ref_py": r, "fills_equal": s} for w, o, r, s in rows]))


if __name__ == "__main__":
    main()
