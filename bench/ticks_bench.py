#!/usr/bin/env python3
"""Tick benchmark for tradeloop: the null and EMA-cross workloads of shared/bench/ticks (README there).

Each workload runs in its own process (peak RSS per run); the whole run is timed, Parquet loading
included. The reference loop (shared/bench/ticks/ref_py.py) runs in the same batch as the peer, and
the fills are compared by ``tickcommon.digest``. Usage:

    python bench/ticks_bench.py [--n 1|10] [--repeat 1] [--file PATH]      (make the data first:
    python shared/bench/ticks/make_ticks.py --n 1000000 --out $TMPDIR/ticks/ticks_1m.csv --parquet)

nautilus_trader runs in its own venv: ``--nautilus /tmp/ntvenv/bin/python`` (a venv with
``nautilus_trader==1.221.0``) also runs ``shared/bench/ticks/nt_ticks.py sma N`` and tradeloop on the
same ticks (the --n file), back to back, and prints the ratio measured in this run (10M: several minutes
and ~5 GB for nautilus).
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
    """Parquet (make_ticks.py) -> TickSeries through ``tradeloop.data.ticks.load_ticks`` (row group by row
    group; ``compact``: float32 columns where every value is exact, so prices and fills are unchanged)."""
    from tradeloop.data.ticks import load_ticks
    return load_ticks(path, "RM", compact=True)


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
    ap.add_argument("--nautilus", metavar="PYTHON",
                    help="also run shared/bench/ticks/nt_ticks.py sma N (the --n file) with this interpreter (a venv "
                         "with nautilus_trader) and tradeloop on the same ticks, and print the measured ratio")
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
    summary = [{"workload": w, "tradeloop": o, "ref_py": r, "fills_equal": s} for w, o, r, s in rows]
    if a.nautilus:
        summary.append(nautilus(a.nautilus, tc, a.n))
    print(json.dumps(summary))


def nautilus(python: str, tc, n: int) -> dict:
    """nautilus_trader and tradeloop on the EMA workload of ``n`` million ticks, back to back: the ratio measured together."""
    path = tc.DEFAULT[n]
    if not os.path.exists(path):
        raise SystemExit(f"no {path}: run {BENCH}/make_ticks.py --n {n * 1_000_000} --out "
                         f"{os.path.dirname(path)}/ticks_{n}m.csv --parquet")
    env = dict(os.environ, TMPDIR=os.path.dirname(os.path.dirname(path)))
    ours = run([sys.executable, __file__, "--child", "sma", path])
    t0 = time.perf_counter()
    nt = run([python, os.path.join(BENCH, "nt_ticks.py"), "sma", str(n)], env=env)
    nt_wall = time.perf_counter() - t0
    nt_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024   # the largest child so far: nautilus's
    nt_rate = nt.get("ticks_per_sec") or nt["ticks"] / nt["t_run_s"]
    same = ours["fills"] == nt.get("fills") and ours["fills_sha256"] == nt.get("fills_sha256")
    print(f"sma {n}M: tradeloop {ours['ticks_per_sec'] / 1e3:,.0f}k ticks/s whole run, peak RSS "
          f"{ours['peak_rss_mb']:.0f} MB | nautilus_trader {nt.get('version', '')} {nt_rate / 1e3:,.1f}k "
          f"ticks/s engine.run() only ({nt_wall:.0f}s process, peak RSS {nt_rss:,.0f} MB), fills {nt.get('fills')} | fills equal: {same} | "
          f"ratio {ours['ticks_per_sec'] / nt_rate:,.0f}x", flush=True)
    return {"workload": f"sma-{n}m", "tradeloop": ours, "nautilus": nt, "nautilus_process_s": nt_wall, "nautilus_peak_rss_mb": nt_rss,
            "ratio": ours["ticks_per_sec"] / nt_rate, "fills_equal": same}


if __name__ == "__main__":
    main()
