"""The ``tradeloop`` command line: backtests, reports, run lists, data import, strategy listing."""
from __future__ import annotations

import argparse
import os
import sys
import typing
from pathlib import Path
from typing import Any, Sequence

from tradeloop.errors import ConfigError

from tradeloop.engine.cli.args import (EXIT_GATE_FAILED, QUIET_COMMANDS, add_output_args, add_run_args,
                                       config_from_args, gate_exit)


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block): ``tradeloop backtest: error: ... (see --help)``, exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="tradeloop", description="Event-driven backtesting and live trading.")
    sub = p.add_subparsers(dest="command", required=True)

    bt = sub.add_parser("backtest", help="run a strategy over historical bars")
    add_run_args(bt, out_help="run folder (default runs/<id>)", quiet_help="no summary table", json_flag=True,
                 tick_inputs=True)
    bt.add_argument("--strict", action="store_true", help=f"exit {EXIT_GATE_FAILED} when an acceptance gate fails")

    data = sub.add_parser("data", help="data tools")
    dsub = data.add_subparsers(dest="data_command", required=True)
    imp = dsub.add_parser("import", help="validate files and write them to a Parquet catalog")
    imp.add_argument("paths", nargs="+")
    imp.add_argument("--catalog", required=True, metavar="DIR")
    imp.add_argument("--encoding")
    imp.add_argument("--tz")
    imp.add_argument("--on-bad", choices=["raise", "drop", "repair"], default="raise")
    imp.add_argument("--replace", action="store_true",
                     help="let a file replace a symbol's stored bars even when it lacks some of them "
                          "(fewer rows, another period); without it such an import is refused")
    imp.add_argument("--ticks", action="store_true",
                     help="the files hold ticks (trades/quotes): store them under DIR/ticks/SYMBOL/DAY.parquet")

    add_sweep_parser(sub)
    from tradeloop.engine.cli.walkforward import add_walkforward_parser
    add_walkforward_parser(sub)
    sub.add_parser("strategies", help="list the strategies in strategies/ and their parameters")
    for name, text in PASSTHROUGH_HELP.items():  # parsed by their own modules; listed here for --help
        sub.add_parser(name, help=text, add_help=False)
    add_report_parsers(sub)
    from tradeloop.engine.cli.ops import add_ops_parsers
    add_ops_parsers(sub)
    from tradeloop.engine.cli.live import add_live_parsers
    add_live_parsers(sub, add_run_args)
    from tradeloop.engine.cli.console import add_console_parser
    add_console_parser(sub)
    from tradeloop.engine.cli.serve import add_serve_parser
    add_serve_parser(sub)
    return p


def add_sweep_parser(sub: Any) -> None:
    """``sweep STRATEGY --grid K=V1,V2 ...``: one backtest per grid point (engine/research/sweep.py)."""
    sw = sub.add_parser("sweep", help="one backtest per point of a parameter grid, ranked (sweep.parquet, sweep.json)")
    add_run_args(sw, out_help="sweep folder (default runs/sweep-<strategy>-<time>)", quiet_help="no ranking table",
                 json_flag=True)
    sw.add_argument("--grid", action="append", default=[], metavar="K=V1,V2,...",
                    help="values of a parameter (fast=5,10) or of any section.key; repeat for more")
    sw.add_argument("--metric", default="sharpe", help="metric to rank by (default sharpe)")
    sw.add_argument("--executor", choices=["serial", "process", "dask"], default="process",
                    help="where the backtests run (default process: a local process pool)")
    sw.add_argument("--address", metavar="tcp://HOST:PORT", help="Dask scheduler to use (default: a LocalCluster)")
    sw.add_argument("--workers", type=int, metavar="N", help="worker processes (default: CPU count)")


