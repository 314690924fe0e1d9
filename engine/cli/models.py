"""``tradeloop models train|bench`` on the CLI side: the bench report as a table, training with progress.

models/ sits below the engine and cannot use engine.telemetry, so the command line does the
printing: ``models bench`` runs :func:`tradeloop.models.bench.run_bench` and renders its report
dict in the one table style (engine/telemetry/tables.py); ``--json`` prints the dict as one line,
``--quiet`` prints nothing. ``models train`` hands :class:`LazyProgress` to ``train()`` as its
progress callback (one plain line per epoch on a pipe, a bar on a terminal).
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

from tradeloop.engine.telemetry.tables import Column, render_table


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}f}"


def bench_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per runtime and batch size."""
    rows = []
    for e in report.get("runtimes", []):
        agree = e.get("agreement") or {}
        for b in e.get("batches", []):
            rows.append([e["runtime"], f"{b['batch']:,}", _num(b["p50_ms"]), _num(b["p99_ms"]),
                         f"{b['windows_per_s']:,.0f}", f"{b['windows_per_cpu_s']:,.0f}", f"{b['iters']:,}",
                         f"{agree.get('same_class', 0):.1%}" if agree else "n/a",
                         f"{agree['max_abs_diff']:.2g}" if agree else "n/a"])
    return rows


BENCH_COLUMNS = (Column("runtime"), Column("batch", "right"), Column("p50 ms", "right"),
                 Column("p99 ms", "right", drop=2), Column("windows/s", "right"),
                 Column("windows/cpu-s", "right", drop=3), Column("iters", "right", drop=5),
                 Column("same class", "right", drop=1), Column("max diff", "right", drop=4))


def bench_text(report: dict[str, Any], width: int | None = None) -> str:
    """The ``models bench`` report as a table: latency and throughput per runtime and batch, then the machine."""
    title = f"models bench {report.get('model')}: {report.get('threads')} thread(s), p50/p99 per call"
    flags = [k for k, v in (report.get("cpu_flags") or {}).items() if v]
    notes = [f"cpu: {report.get('cpu')} ({report.get('cpu_count')} cores), matrix units: "
             f"{' '.join(flags) or 'none'}" + (f", capped at {report['cpu_cap']}" if report.get("cpu_cap") else ""),
             f"load average (1 min) before/after: {' / '.join(str(x) for x in report.get('load_avg_1m') or [])}",
             "same class / max diff: agreement with torch fp32 on "
             f"{_windows(report)} real windows; windows/cpu-s counts this thread's CPU time only"]
    return render_table(title, BENCH_COLUMNS, bench_rows(report), width, notes=notes)


def _windows(report: dict[str, Any]) -> str:
    for e in report.get("runtimes", []):
        if e.get("agreement"):
            return f"{e['agreement']['windows']:,}"
    return "the"


def cmd_models_bench(argv: Sequence[str]) -> int:
    """``tradeloop models bench [--json|--quiet] ...``."""
    from tradeloop.models.bench import parser, run_bench
    from tradeloop.engine.telemetry.tables import print_json
    ap = parser()
    ap.add_argument("--json", action="store_true", help="the report as one JSON object on stdout")
    ap.add_argument("--quiet", action="store_true", help="print nothing (exit status only)")
    a = ap.parse_args(list(argv))
    report = run_bench(a)
    if a.json:
        print_json(report)
    elif not a.quiet:
        sys.stdout.write(bench_text(report))
    return 0


def cmd_models_train(argv: Sequence[str]) -> int:
    """``tradeloop models train ...`` with progress on stderr (see engine/telemetry/progress.py); ``--quiet`` none."""
    from tradeloop.engine.telemetry.progress import LazyProgress
    from tradeloop.models.cli import main as models_main
    args = list(argv)
    quiet = "--quiet" in args
    if quiet:
        args.remove("--quiet")
    with LazyProgress("models train", enabled=False if quiet else None) as bar:
        return int(models_main(args, progress=bar) or 0)


def cmd_models_kline(argv: Sequence[str]) -> int:
    """``tradeloop models kline-train --config FILE [--set KEY=VALUE]`` / ``kline-eval [...]`` (the K-line forecaster).

    kline-train trains a forecaster from a TOML file with the keys of
    ``models.kline.train.KlineTrainConfig`` and prints its ``NAME@VERSION``; kline-eval trains on the
    qbot files 2010-2016 and scores 2017-2020 against naive baselines (``models/kline/evaluate.py``).
    A bad file, key or value is one line on stderr and exit status 2.
    """
    import argparse
    import tomllib

    args = list(argv)
    if args[:1] == ["kline-eval"]:
        from tradeloop.models.kline.evaluate import main as evaluate
        return int(evaluate(args[1:]) or 0)
    ap = argparse.ArgumentParser(prog="tradeloop models kline-train",
                                 description="train a K-line forecaster described by a TOML file and register it")
    ap.add_argument("--config", required=True, metavar="FILE", help="TOML with the keys of KlineTrainConfig")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key (TOML value)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    try:
        a = ap.parse_args(args[1:])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    from tradeloop.data.errors import DataError
    from tradeloop.models.errors import ModelError
    from tradeloop.models.cli import read_config
    from tradeloop.models.kline.train import train_forecaster
    try:
        raw = read_config(a.config, a.set)
        progress = None if a.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
        print(train_forecaster(raw, progress=progress))
    except FileNotFoundError as e:
        print(f"tradeloop models kline-train: error: {e.filename or a.config} not found", file=sys.stderr)
        return 2
    except tomllib.TOMLDecodeError as e:
        print(f"tradeloop models kline-train: error: {a.config}: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, ModelError, DataError) as e:
        print(f"tradeloop models kline-train: error: {a.config}: {e}", file=sys.stderr)
        return 2
    return 0
