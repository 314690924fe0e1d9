#!/usr/bin/env python3
"""A 12-window walk-forward with retraining, serial vs a 2-worker process pool: wall times and their ratio.

The walk-forward of ``strategies/configs/walkforward_qbot.toml`` (model_signal on the 8 qbot
A-share files, 2-year training, 6-month tests), cut at ``--end`` (default 2018-01-01: 12 windows,
tests 2012-01 .. 2017-12), trained with ``--epochs`` epochs and no early stop so every window
does the same work. Each executor writes its own registry and run folder in a temporary folder;
the stitched fills and metrics must be identical (checked). Target: ratio >= 1.7 on 2 cores.

Prints one JSON object: the minimum wall time per executor over ``--repeat`` alternating runs, all
runs, the CPU cores each run kept busy on average (CPU seconds of the process and its pool workers
over wall seconds: 1.0 serial and near 2.0 for the pool on an idle 2-core machine; less when other
work takes the cores) and the 1-minute load average at the end.
Usage: python bench/walkforward_bench.py [--epochs 4] [--end 2018-01-01] [--workers 2] [--repeat 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "strategies" / "configs" / "walkforward_qbot.toml"


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the pool's workers once it shut down)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run(executor: str, tmp: Path, a: argparse.Namespace) -> tuple[float, float, dict, bytes]:
    """One walk-forward on ``executor``: (wall seconds, CPU seconds, metrics, fills.parquet bytes)."""
    from tradeloop.engine.cli.main import build_parser
    from tradeloop.engine.research.walkforward import run_walkforward
    from tradeloop.engine.cli.walkforward import settings_from_args
    args = build_parser().parse_args(["walkforward", "--config", str(CONFIG), "--set", f"run.end=\"{a.end}\"",
                                      "--set", f"train.epochs={a.epochs}", "--set", f"train.patience={a.epochs}",
                                      "--set", f"train.registry=\"{tmp / executor / 'models'}\""])
    cfg, spec, train, embargo_given = settings_from_args(args)
    t0, c0 = time.perf_counter(), _cpu()
    wf, out = run_walkforward(cfg, spec, train, embargo_given=embargo_given, executor=executor, workers=a.workers,
                              out=tmp / executor / "run", progress=False)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    assert wf.result.metrics["walkforward"]["failed"] == 0, wf.result.metrics["windows"]
    return seconds, cpu, json.loads((out / "metrics.json").read_text()), (out / "fills.parquet").read_bytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--end", default="2018-01-01", help="run.end: 2018-01-01 gives 12 windows")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="runs per executor, alternating; the minimum counts")
    a = ap.parse_args()
    os.chdir(ROOT)  # the config's data paths are relative to the repository root
    sys.path.insert(0, str(ROOT))
    from tradeloop.engine.telemetry.logs import configure
    configure(level="warning")
    times: dict[str, list[float]] = {"serial": [], "process": []}
    cores: dict[str, list[float]] = {"serial": [], "process": []}
    outputs = set()
    for i in range(a.repeat):
        for executor in (("serial", "process") if i % 2 == 0 else ("process", "serial")):
            with tempfile.TemporaryDirectory(prefix="wf-bench-") as d:
                seconds, cpu, metrics, fills = run(executor, Path(d), a)
            times[executor].append(round(seconds, 2))
            cores[executor].append(round(cpu / seconds, 2))   # < 1 per busy process: others took the cores
            outputs.add((json.dumps(metrics, sort_keys=True), fills))
    serial_s, process_s = min(times["serial"]), min(times["process"])
    print(json.dumps({
        "bench": "walkforward", "windows": metrics["walkforward"]["windows"], "epochs": a.epochs,
        "workers": a.workers, "cpus": os.cpu_count(), "machine": platform.machine(),
        "load_average_1m": round(os.getloadavg()[0], 2), "serial_s": serial_s, "process_s": process_s,
        "ratio": round(serial_s / process_s, 3), "target_ratio": 1.7, "runs": times, "cores_used": cores,
        "identical": len(outputs) == 1, "final_value": metrics["final_value"], "sharpe": metrics["sharpe"],
    }))


if __name__ == "__main__":
    main()