def cmd_sweep(a: argparse.Namespace) -> int:
    from tradeloop.engine.research.sweep import parse_grid, print_sweep, run_sweep
    grid = parse_grid(a.grid)
    out, a.out = a.out, None  # the sweep folder, not a run folder
    cfg = config_from_args(a)
    res = run_sweep(cfg, grid, metric=a.metric, executor=a.executor, workers=a.workers, address=a.address, out=out)
    if a.json:
        from tradeloop.engine.telemetry.tables import print_json
        print_json({"command": "sweep", **res.summary, "out": None if res.out is None else str(res.out)})
    elif not a.quiet:
        print_sweep(res)
    for err in res.summary["errors"]:   # one line per failed point; any failed point fails the command
        print(f"tradeloop: sweep point {err['point']} {err['params']} failed: {err['error']}", file=sys.stderr)
    return 1 if res.summary["failed"] else 0


def add_report_parsers(sub: Any) -> None:
    """``report RUN_DIR`` and ``runs list|compare``."""
    rp = sub.add_parser("report", help="(re)write report.html of a run folder or a sweep folder")
    rp.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, or a sweep folder (holding sweep.json)")
    rp.add_argument("--out", metavar="FILE", help="where to write it (default RUN_DIR/report.html)")
    runs = sub.add_parser("runs", help="past runs: list them, compare them")
    rsub = runs.add_subparsers(dest="runs_command", required=True)
    ls = rsub.add_parser("list", help="a table of the runs under --root")
    ls.add_argument("--root", default="runs", metavar="DIR", help="folder holding run folders (default runs)")
    add_output_args(ls, "no table")
    cmp = rsub.add_parser("compare", help="metrics side by side and equity curves overlaid in one HTML page")
    cmp.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or run ids under --root (two or more)")
    cmp.add_argument("--root", default="runs", metavar="DIR")
    cmp.add_argument("--out", default="compare.html", metavar="FILE", help="HTML page to write (default compare.html)")
    add_output_args(cmp, "no table (the page is still written)")


def cmd_backtest(a: argparse.Namespace) -> int:
    from tradeloop.engine.assembly.backtest import backtest
    from tradeloop.engine.runs.recorder import check_run_folder
    cfg = config_from_args(a)
    if cfg.run.out:  # --out, or run.out from the config: an existing run is never replaced silently
        check_run_folder(cfg.run.out, overwrite=a.overwrite)
    result, out = backtest(cfg)
    if a.json:
        from tradeloop.engine.telemetry.tables import print_json
        print_json(summary_json(result, out))
    elif not a.quiet:
        print_summary(result, out)
    return gate_exit(result.metrics, a.strict)


def summary_pairs(m: dict[str, Any], fills: int, bars: int, elapsed_s: float,
                  out: Path | None) -> list[tuple[str, str]]:
    """The rows of the backtest summary: metrics as the report formats them, gates, counts, where the files are."""
    from tradeloop.engine.metrics.format import format_metric
    pairs = [(key, format_metric(key, m.get(key))) for key in
             ("final_value", "total_return", "annual_return", "sharpe", "sortino", "max_drawdown", "volatility",
              "win_rate", "profit_factor", "trades")]
    pairs += [(key, format_metric(key, m[key])) for key in
              ("benchmark_return", "excess_return", "alpha", "beta", "information_ratio", "tracking_error") if key in m]
    pairs += [(f"gate {key} {g['rule']}", ("PASS " if g["passed"] else "FAIL ") + g["reason"])
              for key, g in (m.get("gates") or {}).items()]
    pairs += [("fills", f"{fills:,}"), ("bars", f"{bars:,} ({bars / max(elapsed_s, 1e-9):,.0f}/s)")]
    if out is not None:
        pairs += [("run folder", str(out)), ("report", str(out / "report.html"))]
    return pairs


def summary_text(result: Any, out: Path | None, width: int | None = None) -> str:
    from tradeloop.engine.telemetry.tables import render_pairs
    return render_pairs("backtest", summary_pairs(result.metrics, len(result.fills), result.bars, result.elapsed_s,
                                                  out), width)


def print_summary(result: Any, out: Path | None) -> None:
    sys.stdout.write(summary_text(result, out))


def summary_json(result: Any, out: Path | None) -> dict[str, Any]:
    """``backtest --json``: the metrics, counts and paths as one object."""
    return {"command": "backtest", "metrics": result.metrics, "fills": len(result.fills), "bars": result.bars,
            "seconds": round(result.elapsed_s, 3), "run_folder": None if out is None else str(out),
            "report": None if out is None else str(out / "report.html")}


