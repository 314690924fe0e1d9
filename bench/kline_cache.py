#!/usr/bin/env python3
"""KV cache speed-up of the K-line transformer: greedy generation of 64 steps at context 256 and 512,
with and without the cache, in the same process; prints the times, the speed-up and whether the
tokens are identical.

    .venv/bin/python bench/kline_cache.py [--size tiny|small|base] [--batch 1] [--repeat 3] [--threads 1]
        [--model NAME@latest --registry runs/models]      # a trained forecaster instead of random weights

Without ``--model`` the network has random weights (scaled so its logits are far from ties; speed
does not depend on them). The uncached path recomputes the whole sequence at every step, as the
published Kronos inference code does.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tradeloop.models.runtime.cpu import cpu_name  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny", help="sizes preset (models/kline/config.py)")
    ap.add_argument("--contexts", default="256,512")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None)
    ap.add_argument("--registry", default="runs/models")
    a = ap.parse_args(argv)

    import torch

    from tradeloop.models.kline.config import ModelSizes
    from tradeloop.models.kline.generate import generate
    from tradeloop.models.kline.transformer import KlineTransformer

    torch.set_num_threads(a.threads)
    if a.model:
        from tradeloop.models.registry import Registry
        net = Registry(a.registry).load(a.model, "torch-cpu").forecaster.transformer
        label = a.model
    else:
        sizes = ModelSizes.from_dict(a.size)
        torch.manual_seed(0)
        tv = (2 ** sizes.tokenizer.coarse_bits, 2 ** sizes.tokenizer.fine_bits)
        net = KlineTransformer(sizes.transformer, tv)
        with torch.no_grad():
            for p in net.parameters():
                if p.ndim > 1:
                    p.normal_(0, 0.4 / (sizes.transformer.d_model / 64) ** 0.5)
        label = f"random {a.size}"
    net = net.to(a.device).eval()
    c = net.cfg
    print(f"kline_cache: {label} (d={c.d_model}, layers={c.layers}, heads={c.heads}, vocab={net.vocab}), "
          f"batch {a.batch}, {a.steps} greedy steps, {a.threads} thread(s), device {a.device}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    g = torch.Generator().manual_seed(1)
    for T in (int(x) for x in a.contexts.split(",")):
        ctx = torch.stack([torch.randint(0, net.vocab[0], (a.batch, T), generator=g),
                           torch.randint(0, net.vocab[1], (a.batch, T), generator=g)], -1).to(a.device)
        generate(net, ctx[:, :8], 2, temperature=0)          # warm-up
        times: dict[bool, list[float]] = {True: [], False: []}
        out = {}
        for _ in range(a.repeat):
            for cache in (True, False):
                if a.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                out[cache] = generate(net, ctx, a.steps, temperature=0, use_cache=cache)
                if a.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[cache].append(time.perf_counter() - t0)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        same = bool(torch.equal(out[True], out[False]))
        print(f"context {T:4d}: with cache {on * 1e3:8.1f} ms ({on / a.steps * 1e3:6.2f} ms/step), "
              f"without {off * 1e3:8.1f} ms ({off / a.steps * 1e3:6.2f} ms/step), speed-up {off / on:5.1f}x, "
              f"tokens identical: {same}")
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
