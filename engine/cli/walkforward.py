"""``tradeloop walkforward``: its flags, its configuration tables, and the summary it prints.

Settings come from, in increasing precedence: ``[walkforward]`` and ``[train]`` tables in
``--config`` (the rest of that file is an ordinary run configuration), ``--train-config FILE``
(a TOML file of training keys, as ``tradeloop models train`` reads), the flags, and
``--set walkforward.KEY=V`` / ``--set train.KEY=V``.
"""
from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

from tradeloop.errors import ConfigError

from tradeloop.engine.config.run import RunConfig, parse_value
from tradeloop.engine.research.windows import WindowSpec

WF_KEYS = ("train", "test", "step", "embargo", "anchored", "warmup", "val")


def add_walkforward_parser(sub: Any) -> None:
    """Register ``walkforward STRATEGY --train 2y --test 3m ...`` (engine/research/walkforward.py)."""
    from tradeloop.engine.cli.args import add_run_args
    wf = sub.add_parser("walkforward", help="retrain and backtest window by window, stitched into one run")
    add_run_args(wf, out_help="run folder (default runs/<id>)", quiet_help="no summary table", json_flag=True)
    wf.add_argument("--train", metavar="DURATION", help="training span per window, e.g. 2y, 18m (years, months, "
                    "weeks, days)")
    wf.add_argument("--test", metavar="DURATION", help="test span per window, e.g. 3m")
    wf.add_argument("--step", metavar="DURATION", help="distance between window starts (default: --test)")
    wf.add_argument("--embargo", type=int, metavar="N", help="bars between training and test (default: the label "
                    "horizon with a model, else 0; never less than the horizon)")
    wf.add_argument("--anchored", action="store_true", default=None,
                    help="expanding training span from the start of the data (default: rolling)")
    wf.add_argument("--warmup", metavar="DURATION", help="bars read before each test span to warm up indicators "
                    "and features, without trading (default 6m)")
    wf.add_argument("--val", metavar="FRACTION|DURATION", help="validation split at the end of each training span "
                    "(default 0.2)")
    wf.add_argument("--train-config", metavar="FILE", help="training settings (TOML, keys of models.train.TrainConfig)")
    wf.add_argument("--executor", choices=["serial", "process", "dask"], default="process",
                    help="where the windows train (default process: a local process pool)")
    wf.add_argument("--address", metavar="tcp://HOST:PORT", help="Dask scheduler to use (default: a LocalCluster)")
    wf.add_argument("--workers", type=int, metavar="N", help="worker processes (default: CPU count)")
    wf.add_argument("--strict", action="store_true", help="exit 3 when an acceptance gate fails")


