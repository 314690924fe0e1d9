"""Predictor runtime latency: p50/p99 per call and windows/s for each batch size, as JSON.

    tradeloop models bench --runtime onnx-cpu --batch 1,64,512,4096     (or python bench/models_bench.py ...)
    tradeloop models bench --runtime onnx-cpu-int8,torch-cpu-bf16,onnx-cpu,torch-cpu --model qbot@latest \\
        --registry runs/models

Without ``--model`` it times the default-size network (Conv1d 16->64, 4 encoder layers of width
64 with 8 heads, 64 x 16 windows) with seeded random weights, exported to a temporary folder.
Inputs are real windows (features of ``--data``). Each runtime's logits are also compared with
torch fp32 on those windows (``agreement``: max |logit diff| and share of the same class). The
report names the CPU's bf16/int8 matrix units (``cpu_flags``; ``cpu_cap``: the level they are
capped at, ``runtime/cpu.py``) and the load average before and after; ``windows_per_cpu_s``
divides by this thread's CPU time, not counting time spent waiting for a core held by other work;
``--chunk`` overrides a runtime's default chunk (windows per internal call).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from tradeloop.models.runtime.base import runtime_detail

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qbot" / "600519.SH.csv"  # ../shared beside the checkout


def real_windows(spec, path: Path) -> np.ndarray:
    """Every full window of one bar file."""
    from tradeloop.data.loaders import load_bars
    from tradeloop.models.features import compute_features, window_ends, windows_at

    s = load_bars(path)
    return windows_at(compute_features(s, spec), window_ends(len(s), spec), spec.lookback)


def random_model(folder: Path, data: Path):
    """Default-size network, seeded random weights, standardization fitted on real windows, saved."""
    import torch

    from tradeloop.models.features import FeatureSpec
    from tradeloop.models.nets import NetConfig
    from tradeloop.models.registry import Registry

    torch.manual_seed(0)
    from tradeloop.models.nets import build_net

    spec = FeatureSpec()
    net = build_net(NetConfig(), 16, spec.lookback)
    net.norm_in.fit(torch.from_numpy(real_windows(spec, data)))
    reg = Registry(folder)
    return reg, str(reg.save("bench", net.eval(), spec, NetConfig()))


def time_calls(predict, x: np.ndarray, iters: int, warmup: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-call wall times and this thread's CPU times, in ms.

    CPU time does not count waiting for a core, so on a machine shared with other work it shows
    what one core does (caches and memory bandwidth are still shared).
    """
    for _ in range(warmup):
        predict(x)
    wall, cpu = np.empty(iters), np.empty(iters)
    for i in range(iters):
        t, c = time.perf_counter(), time.thread_time()
        predict(x)
        wall[i], cpu[i] = time.perf_counter() - t, time.thread_time() - c
    return wall * 1e3, cpu * 1e3


def parser(prog: str = "tradeloop models bench") -> argparse.ArgumentParser:
    """The bench's arguments (``tradeloop models bench`` adds ``--json``/``--quiet`` on the CLI side)."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", default="onnx-cpu", help="comma list of runtimes")
    ap.add_argument("--batch", default="1,64,512,4096", help="comma list of batch sizes")
    ap.add_argument("--model", help="registry model NAME@VERSION (default: random default-size network)")
    ap.add_argument("--registry", default="runs/models")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="bar file the real windows come from")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per batch size (about)")
    ap.add_argument("--chunk", type=int, help="windows per internal call of a big batch (default: the runtime's)")
    return ap


def run_bench(a: argparse.Namespace) -> dict:
    """Time every runtime of ``a.runtime`` at every batch size of ``a.batch``: the report dict (see the module)."""
    batches = [int(b) for b in a.batch.split(",")]

    from tradeloop.models.registry import Registry
    from tradeloop.models.runtime.cpu import capabilities, max_isa

    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as tmp:
        if a.model:
            reg, ref = Registry(a.registry), a.model
        else:
            reg, ref = random_model(Path(tmp), Path(a.data))
        reference = reg.load(ref, "torch-cpu", threads=a.threads)
        windows = real_windows(reference.spec, Path(a.data))
        want = reference.predict(windows)
        report = {"model": ref, "threads": a.threads, "cpu": platform.processor() or platform.machine(),
                  "cpu_count": os.cpu_count(), "cpu_flags": capabilities(), "cpu_cap": max_isa(),
                  "python": platform.python_version(), "runtimes": []}
        for name in a.runtime.split(","):
            m = reg.load(ref, name, threads=a.threads, **({"chunk": a.chunk} if a.chunk else {}))
            got = np.concatenate([m.predict(windows[i:i + 512]) for i in range(0, len(windows), 512)])
            entry = {"runtime": name, "chunk": None, **runtime_detail(m.runtime),
                     "agreement": {"windows": len(windows), "max_abs_diff": float(np.abs(got - want).max()),
                                   "same_class": float((got.argmax(1) == want.argmax(1)).mean())},
                     "batches": []}
            for b in batches:
                x = np.ascontiguousarray(np.resize(windows, (b, *windows.shape[1:])))
                one = time_calls(m.predict, x, 2, 1)[0].mean() / 1e3
                iters = int(min(5000, max(5, a.budget / max(one, 1e-6))))
                ms, cpu = time_calls(m.predict, x, iters, min(200, max(1, iters // 10)))
                p50 = float(np.percentile(ms, 50))
                entry["batches"].append({"batch": b, "iters": iters, "p50_ms": round(p50, 4),
                                         "p99_ms": round(float(np.percentile(ms, 99)), 4),
                                         "windows_per_s": round(b / (p50 / 1e3), 1),
                                         "windows_per_cpu_s": round(b / (float(np.median(cpu)) / 1e3), 1)})
            report["runtimes"].append(entry)
    report["load_avg_1m"] = [load_before, round(os.getloadavg()[0], 2)]
    return report


def main(argv: list[str] | None = None) -> int:
    """``python bench/models_bench.py``: the report as indented JSON (``tradeloop models bench`` prints a table)."""
    print(json.dumps(run_bench(parser().parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
