#!/usr/bin/env python3
"""Prediction server throughput and latency, dynamic batching on and off (docs/serving.md).

For each model: a real ``tradeloop serve`` process per mode (batching on, then off); closed-loop
clients in separate processes (asyncio, several connections each; at most ``--client-procs``
processes) at 1, 4, 16 and 64 concurrent clients, each sending one-window requests back to back
for ``--seconds``. Prints throughput and p50/p99 latency per row, the on/off throughput ratio at
32+ clients, and, at one client, what the server adds over calling the same model in-process (one
process alternates a remote call and an in-process call of the same window, so both see the same
machine at the same moment). Models are the registry's real classifier configs, trained here for
one epoch on two qbot files (speed does not depend on the weights) unless ``--registry`` names
one. Targets (issue 17): batching on at 32+ clients >= 4x off with p99 <= 10 ms; one client adds
<= 0.3 ms.

    .venv/bin/python bench/serve_bench.py [--nets default,lstm] [--seconds 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tradeloop.models.runtime.cpu import cpu_name  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRADELOOP_SHARED_DATA", REPO.parent / "shared" / "data"))
NETS = {   # the registry's network configs (models/nets): the default ConvTransformer and the default LSTM
    "default": {"kind": "conv_transformer", "sizes": {}},
    "lstm": {"kind": "lstm", "sizes": {}},
    "tiny": {"kind": "conv_transformer", "sizes": {"d_model": 16, "layers": 1, "heads": 2, "ff": 32, "dropout": 0.0}},
}
CLIENTS = (1, 4, 16, 64)


def train_models(nets: list[str], root: str) -> dict[str, str]:
    """Train each net for one epoch into ``root``; name -> reference."""
    from tradeloop.models.train import train

    files = [str(SHARED / "qbot" / f) for f in ("600519.SH.csv", "000858.SZ.csv")]
    for f in files:
        if not Path(f).is_file():
            sys.exit(f"serve_bench: real data file {f} not found (set TRADELOOP_SHARED_DATA)")
    out = {}
    for net in nets:
        cfg = {"name": f"bench-{net}", "data": files, "registry": root, "train_start": "2011-01-01",
               "train_end": "2013-01-01", "val_end": "2013-07-01", "test_end": "2014-07-01", "epochs": 1,
               "batch_size": 256, "threads": 1, "progress": False, "net": NETS[net],
               "features": {"lookback": 16} if net == "tiny" else {}}
        out[net] = train(cfg)
    return out


def start_server(registry: str, model: str, batching: bool, args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "tradeloop.engine.cli.main", "serve", "--registry", registry, "--model", model,
           "--bind", "127.0.0.1:0", "--max-batch", str(args.max_batch), "--max-delay-us", str(args.max_delay_us),
           *([] if batching else ["--no-batching"])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    line = proc.stdout.readline()
    if "listening" not in line:
        proc.kill()
        sys.exit(f"serve_bench: server did not start: {line!r}")
    port = int(line.split("tcp://", 1)[1].split()[0].rsplit(":", 1)[1])
    return proc, port


def wait_ready(endpoint: str, name: str, shape: tuple[int, int]) -> None:
    from tradeloop.models.serve.client import ServeClient, ServerUnavailable

    c = ServeClient(endpoint, timeout_s=5)
    for _ in range(600):
        try:
            c.predict(name, np.zeros((1, *shape), np.float32))
            c.close()
            return
        except ServerUnavailable:
            time.sleep(0.05)
    sys.exit("serve_bench: server never became ready")


def client_proc(endpoint: str, name: str, shape: tuple[int, int], conns: int, start_at: float, warm: float,
                seconds: float, queue: mp.Queue) -> None:
    """``conns`` closed-loop asyncio connections; puts (latencies in s, requests in the window)."""
    from tradeloop.models.serve.client import AsyncServeClient

    async def one(seed: int) -> list[float]:
        c = await AsyncServeClient.connect(endpoint)
        x = np.random.default_rng(seed).normal(size=(1, *shape)).astype(np.float32)
        lat = []
        await asyncio.sleep(max(0.0, start_at - time.time()))
        t_on, t_end = time.perf_counter() + warm, time.perf_counter() + warm + seconds
        while True:
            t0 = time.perf_counter()
            await c.predict(name, x)
            t1 = time.perf_counter()
            if t1 >= t_end:
                break
            if t0 >= t_on:
                lat.append(t1 - t0)
        await c.close()
        return lat

    async def main() -> list[float]:
        parts = await asyncio.gather(*(one(os.getpid() * 1000 + i) for i in range(conns)))
        return [v for p in parts for v in p]

    queue.put(asyncio.run(main()))


def load_row(endpoint: str, name: str, shape: tuple[int, int], clients: int, args: argparse.Namespace) -> dict:
    procs_n = min(clients, args.client_procs)
    per = [clients // procs_n + (1 if i < clients % procs_n else 0) for i in range(procs_n)]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    start_at = time.time() + 1.5   # every process connected and importing done by then
    procs = [ctx.Process(target=client_proc, args=(endpoint, name, shape, n, start_at, args.warm, args.seconds, q))
             for n in per]
    for p in procs:
        p.start()
    lat = np.array([v for _ in procs for v in q.get(timeout=120)])
    for p in procs:
        p.join(30)
    return {"clients": clients, "requests": int(len(lat)), "throughput_rps": len(lat) / args.seconds,
            "p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3)}


def added_latency(endpoint: str, registry: str, ref: str, name: str, shape: tuple[int, int], n: int) -> dict:
    """One client, one process: remote call and in-process call of the same window, alternating."""
    from tradeloop.models.registry import Registry
    from tradeloop.models.serve.client import ServeClient

    model = Registry(registry).load(ref, "onnx-cpu")
    client = ServeClient(endpoint, timeout_s=5)
    x = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    for _ in range(200):
        client.predict(name, x)
        model.predict(x)
    remote, local = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        client.predict(name, x)
        t1 = time.perf_counter()
        model.predict(x)
        t2 = time.perf_counter()
        remote.append(t1 - t0)
        local.append(t2 - t1)
    client.close()
    r, lo = np.array(remote) * 1e3, np.array(local) * 1e3
    return {"remote_p50_ms": float(np.median(r)), "local_p50_ms": float(np.median(lo)),
            "added_p50_ms": float(np.median(r) - np.median(lo)), "remote_p99_ms": float(np.percentile(r, 99)),
            "local_p99_ms": float(np.percentile(lo, 99)), "calls": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="default,lstm", help=f"comma list of {', '.join(NETS)}")
    ap.add_argument("--registry", help="use this registry's models (with --models) instead of training")
    ap.add_argument("--models", help="comma list of NAME@VERSION in --registry")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warm", type=float, default=0.5)
    ap.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-delay-us", type=int, default=2000)
    ap.add_argument("--single-calls", type=int, default=3000, help="alternating calls of the one-client comparison")
    ap.add_argument("--json", help="also write the report here")
    args = ap.parse_args()
    from tradeloop.models.registry import Registry

    if args.registry:
        registry, refs = args.registry, {m.split("@")[0]: m for m in (args.models or "").split(",") if m}
    else:
        registry = tempfile.mkdtemp(prefix="serve-bench-")
        refs = train_models([n for n in args.nets.split(",") if n], registry)
    clients = [int(c) for c in args.clients.split(",")]
    report = {"cpu": cpu_name(), "cores": os.cpu_count(), "load_avg_1m_before": os.getloadavg()[0],
              "max_batch": args.max_batch, "max_delay_us": args.max_delay_us, "seconds": args.seconds, "models": []}
    for net, ref in refs.items():
        info = Registry(registry).info(ref)
        name, shape = info.ref.name, (info.lookback, info.n_features)
        entry: dict = {"net": net, "model": str(info.ref), "rows": {}}
        for batching in (True, False):
            proc, port = start_server(registry, str(info.ref), batching, args)
            endpoint = f"tcp://127.0.0.1:{port}"
            try:
                wait_ready(endpoint, name, shape)
                rows = [load_row(endpoint, name, shape, c, args) for c in clients]
                if batching:
                    entry["one_client"] = added_latency(endpoint, registry, str(info.ref), name, shape,
                                                        args.single_calls)
            finally:
                proc.terminate()
                proc.wait(20)
            entry["rows"]["on" if batching else "off"] = rows
        on, off = ({r["clients"]: r for r in entry["rows"][k]} for k in ("on", "off"))
        entry["ratio_on_off"] = {c: on[c]["throughput_rps"] / off[c]["throughput_rps"] for c in clients if c >= 32}
        report["models"].append(entry)
        print_entry(entry)
    report["load_avg_1m_after"] = os.getloadavg()[0]
    print(f"machine: {report['cpu']}, {report['cores']} cores; load average (1 min) before/after "
          f"{report['load_avg_1m_before']:.2f}/{report['load_avg_1m_after']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def print_entry(e: dict) -> None:
    print(f"\n{e['model']} ({e['net']})")
    print(f"{'batching':>9} {'clients':>8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for mode in ("on", "off"):
        for r in e["rows"][mode]:
            print(f"{mode:>9} {r['clients']:>8} {r['throughput_rps']:>10,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    for c, ratio in e["ratio_on_off"].items():
        on = next(r for r in e["rows"]["on"] if r["clients"] == c)
        print(f"{c} clients: throughput on/off {ratio:.2f}x (target >= 4x), p99 on {on['p99_ms']:.2f} ms (target <= 10)")
    o = e["one_client"]
    print(f"1 client: remote p50 {o['remote_p50_ms']:.3f} ms vs in-process {o['local_p50_ms']:.3f} ms: "
          f"the server adds {o['added_p50_ms']:.3f} ms (target <= 0.3); p99 {o['remote_p99_ms']:.3f} vs "
          f"{o['local_p99_ms']:.3f} ms")


if __name__ == "__main__":
    sys.exit(main())
