"""The ``tradeloop`` command line: backtests, data import, strategy listing."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import ConfigError, DataSpec, RunConfig, parse_value


class _DataAction(argparse.Action):
    """``--data PATH`` adds an input; a following ``--symbol NAME`` names that input."""

    def __call__(self, parser, ns, value, option_string=None):
        specs = getattr(ns, "inputs", None) or []
        if option_string == "--symbol":
            if not specs:
                parser.error("--symbol must follow the --data it names")
            specs[-1].symbol = value
        else:
            specs.append(DataSpec(path=value))
        ns.inputs = specs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tradeloop", description="Event-driven backtesting and live trading.")
    sub = p.add_subparsers(dest="command", required=True)

    bt = sub.add_parser("backtest", help="run a strategy over historical bars")
    bt.add_argument("strategy", nargs="?", help="module:Class, file.py:Class, or a name in strategies/")
    bt.add_argument("--data", action=_DataAction, metavar="PATH", help="bar file (CSV/Parquet/JSON); repeat for more")
    bt.add_argument("--symbol", action=_DataAction, metavar="NAME", help="symbol of the preceding --data")
    bt.add_argument("--param", action="append", default=[], metavar="K=V", help="strategy parameter")
    bt.add_argument("--cash", type=float, help="starting cash")
    bt.add_argument("--commission", type=float, metavar="RATE", help="commission as a fraction of notional")
    bt.add_argument("--config", metavar="FILE", help="run configuration (TOML)")
    bt.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    bt.add_argument("--catalog", metavar="DIR", help="read --data symbols from this Parquet catalog")
    bt.add_argument("--out", metavar="DIR", help="run folder (default runs/<id>)")
    bt.add_argument("--log-json", action="store_true", help="JSON log lines")
    bt.add_argument("--quiet", action="store_true", help="no summary table")

    data = sub.add_parser("data", help="data tools")
    dsub = data.add_subparsers(dest="data_command", required=True)
    imp = dsub.add_parser("import", help="validate files and write them to a Parquet catalog")
    imp.add_argument("paths", nargs="+")
    imp.add_argument("--catalog", required=True, metavar="DIR")
    imp.add_argument("--encoding")
    imp.add_argument("--tz")
    imp.add_argument("--on-bad", choices=["raise", "drop", "repair"], default="raise")

    sub.add_parser("strategies", help="list the strategies in strategies/ and their parameters")
    return p


def config_from_args(a: argparse.Namespace) -> RunConfig:
    cfg = RunConfig.load(a.config) if a.config else RunConfig()
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
    for item in a.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected key=value")
        cfg.params[key.strip()] = parse_value(value)
    for item in a.set:
        cfg.override(item)
    if not cfg.run.strategy:
        raise ConfigError("no strategy: give STRATEGY or run.strategy in the config")
    return cfg


def cmd_backtest(a: argparse.Namespace) -> int:
    from .session import backtest
    cfg = config_from_args(a)
    result, out = backtest(cfg)
    if not a.quiet:
        print_summary(result, out)
    return 0


def print_summary(result: Any, out: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    m = result.metrics
    t = Table(title="backtest", show_header=False)
    fmt = {"final_value": "{:,.6f}", "total_return": "{:.2%}", "annual_return": "{:.2%}", "sharpe": "{:.3f}",
           "sortino": "{:.3f}", "max_drawdown": "{:.2%}", "volatility": "{:.2%}", "win_rate": "{:.1%}",
           "profit_factor": "{:.2f}", "trades": "{}"}
    for key, f in fmt.items():
        v = m.get(key)
        t.add_row(key, "n/a" if v is None else f.format(v))
    t.add_row("fills", str(len(result.fills)))
    t.add_row("bars", f"{result.bars:,} ({result.bars / max(result.elapsed_s, 1e-9):,.0f}/s)")
    if out is not None:
        t.add_row("run folder", str(out))
    Console().print(t)


def cmd_data_import(a: argparse.Namespace) -> int:
    from data.catalog import import_files
    kw = {"encoding": a.encoding, "tz": a.tz, "on_bad": a.on_bad}
    symbols = import_files([Path(p) for p in a.paths], Path(a.catalog), **kw)
    print(f"imported {len(symbols)} symbol(s) into {a.catalog}: {', '.join(symbols)}")
    return 0


def cmd_strategies(a: argparse.Namespace) -> int:
    import pkgutil

    import strategies

    from .session import resolve_strategy
    for info in sorted(pkgutil.iter_modules(strategies.__path__), key=lambda i: i.name):
        try:
            cls = resolve_strategy(info.name)
        except ConfigError:
            continue
        params = ", ".join(f"{k}={p.default!r}" for k, p in cls.declared_params().items())
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{info.name:<20} {doc}\n{'':<20} params: {params}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from data.errors import DataError

    from .logs import configure
    parser = build_parser()
    a = parser.parse_args(argv)
    configure(json=getattr(a, "log_json", False))
    try:
        if a.command == "backtest":
            return cmd_backtest(a)
        if a.command == "data":
            return cmd_data_import(a)
        if a.command == "strategies":
            return cmd_strategies(a)
    except (ConfigError, DataError) as e:
        print(f"tradeloop: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
