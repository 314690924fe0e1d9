"""Evaluation of the forecaster against naive baselines on a held-out span, per horizon.

For every bar t of the test span (each symbol; the context may reach back before the span) the
forecaster draws ``samples`` paths of ``max(horizons)`` bars; for each horizon h the realised
simple return of the close r = c[t+h] / c[t] - 1 is compared with:

- MAE of the return: the paths' mean vs the random walk (zero return; its MAE is mean |r|) and
  the paths' median;
- direction hit rate (bars with r != 0): the sign of the paths' mean, P(up) > 0.5, the previous
  h-bar move's sign ("previous sign") and always up;
- calibration: the share of r inside the paths' 10-90% band (0.8 if calibrated) and its mean
  width, vs a random-walk band (the 10/90% quantiles of the context's own h-bar returns).

``python -m tradeloop.models.kline.evaluate`` (or ``tradeloop models kline-eval``) trains the
tokenizer and forecaster on the qbot A-share stock files 2010-2016 (the tokenizer also on the
US daily files of the same years) and evaluates on 2017-2020, printing a table and writing JSON.
Which qbot files: the 8 stocks; ``399986.SZ`` (an index, descending rows) and ``sz.csv`` (the
SSE index) are not stocks, and ``600519_unadjusted`` repeats 600519.SH unadjusted (its price
jumps at dividends would teach the model fake gaps): all three are left out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tradeloop.data.schema import BarSeries

from tradeloop.models.kline.spec import CLOSE, bar_matrix

QBOT_STOCKS = ("000002.SZ", "000651.SZ", "000858.SZ", "300059.SZ", "600036.SH", "600519.SH", "601318.SH",
               "601398.SH")
US_DAILY = ("backtesting_py/GOOG.csv", "backtrader/orcl-1995-2014.txt", "backtrader/nvda-1999-2014.txt",
            "backtrader/yhoo-1996-2014.txt", "zipline/AAPL.csv.gz", "zipline/MSFT.csv.gz")


@dataclass(frozen=True)
class HorizonScores:
    """Every figure of one horizon (see the module docs)."""

    horizon: int
    n: int
    mae_model: float
    mae_model_median: float
    mae_zero: float
    hit_model: float
    hit_p_up: float
    hit_previous_sign: float
    hit_always_up: float
    coverage_model: float
    width_model: float
    coverage_random_walk: float
    width_random_walk: float


def _ns(date: str) -> int:
    return int(np.datetime64(date, "ns").astype(np.int64))


def evaluate(forecaster: Any, series: list[BarSeries], start: str, end: str, *, horizons: Sequence[int] = (1, 5),
             samples: int = 32, seed: int = 0, chunk: int = 256, temperature: float | None = None,
             top_p: float | None = None) -> dict[str, Any]:
    """Scores of ``forecaster`` on every bar of [start, end) of every series, per horizon; and per symbol counts."""
    from tradeloop.models.kline.generate import window_seed

    L, H = forecaster.spec.lookback, max(horizons)
    lo, hi = _ns(start), _ns(end)
    rets: dict[int, list[np.ndarray]] = {h: [] for h in horizons}   # columns: realised, mean, median, q10, q90, p_up,
    t0 = time.perf_counter()                                          # previous, rw q10, rw q90
    per_symbol = {}
    for s in series:
        bars = bar_matrix(s)
        ts = np.asarray(s.ts)
        idx = np.flatnonzero((ts >= lo) & (ts < hi))
        idx = idx[(idx >= L - 1) & (idx + H < len(bars))]
        ok = np.array([np.isfinite(bars[t - L + 1:t + H + 1]).all() and (bars[t - L + 1:t + H + 1, :4] > 0).all()
                       for t in idx], bool)
        idx = idx[ok] if len(idx) else idx
        per_symbol[s.symbol] = int(len(idx))
        c = bars[:, CLOSE]
        for a in range(0, len(idx), chunk):
            t = idx[a:a + chunk]
            ctx = np.stack([bars[i - L + 1:i + 1] for i in t])
            seeds = [window_seed(seed, w.astype(np.float32)) for w in ctx]
            paths = forecaster.forecast_batch(ctx, H, samples, seeds, temperature=temperature, top_p=top_p)
            for h in horizons:
                r_paths = paths[:, :, h - 1, CLOSE] / c[t, None] - 1
                realised = c[t + h] / c[t] - 1
                prev = c[t] / c[t - h] - 1
                ctx_r = np.stack([c[i - L + 1 + h:i + 1] / c[i - L + 1:i + 1 - h] - 1 for i in t])
                q = np.quantile(r_paths, [0.1, 0.5, 0.9], axis=1)
                rq = np.quantile(ctx_r, [0.1, 0.9], axis=1)
                rets[h].append(np.stack([realised, r_paths.mean(1), q[1], q[0], q[2], (r_paths > 0).mean(1),
                                         prev, rq[0], rq[1]], axis=1))
    scores = []
    for h in horizons:
        m = np.concatenate(rets[h]) if rets[h] else np.empty((0, 9))
        r = m[:, 0]
        moved = r != 0
        hit = lambda pred: float((np.sign(pred[moved]) == np.sign(r[moved])).mean()) if moved.any() else float("nan")  # noqa: E731
        scores.append(HorizonScores(
            h, int(len(m)), float(np.abs(m[:, 1] - r).mean()), float(np.abs(m[:, 2] - r).mean()), float(np.abs(r).mean()),
            hit(m[:, 1]), hit(m[:, 5] - 0.5), hit(m[:, 6]), hit(np.ones_like(r)),
            float(((r >= m[:, 3]) & (r <= m[:, 4])).mean()), float((m[:, 4] - m[:, 3]).mean()),
            float(((r >= m[:, 7]) & (r <= m[:, 8])).mean()), float((m[:, 8] - m[:, 7]).mean())))
    st = forecaster.settings
    return {"span": [start, end], "samples": samples, "symbols": per_symbol,
            "temperature": st.temperature if temperature is None else temperature,
            "top_p": st.top_p if top_p is None else top_p,
            "horizons": [s.__dict__ for s in scores], "seconds": round(time.perf_counter() - t0, 1)}


def table(report: dict[str, Any]) -> str:
    """The scores as a plain-text table (one row per horizon and predictor)."""
    lines = [f"{'h':>2} {'n':>6} {'predictor':<24} {'MAE %':>7} {'hit %':>8} {'10-90 in %':>11} {'band width %':>12}"]
    for s in report["horizons"]:
        h, n = s["horizon"], s["n"]
        rows = [("forecaster (mean)", s["mae_model"], s["hit_model"], s["coverage_model"], s["width_model"]),
                ("forecaster median/P(up)", s["mae_model_median"], s["hit_p_up"], None, None),
                ("random walk (zero)", s["mae_zero"], None, s["coverage_random_walk"], s["width_random_walk"]),
                ("previous sign", None, s["hit_previous_sign"], None, None),
                ("always up", None, s["hit_always_up"], None, None)]
        for name, mae, hit, cov, width in rows:
            f = lambda v, k=100: "-" if v is None else f"{v * k:.2f}"  # noqa: E731
            lines.append(f"{h:>2} {n:>6} {name:<24} {f(mae):>7} {f(hit):>8} {f(cov):>11} {f(width):>12}")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    """Arguments of ``kline-eval``."""
    ap = argparse.ArgumentParser(prog="tradeloop models kline-eval",
                                 description="train the K-line forecaster on qbot 2010-2016, evaluate on 2017-2020")
    ap.add_argument("--data-dir", default="../shared/data", help="the shared data folder (qbot/, backtrader/, ...)")
    ap.add_argument("--registry", default="runs/models")
    ap.add_argument("--name", default="kline-qbot")
    ap.add_argument("--model", default=None, help="evaluate this registry forecaster instead of training one")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--steps", type=int, default=1500, help="transformer training steps")
    ap.add_argument("--tokenizer-steps", type=int, default=2000)
    ap.add_argument("--lookback", type=int, default=64)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=None, help="default: the model's")
    ap.add_argument("--top-p", type=float, default=None, help="default: the model's")
    ap.add_argument("--no-us", action="store_true", help="train the tokenizer on the qbot files only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, metavar="FILE", help="write the report here too")
    return ap


def run(a: argparse.Namespace, progress: Any = print) -> dict[str, Any]:
    """Train (unless ``--model``) and evaluate; the report."""
    import torch

    from tradeloop.data.loaders import load_bars
    from tradeloop.models.errors import ModelError
    from tradeloop.models.kline.train import train_forecaster
    from tradeloop.models.registry import Registry

    torch.set_num_threads(a.threads)
    root = Path(a.data_dir)
    files = [root / "qbot" / f"{s}.csv" for s in QBOT_STOCKS]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise ModelError(f"kline-eval: data file(s) not found: {', '.join(missing)} (set --data-dir)")
    series = [load_bars(p) for p in files]
    ref, train_s = a.model, 0.0
    if ref is None:
        us = [] if a.no_us else [str(root / f) for f in US_DAILY if (root / f).is_file()]
        t0 = time.perf_counter()
        ref = train_forecaster({"name": a.name, "data": [str(p) for p in files], "tokenizer_data": us,
                                "registry": a.registry, "size": a.size, "lookback": a.lookback,
                                "train_start": "2010-01-01", "train_end": "2016-07-01", "val_end": "2017-01-01",
                                "steps": a.steps, "tokenizer_steps": a.tokenizer_steps, "threads": a.threads,
                                "samples": 16, "horizon": 5}, series, progress=progress)
        train_s = time.perf_counter() - t0
        progress(f"trained {ref} in {train_s:.0f} s")
    model = Registry(a.registry).load(ref, "torch-cpu", threads=a.threads)
    report = evaluate(model.forecaster, series, "2017-01-01", "2021-01-01", samples=a.samples,
                      temperature=a.temperature, top_p=a.top_p)
    report.update(model=str(ref), train_seconds=round(train_s, 1), training=model.info.metadata.get("metrics"))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``kline-eval``: exit 2 with one line on a bad argument or missing data."""
    from tradeloop.models.errors import ModelError

    a = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        report = run(a)
    except ModelError as e:
        print(f"tradeloop models kline-eval: error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(table(report))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
