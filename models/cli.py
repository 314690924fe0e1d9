"""``tradeloop models train|bench``: train a registry model from a TOML file; time the runtimes."""
from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Sequence


def read_config(path: str, sets: Sequence[str]) -> dict[str, Any]:
    """A training TOML file with ``--set KEY=VALUE`` overrides (each value read as TOML, else as text)."""
    raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value")
        try:
            raw[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            raw[key.strip()] = value
    return raw


def main(argv: Sequence[str] | None = None, progress: Callable[..., Any] | None = None) -> int:
    """Entry point of ``tradeloop models ...``; exit 2 with a clear message on a bad config.

    ``progress`` is handed to ``train()`` (``tradeloop models train`` passes the engine's LazyProgress;
    without it training writes a rich bar on a terminal, one line per epoch on a pipe).
    """
    p = argparse.ArgumentParser(prog="tradeloop models", description="train and time predictor models")
    sub = p.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train a model described by a TOML file and register it")
    tr.add_argument("--config", required=True, metavar="FILE", help="TOML with the keys of models.train.TrainConfig")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key (TOML value)")
    sub.add_parser("bench", help="latency and windows/s per batch size: a table, or --json (see --help)",
                   add_help=False)
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "bench":
        from tradeloop.models.bench import main as bench
        return int(bench(args[1:]) or 0)
    a = p.parse_args(args)
    from tradeloop.models.errors import ModelError
    from tradeloop.models.train import train
    try:
        print(train(read_config(a.config, a.set), progress=progress))
    except FileNotFoundError:
        print(f"tradeloop models: error: config file {a.config} not found", file=sys.stderr)
        return 2
    except (tomllib.TOMLDecodeError, ValueError, ModelError) as e:
        print(f"tradeloop models: error: {e}", file=sys.stderr)
        return 2
    return 0