def cmd_data_import(a: argparse.Namespace) -> int:
    from tradeloop.data.catalog import import_files
    from tradeloop.data.samples import resolve
    from tradeloop.engine.telemetry.progress import LazyProgress
    kw = {"encoding": a.encoding, "tz": a.tz, "on_bad": a.on_bad}
    if getattr(a, "ticks", False):
        return cmd_tick_import(a, kw)
    with LazyProgress("data import") as bar:   # within a second; on a pipe one line per file read and written
        symbols = import_files([Path(resolve(p)) for p in a.paths], Path(a.catalog), replace=a.replace,
                               progress=bar, **kw)
    print(f"imported {len(symbols)} symbol(s) into {a.catalog}: {', '.join(symbols)}")
    return 0


def cmd_tick_import(a: argparse.Namespace, kw: dict[str, Any]) -> int:
    from tradeloop.data.errors import DataError
    from tradeloop.data.samples import resolve
    from tradeloop.data.tick_catalog import import_tick_files
    from tradeloop.engine.telemetry.progress import LazyProgress
    if kw["on_bad"] == "repair":
        raise DataError(a.paths[0], 0, "", "--on-bad repair is for bars: ticks take raise or drop")
    with LazyProgress("data import") as bar:
        loaded = import_tick_files([Path(resolve(p)) for p in a.paths], Path(a.catalog), replace=a.replace,
                                   progress=bar, **kw)
    parts = [f"{s.symbol} ({len(s):,} ticks)" for s in loaded]
    print(f"imported {len(loaded)} tick file(s) into {a.catalog}: {', '.join(parts)}")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from tradeloop.engine.report.sweep import is_sweep, write_sweep_report
    from tradeloop.engine.report.walkforward import write_run_report
    if is_sweep(a.run_dir):   # a sweep folder: its ranking, grid chart and deflated Sharpe
        print(write_sweep_report(a.run_dir, a.out))
        return 0
    print(write_run_report(a.run_dir, a.out))
    return 0


def cmd_runs(a: argparse.Namespace) -> int:
    from tradeloop.engine.report.compare import write_compare
    from tradeloop.engine.runs.listing import list_runs, print_compare, print_runs
    from tradeloop.engine.runs.listing import compare_json, runs_json
    from tradeloop.engine.telemetry.tables import print_json
    if a.runs_command == "list":
        rows = list_runs(a.root)
        if a.json:
            print_json(runs_json(rows, a.root))
        elif not a.quiet:
            print_runs(rows, a.root)
        return 0
    path, paths, metrics = write_compare(a.runs, a.out, a.root)
    if a.json:
        print_json(compare_json(paths, metrics, path))
    elif not a.quiet:
        print_compare(paths, metrics)
        print(f"equity curves: {path}")
    return 0


def cmd_strategies(a: argparse.Namespace) -> int:
    import importlib
    import pkgutil

    strategies = importlib.import_module("tradeloop.strategies")   # by name, like any strategy: the CLI's one upward step
    from tradeloop.engine.assembly.build import resolve_strategy
    for info in sorted(pkgutil.iter_modules(strategies.__path__), key=lambda i: i.name):
        try:
            cls = resolve_strategy(info.name)
        except ConfigError:
            continue
        params = ", ".join(f"{k}={p.default!r}" + (f" ({p.range.describe()})" if p.range else "")
                           for k, p in cls.declared_params().items())
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{info.name:<20} {doc}\n{'':<20} params: {params}")
    return 0


RUN_FOLDER_COMMANDS = ("backtest", "sweep", "walkforward", "live", "paper")  # --out: a folder the command writes
CONFIG_MAX_BYTES = 16 << 20


def check_config_file(path: str) -> None:
    """A ``--config`` file must be a regular UTF-8 text file of sane size (checked before it is read).

    A directory, FIFO or device, a binary file or one in another encoding is a one-line error
    naming it, never a hang or a traceback; the TOML itself is checked by RunConfig.load.
    """
    from tradeloop.data.errors import DataError, check_file
    st = check_file(path, "config file")
    if st.st_size > CONFIG_MAX_BYTES:
        raise DataError(path, 0, "", f"config file of {st.st_size:,} bytes: not a TOML run configuration")
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, data[:e.start].count(b"\n") + 1, "",
                        f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}): a TOML file is UTF-8") from None
    if b"\0" in data:
        raise DataError(path, data[:data.index(b"\0")].count(b"\n") + 1, "", "binary data (a NUL byte), not TOML text")


