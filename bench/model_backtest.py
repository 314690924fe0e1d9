#!/usr/bin/env python3
"""End-to-end bars/s of the model backtest (the models README's worked example), per runtime, as JSON.

The ``model_signal`` strategy over the 8 qbot A-share files, bars from ``--warmup-from`` (features
warm) to ``--test-end``, orders from ``--trade-from``. Each run is a fresh process, so nothing is
cached between runs; it reports

- ``bars_per_s``: the backtest's bars / ``run_backtest`` wall time, which includes opening the
  model (registry checks, runtime session), the predictor's precompute over every window, and the
  event loop, in a fresh process: the first call also pays for numba's first call (~0.27 s with
  scipy installed, more than half a 20k bars/s run) and, for runtimes that need it, importing torch;
- ``warm_bars_per_s`` (and ``warm_precompute_s``): the same backtest run again in that process, as
  the next run of a research session or a sweep is: the model opened, features and every prediction
  computed afresh, only imports and compiled code already loaded (the run must end equal);
- ``precompute_s`` of that, and ``process_bars_per_s``: bars / (imports + CSV loading + backtest);
- ``backtest_cpu_s``: CPU time of the backtest summed over its threads, and ``bars_per_cpu_s``:
  bars per CPU-second, what one core does when it is not waiting for other work on the machine.

Medians of ``--repeat`` runs. Without the model in the registry, ``--train`` trains a short one
first (1 epoch: throughput does not depend on the weights).

    .venv/bin/python bench/model_backtest.py --runtime onnx-cpu-int8,torch-cpu-bf16 --repeat 3 [--workers 2] [--no-native]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

T_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
QBOT = ROOT.parent / "shared" / "data" / "qbot"
SYMBOLS = ("000002.SZ", "000651.SZ", "000858.SZ", "300059.SZ", "600036.SH", "600519.SH", "601318.SH", "601398.SH")


def files(data: Path) -> list[str]:
    """The 8 qbot stock files."""
    return [str(data / f"{s}.csv") for s in SYMBOLS]


def ensure_model(a: argparse.Namespace) -> None:
    """Train a short default-network model if ``--model`` is not in the registry (with --train)."""
    sys.path.insert(0, str(ROOT))
    from tradeloop.models.errors import RegistryError
    from tradeloop.models.registry import Registry

    try:
        Registry(a.registry).resolve(a.model)
        return
    except RegistryError:
        if not a.train:
            raise SystemExit(f"model {a.model} is not in {a.registry}: pass --train to train a short one") from None
    from tradeloop.models.train import train

    name = a.model.partition("@")[0]
    train({"name": name, "data": files(Path(a.data)), "registry": a.registry, "train_start": "2010-01-01",
           "train_end": "2016-01-01", "val_end": a.trade_from, "test_end": a.test_end, "epochs": 1,
           "threads": 1, "progress": False})


def child(a: argparse.Namespace) -> dict:
    """One cold run in this process: import, load, backtest; timings."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from tradeloop.data.loaders import load_bars
    from tradeloop.engine.drivers.backtest import run_backtest
    from tradeloop.models import predictor as predictor_mod
    from tradeloop.strategies.model_signal import ModelSignal

    t_import = time.perf_counter()
    lo, hi = (int(np.datetime64(d, "ns").astype(np.int64)) for d in (a.warmup_from, a.test_end))
    series = [load_bars(p).between(lo, hi) for p in files(Path(a.data))]
    t_load = time.perf_counter()
    spent: list[float] = []
    precompute = predictor_mod.Predictor.precompute
    workers = None if a.workers == 0 else a.workers

    def timed(self, s):  # the bench's own probe: how much of the backtest is the precompute
        self.batch_workers = predictor_mod.resolve_workers(workers)
        t = time.perf_counter()
        out = precompute(self, s)
        spent.append(time.perf_counter() - t)
        return out

    predictor_mod.Predictor.precompute = timed
    if a.no_native:  # the comparison run: torch-cpu-bf16 without the AVX-512 kernels
        from tradeloop.models.runtime import native

        native._loaded = lambda: (None, "--no-native")
    trade_from = int(np.datetime64(a.trade_from, "ns").astype(np.int64))

    def backtest():
        return run_backtest(ModelSignal(model=a.model, registry=a.registry, runtime=a.runtime_one), series,
                            cash=1_000_000.0, trade_from=trade_from)

    c0 = time.process_time()
    result = backtest()
    cpu = time.process_time() - c0
    t_end = time.perf_counter()
    cold_precompute = sum(spent)
    # the same backtest again in this process: what a research session's next run costs (imports and
    # compiled kernels loaded; model opened, features and every prediction computed afresh)
    warm = backtest()
    if warm.final_value != result.final_value:
        raise SystemExit(f"the second run ended at {warm.final_value}, the first at {result.final_value}")
    return {"runtime": a.runtime_one, "bars": result.bars, "backtest_s": result.elapsed_s,
            "bars_per_s": result.bars / result.elapsed_s, "precompute_s": cold_precompute,
            "warm_bars_per_s": warm.bars / warm.elapsed_s, "warm_precompute_s": spent[-1],
            "backtest_cpu_s": cpu, "bars_per_cpu_s": result.bars / cpu,
            "import_s": t_import - T_START, "load_s": t_load - t_import,
            "process_bars_per_s": result.bars / (t_end - T_START), "fills": len(result.fills),
            "total_return": result.final_value / 1_000_000.0 - 1.0, "torch_imported": "torch" in sys.modules,
            "batch_workers": predictor_mod.resolve_workers(workers)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", default="onnx-cpu-int8,onnx-cpu,torch-cpu-bf16,torch-cpu")
    ap.add_argument("--model", default="qbot@latest")
    ap.add_argument("--registry", default=str(ROOT / "runs" / "models"))
    ap.add_argument("--data", default=str(QBOT))
    ap.add_argument("--warmup-from", default="2016-06-01")
    ap.add_argument("--trade-from", default="2017-01-01")
    ap.add_argument("--test-end", default="2021-01-01")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="precompute threads (0: every available core)")
    ap.add_argument("--train", action="store_true", help="train a short model first if --model is missing")
    ap.add_argument("--no-native", action="store_true", help="torch-cpu-bf16 without its AVX-512 kernels")
    ap.add_argument("--child", dest="runtime_one", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.runtime_one:
        print(json.dumps(child(a)))
        return 0
    ensure_model(a)
    load_before = round(os.getloadavg()[0], 2)
    passthrough = [f"--model={a.model}", f"--registry={a.registry}", f"--data={a.data}", f"--workers={a.workers}",
                   f"--warmup-from={a.warmup_from}", f"--trade-from={a.trade_from}", f"--test-end={a.test_end}",
                   *(["--no-native"] if a.no_native else [])]
    runs: dict[str, list[dict]] = {r: [] for r in a.runtime.split(",")}
    for _ in range(a.repeat):  # runtimes interleaved, so load from other work spreads over all of them
        for rt, done in runs.items():
            p = subprocess.run([sys.executable, __file__, f"--child={rt}", *passthrough], cwd=ROOT,
                               capture_output=True, text=True, check=False)
            if p.returncode:
                raise SystemExit(f"{rt}: child failed:\n{p.stderr[-3000:]}")
            done.append(json.loads(p.stdout.strip().splitlines()[-1]))
    keys = ("bars_per_s", "warm_bars_per_s", "warm_precompute_s", "backtest_s", "precompute_s", "import_s", "load_s",
            "process_bars_per_s", "backtest_cpu_s", "bars_per_cpu_s")
    report = {"model": a.model, "symbols": list(SYMBOLS), "period": [a.warmup_from, a.test_end],
              "trade_from": a.trade_from, "repeat": a.repeat, "native_kernels": not a.no_native, "cpu_count": os.cpu_count(),
              "python": platform.python_version(), "load_avg_1m": [load_before, round(os.getloadavg()[0], 2)],
              "runtimes": []}
    for rt, rs in runs.items():
        med = {k: round(statistics.median(r[k] for r in rs), 4) for k in keys}
        report["runtimes"].append({"runtime": rt, "bars": rs[0]["bars"], "batch_workers": rs[0]["batch_workers"],
                                   "torch_imported": rs[0]["torch_imported"], "fills": rs[0]["fills"],
                                   "total_return": round(rs[0]["total_return"], 4), **med,
                                   "bars_per_s_each": [round(r["bars_per_s"]) for r in rs]})
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