def _toml(path: str, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def settings_from_args(a: argparse.Namespace) -> tuple[RunConfig, WindowSpec, dict[str, Any] | None, bool]:
    """(run config, window spec, training settings or None, whether an embargo was given) from the flags."""
    from tradeloop.engine.cli.args import config_from_args
    raw = _toml(a.config, "config file") if a.config else {}
    wf = dict(raw.pop("walkforward", {}) or {})
    train = dict(raw.pop("train", {}) or {})
    if a.train_config:
        train.update(_toml(a.train_config, "training config file"))
    unknown = sorted(set(wf) - set(WF_KEYS))
    if unknown:
        raise ConfigError(f"{a.config}: [walkforward]: unknown key(s) {', '.join(unknown)} (known: {', '.join(WF_KEYS)})")
    rest = []
    for item in a.set:
        key, sep, value = item.partition("=")
        section, _, name = key.strip().partition(".")
        if sep and section in ("walkforward", "train") and name:
            if section == "walkforward" and name not in WF_KEYS:
                raise ConfigError(f"--set {item!r}: [walkforward] has no key {name!r} (known: {', '.join(WF_KEYS)})")
            (wf if section == "walkforward" else train)[name] = parse_value(value)
        else:
            rest.append(item)
    a.set = rest
    for key in WF_KEYS:
        value = getattr(a, key, None)
        if value is not None:
            wf[key] = value
    for key in ("train", "test"):
        if key not in wf:
            raise ConfigError(f"walk-forward: no --{key} DURATION (or {key} in [walkforward] of --config)")
    base = RunConfig.from_dict(raw, a.config) if a.config else None
    cfg = config_from_args(a, base=base)
    embargo_given = "embargo" in wf
    spec = WindowSpec(**{k: (str(v) if k in ("train", "test", "step", "warmup") else v) for k, v in wf.items()})
    return cfg, spec, (train or None), embargo_given


def cmd_walkforward(a: argparse.Namespace) -> int:
    """Run ``tradeloop walkforward``; 0, 1 when a window failed, 3 on a failed gate with --strict."""
    from tradeloop.engine.cli.args import gate_exit
    from tradeloop.engine.research.walkforward import run_walkforward
    cfg, spec, train, embargo_given = settings_from_args(a)
    wf, out = run_walkforward(cfg, spec, train, embargo_given=embargo_given, executor=a.executor, workers=a.workers,
                              address=a.address)
    if a.json:
        from tradeloop.engine.telemetry.tables import print_json
        print_json({"command": "walkforward", "metrics": wf.result.metrics, "seconds": round(wf.seconds, 3),
                    "run_folder": None if out is None else str(out),
                    "report": None if out is None else str(out / "report.html")})
    elif not a.quiet:
        print_walkforward(wf.result.metrics, out, wf.seconds)
    for w in wf.result.metrics["windows"]:   # one line per failed window; any failed window fails the command
        if w["status"] != "ok":
            print(f"tradeloop: walk-forward window {w['window']} (test from {w['test_start']}) failed: {w['error']}",
                  file=sys.stderr)
    code = gate_exit(wf.result.metrics, a.strict)
    return code or (1 if wf.result.metrics["walkforward"]["failed"] else 0)


def _pct(v: Any) -> str:
    return "n/a" if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v else f"{v:.1%}"


def walkforward_text(m: dict[str, Any], out: Path | None, seconds: float, width: int | None = None) -> str:
    """One row per window, the stitched figures, and where the files are (engine/telemetry/tables.py rules)."""
    from tradeloop.engine.metrics.format import format_metric
    from tradeloop.engine.telemetry.tables import Column, render_pairs, render_table
    cols = [Column("#", "right"), Column("test from"), Column("model", drop=3), Column("val acc", "right", drop=4),
            Column("return", "right"), Column("sharpe", "right", drop=1), Column("max dd", "right", drop=2),
            Column("trades", "right", drop=5), Column("status")]
    rows = []
    for w in m["windows"]:
        wm = w.get("metrics") or {}
        rows.append([str(w["window"]), str(w["test_start"]).replace("T", " "), w.get("model") or "-",
                     _pct((w.get("training") or {}).get("val_accuracy")),
                     format_metric("total_return", wm.get("total_return")), format_metric("sharpe", wm.get("sharpe")),
                     format_metric("max_drawdown", wm.get("max_drawdown")), format_metric("trades", wm.get("trades")),
                     "ok" if w["status"] == "ok" else f"error: {w['error']}"])
    pairs = [(key, format_metric(key, m.get(key)))
             for key in ("final_value", "total_return", "annual_return", "sharpe", "max_drawdown", "trades")]
    pairs.append(("seconds", f"{seconds:.1f}"))
    if out is not None:
        pairs += [("run folder", str(out)), ("report", str(out / "report.html"))]
    return render_table("walk-forward windows", cols, rows, width) + "\n" + render_pairs("stitched", pairs, width)


def print_walkforward(m: dict[str, Any], out: Path | None, seconds: float) -> None:
    """One row per window, the stitched figures, the errors, and where the files are."""
    sys.stdout.write(walkforward_text(m, out, seconds))