PASSTHROUGH_HELP = {
    "exchange": "run the FIX 4.4 exchange simulator (python -m tradeloop.brokers.exchange --help)",
    "replay": "publish bar files to MQTT in time order (python -m tradeloop.data.replay --help)",
    "models": "train a predictor model from a TOML file, time the runtimes, or train and evaluate the K-line "
              "forecaster (models train|bench|kline-train|kline-eval)",
}


def passthrough(name: str, rest: list[str]) -> int:
    """Hand ``tradeloop exchange|replay ...`` to the module that owns the command's arguments."""
    if name == "exchange":
        from tradeloop.brokers.exchange import main as run
    elif name == "models":
        if rest[:1] == ["bench"]:   # the report printed in the one table style (models/ can't use telemetry)
            from tradeloop.engine.cli.models import cmd_models_bench
            return cmd_models_bench(rest[1:])
        if rest[:1] == ["train"]:   # LazyProgress: within a second, one line per epoch on a pipe
            from tradeloop.engine.cli.models import cmd_models_train
            return cmd_models_train(rest)
        if rest[:1] in (["kline-train"], ["kline-eval"]):   # the K-line forecaster (models/kline/)
            from tradeloop.engine.cli.models import cmd_models_kline
            return cmd_models_kline(rest)
        from tradeloop.models.cli import main as run
    else:
        from tradeloop.data.replay import main as run
    return int(run(rest) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    from tradeloop.data.errors import DataError

    from tradeloop.engine.telemetry.logs import configure
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in PASSTHROUGH_HELP:
        configure()
        return passthrough(args[0], args[1:])
    parser = build_parser()
    try:
        a = parser.parse_args(args)
    except SystemExit as e:   # --help (0) or a one-line usage error (2): a code, not an exception, for callers
        return e.code if isinstance(e.code, int) else 2
    quiet = a.command in QUIET_COMMANDS and bool(getattr(a, "quiet", False))
    configure(json=getattr(a, "log_json", False), quiet=quiet)
    from tradeloop.engine.telemetry.progress import set_quiet
    set_quiet(quiet)
    try:
        if a.command in RUN_FOLDER_COMMANDS and getattr(a, "out", None):  # before any work: refuse, don't replace
            from tradeloop.engine.runs.recorder import check_run_folder
            check_run_folder(a.out, overwrite=a.overwrite)
        for key in ("config", "ops_config", "train_config"):  # the TOML files a command reads
            if getattr(a, key, None):
                check_config_file(getattr(a, key))
        bench = getattr(a, "benchmark", None)
        if bench and not bench.startswith("sample:") and os.path.lexists(bench):  # missing: load_benchmark says so
            from tradeloop.data.errors import check_file
            check_file(bench, "benchmark file")  # a directory, FIFO or device: refused before anything opens it
        if a.command == "backtest":
            return cmd_backtest(a)
        if a.command == "data":
            return cmd_data_import(a)
        if a.command == "sweep":
            return cmd_sweep(a)
        if a.command == "walkforward":
            from tradeloop.engine.cli.walkforward import cmd_walkforward
            return cmd_walkforward(a)
        if a.command == "strategies":
            return cmd_strategies(a)
        if a.command == "report":
            return cmd_report(a)
        if a.command == "runs":
            return cmd_runs(a)
        if a.command in ("live", "paper"):
            from tradeloop.engine.cli.live import cmd_live, cmd_paper
            return (cmd_live if a.command == "live" else cmd_paper)(a, config_from_args)
        if a.command in ("review", "risk", "audit"):
            from tradeloop.engine.cli.ops import run_ops
            return run_ops(a)
        if getattr(a, "run_command", None) is not None:   # a subcommand module that runs its own parsed args
            return a.run_command(a)
    except (ConfigError, DataError) as e:  # RunFolderError is a ConfigError
        print(f"tradeloop: error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
