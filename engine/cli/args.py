"""Flags and configuration shared by the run commands (backtest, sweep, walk-forward, live, paper)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from tradeloop.engine.config.run import DataSpec, RunConfig, parse_value
from tradeloop.errors import ConfigError

EXIT_GATE_FAILED = 3  # `backtest --strict` with a failed acceptance gate


class _DataAction(argparse.Action):
    """``--data PATH`` adds a bar input, ``--ticks PATH`` a tick input; a following ``--symbol NAME`` names it."""

    def __call__(self, parser, ns, value, option_string=None):
        specs = getattr(ns, "inputs", None) or []
        if option_string == "--symbol":
            if not specs:
                parser.error("--symbol must follow the --data (or --ticks) it names")
            specs[-1].symbol = value
        else:
            specs.append(DataSpec(path=value, kind="ticks" if option_string == "--ticks" else "bars"))
        ns.inputs = specs


def add_run_args(cmd: argparse.ArgumentParser, *, out_help: str, quiet_help: str, json_flag: bool = False,
                 tick_inputs: bool = False) -> None:
    """The flags every command that runs backtests takes (they build the RunConfig, see config_from_args);
    ``tick_inputs``: ``--ticks PATH`` too (tick files as inputs: ``backtest``)."""
    cmd.add_argument("strategy", nargs="?", help="module:Class, file.py:Class, or a name in strategies/")
    cmd.add_argument("--data", action=_DataAction, metavar="PATH",
                     help="bar file (CSV/Parquet/JSON), or sample:GOOG|EURUSD|BTCUSD (the samples extra); repeat for more")
    if tick_inputs:
        cmd.add_argument("--ticks", action=_DataAction, metavar="PATH",
                         help="tick file (CSV, vn.py snapshots, ..., or Parquet), or with --catalog a tick symbol of "
                              "it; the strategy's on_tick sees every tick, orders fill on quotes ([quotes]); repeat")
    cmd.add_argument("--symbol", action=_DataAction, metavar="NAME", help="symbol of the preceding --data")
    cmd.add_argument("--param", action="append", default=[], metavar="K=V", help="strategy parameter")
    cmd.add_argument("--cash", type=float, help="starting cash")
    cmd.add_argument("--commission", type=float, metavar="RATE", help="commission as a fraction of notional")
    cmd.add_argument("--config", metavar="FILE", help="run configuration (TOML)")
    cmd.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    cmd.add_argument("--catalog", metavar="DIR", help="read --data symbols from this Parquet catalog")
    cmd.add_argument("--benchmark", metavar="PATH", help="bar file of a benchmark (e.g. an index) to measure against")
    cmd.add_argument("--market", metavar="NAME", help="market rules: cn-a (China A-shares; see [market])")
    cmd.add_argument("--out", metavar="DIR", help=out_help)
    cmd.add_argument("--overwrite", action="store_true",
                     help="write into an --out folder that already holds files (its run files are replaced)")
    cmd.add_argument("--log-json", action="store_true", help="JSON log lines")
    if json_flag:
        add_output_args(cmd, quiet_help)
    else:
        cmd.add_argument("--quiet", action="store_true", help=quiet_help)


QUIET_COMMANDS = ("backtest", "sweep", "walkforward", "runs")  # --quiet: no logs or progress either


def add_output_args(cmd: argparse.ArgumentParser, quiet_help: str) -> None:
    """``--quiet`` (nothing on stdout or stderr but errors) and ``--json`` (one JSON object on stdout)."""
    cmd.add_argument("--quiet", action="store_true", help=f"{quiet_help}; no logs or progress either, errors only")
    cmd.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of the table")


def config_from_args(a: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """The RunConfig of the flags over ``base`` (default: ``--config``, else an empty config)."""
    cfg = base if base is not None else RunConfig.load(a.config) if a.config else RunConfig()
    if a.strategy:
        cfg.run.strategy = a.strategy
    if getattr(a, "inputs", None):
        cfg.data = a.inputs
    if a.cash is not None:
        cfg.run.cash = a.cash
    if a.commission is not None:
        cfg.commission = {"kind": "percent", "rate": a.commission, "minimum": 0.0}
    if a.catalog:
        cfg.run.catalog = a.catalog
    if a.out:
        cfg.run.out = a.out
    if getattr(a, "benchmark", None):
        cfg.run.benchmark = a.benchmark
    if getattr(a, "market", None):
        cfg.run.market = a.market
    for item in a.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected key=value")
        cfg.params[key.strip()] = parse_value(value)
    for item in a.set:
        cfg.override(item)
    if not cfg.run.strategy:
        raise ConfigError("no strategy: give STRATEGY or run.strategy in the config")
    resolve_samples(cfg)
    return cfg.validate()   # every key's type and range, once everything is applied (engine/config/run.py)


def resolve_samples(cfg: RunConfig) -> None:
    """``sample:NAME`` inputs and benchmark (flags or config) become the installed files' paths (data.samples)."""
    from tradeloop.data.samples import resolve
    if not cfg.run.catalog:  # with a catalog, --data names a symbol of it
        for spec in cfg.data:
            if spec.kind == "ticks":
                continue
            spec.path = resolve(spec.path)
    if cfg.run.benchmark:
        cfg.run.benchmark = resolve(cfg.run.benchmark)


def gate_exit(metrics: dict[str, Any], strict: bool) -> int:
    """0, or EXIT_GATE_FAILED (with the failures on stderr) when ``strict`` and a gate failed."""
    from tradeloop.engine.metrics.gates import failed_gates
    failed = failed_gates(metrics)
    if strict and failed:
        for name in failed:
            print(f"tradeloop: gate failed: {name} {metrics['gates'][name]['rule']}: {metrics['gates'][name]['reason']}",
                  file=sys.stderr)
        return EXIT_GATE_FAILED
    return 0
