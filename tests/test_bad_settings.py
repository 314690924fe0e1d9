"""A user's mistake is one line and exit 2, never a traceback, never a silently different result.

Bad flags, TOML values, ``--set`` overrides, ``--param`` values, nonsense dates and strategy files
that fail at each stage are driven through the command line; each must end with exit status 2 and
exactly one non-empty line on stderr that names the key (or the file and line), with no traceback
anywhere. A strategy that fails mid-run keeps its run folder (status failed, its traceback in
events.jsonl, the equity up to the failure); a sweep with a failing point exits non-zero.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tradeloop.engine.cli.main import main
from tradeloop.engine.config.run import RunConfig
from tradeloop.errors import ConfigError, StrategyError
from tests.conftest import ORCL, need

ROOT = Path(__file__).resolve().parents[1]

STRATEGIES = '''\
import numpy as np
from tradeloop import Param, Strategy


class Fine(Strategy):
    n = Param(5, "bars", min=1)


class InitFails(Strategy):
    def __init__(self, **params):
        super().__init__(**params)
        self.table = {}["missing"]


class StartFails(Strategy):
    def on_start(self, ctx):
        raise RuntimeError("cannot start")


class BarFails(Strategy):
    def on_bar(self, ctx, bar):
        if ctx.position(bar.symbol) == 0:
            ctx.buy(bar.symbol, 10)
        self.seen = getattr(self, "seen", 0) + 1
        if self.seen == 50:
            return 1 / 0


class FillFails(Strategy):
    def on_bar(self, ctx, bar):
        if not ctx.position(bar.symbol):
            ctx.buy(bar.symbol, 1)

    def on_fill(self, ctx, fill):
        raise KeyError(fill.symbol)


class StopFails(Strategy):
    def on_stop(self, ctx):
        raise ValueError("cannot stop")


class ValidateFails(Strategy):
    def validate(self):
        return self.no_such_attribute


class MissingModel(Strategy):
    def on_start(self, ctx):
        ctx.use_predictor("ghost@latest", registry="no-registry-here")


class DeclaredModel(Strategy):
    predictor = "ghost@v0001"


class FailsAtBar(Strategy):
    at = Param(100, "the bar that raises", min=1)

    def on_bars(self, ctx, bars):
        self.seen = getattr(self, "seen", 0) + 1
        if self.seen == self.at:
            raise RuntimeError(f"boom at bar {self.seen}")


class FailsInSummer2011(Strategy):
    def on_bars(self, ctx, bars):
        if "2011-07" <= str(np.datetime64(ctx.now, "ns"))[:7] <= "2011-09":
            raise RuntimeError("boom in the summer of 2011")
'''


def at(snippet: str) -> int:
    """The 1-based line of ``snippet`` in STRATEGIES (what the error must name)."""
    return next(i for i, line in enumerate(STRATEGIES.splitlines(), 1) if snippet in line)


# (strategy file name, its text): modules that cannot even be imported
BROKEN_FILES = {
    "syntax.py": "from tradeloop import Strategy\n\nclass S(Strategy)\n    pass\n",
    "imports.py": "import no_such_module_for_tradeloop_tests\nfrom tradeloop import Strategy\n",
    "raises.py": "from tradeloop import Strategy\n\nLIMIT = 1 / 0\n",
}


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding the strategy files; the CLI runs inside it."""
    (tmp_path / "strats.py").write_text(STRATEGIES)
    for name, text in BROKEN_FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def toml(ws: Path, text: str) -> str:
    path = ws / "run.toml"
    path.write_text(f'[run]\nstrategy = "sma_cross"\n[[data]]\npath = "{need(ORCL)}"\n{text}')
    return str(path)


def bt(*extra: str, strategy: str = "sma_cross") -> list[str]:
    return ["backtest", strategy, "--data", str(need(ORCL)), "--out", "run", "--quiet", *extra]


def _toml_file(ws: Path, run_keys: str) -> str:
    """A config whose [run] table holds ``run_keys`` besides the strategy."""
    path = ws / "run.toml"
    path.write_text(f'[run]\nstrategy = "sma_cross"\n{run_keys}\n[[data]]\npath = "{need(ORCL)}"\n')
    return str(path)


def _toml_top(ws: Path, keys: str) -> str:
    """A config with top-level ``keys`` (before any table)."""
    return _toml_raw(ws, f'{keys}\n[run]\nstrategy = "sma_cross"\n[[data]]\npath = "{need(ORCL)}"\n')


def _toml_raw(ws: Path, text: str) -> str:
    path = ws / "run.toml"
    path.write_text(text)
    return str(path)


# Each case: (id, argv builder taking the working folder, text the one stderr line must contain)
CASES = [
    # ---- flags
    ("flag-cash-text", lambda w: bt("--cash", "abc"), "argument --cash: invalid float value: 'abc'"),
    ("flag-cash-negative", lambda w: bt("--cash", "-5"), "run.cash must be positive, not -5.0"),
    ("flag-cash-nan", lambda w: bt("--cash", "nan"), "run.cash must be a finite number"),
    ("flag-cash-inf", lambda w: bt("--cash", "inf"), "run.cash must be a finite number"),
    ("flag-commission-negative", lambda w: bt("--commission", "-0.001"), "commission.rate must be between 0 and 0.1"),
    ("flag-commission-above-10pct", lambda w: bt("--commission", "0.5"), "commission.rate must be between 0 and 0.1"),
    ("flag-unknown", lambda w: bt("--bogus"), "unrecognized arguments: --bogus"),
    ("flag-no-strategy", lambda w: ["backtest", "--data", str(need(ORCL)), "--out", "run"], "no strategy"),
    ("flag-market-unknown", lambda w: bt("--market", "us"), "unknown market 'us'"),
    ("flag-sweep-workers-0", lambda w: ["sweep", "sma_cross", "--data", str(need(ORCL)), "--grid", "fast=5",
                                        "--workers", "0"], "--workers 0"),
    ("flag-sweep-grid-out-of-range", lambda w: ["sweep", "sma_cross", "--data", str(need(ORCL)), "--grid",
                                                "commission.rate=0,0.5", "--executor", "serial"],
     "commission.rate must be between 0 and 0.1"),
    ("flag-walkforward-duration", lambda w: ["walkforward", "sma_cross", "--data", str(need(ORCL)), "--train", "2x",
                                             "--test", "3m"], "--train '2x': not a duration"),
    ("flag-walkforward-zero-window", lambda w: ["walkforward", "sma_cross", "--data", str(need(ORCL)), "--train",
                                                "2y", "--test", "0m"], "--test '0m': must be longer than zero"),
    ("flag-walkforward-params", lambda w: ["walkforward", "sma_cross", "--data", str(need(ORCL)), "--train", "2y",
                                           "--test", "6m", "--param", "fast=40"], "fast (40) must be less than slow"),
    # ---- --set overrides
    ("set-cash-text", lambda w: bt("--set", "run.cash=lots"), "cash must be a number, got 'lots'"),
    ("set-cash-huge", lambda w: bt("--set", "run.cash=1e400"), "run.cash must be a finite number"),
    ("set-slippage-negative", lambda w: bt("--set", "slippage.kind=bps", "--set", "slippage.bps=-5"),
     "slippage.bps must be between 0 and 1000 basis points, not -5"),
    ("set-slippage-above-1000bps", lambda w: bt("--set", "slippage.kind=bps", "--set", "slippage.bps=5000"),
     "slippage.bps must be between 0 and 1000"),
    ("set-impact-above-1", lambda w: bt("--set", "slippage.kind=volume_share", "--set", "slippage.impact=5"),
     "slippage.impact must be between 0 and 1"),
    ("set-commission-nan", lambda w: bt("--set", "commission.rate=nan"), "commission.rate must be a finite number"),
    ("set-commission-text", lambda w: bt("--set", "commission.rate=abc"), "commission.rate must be a number"),
    ("set-commission-min-negative", lambda w: bt("--set", "commission.minimum=-1"),
     "commission.minimum must be between 0 and"),
    ("set-commission-kind", lambda w: bt("--set", "commission.kind=flat"), "commission: unknown model 'flat'"),
    ("set-participation-zero", lambda w: bt("--set", "run.participation=0"),
     "run.participation must be greater than 0 and at most 1"),
    ("set-participation-above-1", lambda w: bt("--set", "run.participation=1.5"),
     "run.participation must be greater than 0 and at most 1"),
    ("set-lot-negative", lambda w: bt("--set", "run.lot_size=-100"), "run.lot_size must be at least 0"),
    ("set-fill-at", lambda w: bt("--set", "run.fill_at=noon"), "run.fill_at must be one of 'open', 'close'"),
    ("set-on-bad", lambda w: bt("--set", "run.on_bad=ignore"), "run.on_bad must be one of"),
    ("set-seed-negative", lambda w: bt("--set", "run.seed=-1"), "run.seed must be at least 0"),
    ("set-risk-max-position", lambda w: bt("--set", "risk.max_position=-1"), "risk.max_position must be positive"),
    ("set-risk-drawdown", lambda w: bt("--set", "risk.drawdown.max=1.5"), "drawdown max must be a fraction"),
    ("set-risk-halt-nan", lambda w: bt("--set", "risk.halt.move=nan"), "risk.halt.move must be a finite number"),
    ("set-risk-gross-inf", lambda w: bt("--set", "risk.max_gross=inf"), "risk.max_gross must be a finite number"),
    ("set-market-tick", lambda w: bt("--market", "cn-a", "--set", "market.tick=0"), "market.tick must be positive"),
    ("set-live-heartbeat", lambda w: bt("--set", "live.heartbeat_s=0"), "live.heartbeat_s must be between 1 and 3600"),
    ("set-unknown-section", lambda w: bt("--set", "nope.x=1"), "unknown section 'nope'"),
    ("set-unknown-key", lambda w: bt("--set", "run.cassh=5"), "[run] has no key 'cassh'"),
    # ---- nonsense dates
    ("date-not-a-date", lambda w: bt("--set", "run.start=2012-13-45"), "run.start '2012-13-45': not a date"),
    ("date-words", lambda w: bt("--set", "run.end=yesterday"), "run.end 'yesterday': not a date"),
    ("date-order", lambda w: bt("--set", "run.start=2012-01-01", "--set", "run.end=2011-01-01"),
     "run.start '2012-01-01' must be before run.end '2011-01-01'"),
    ("date-trade-from-after-end", lambda w: bt("--set", "run.end=2011-01-01", "--set", "run.trade_from=2012-01-01"),
     "run.trade_from '2012-01-01' is not before run.end"),
    ("date-trade-from-before-start", lambda w: bt("--set", "run.start=2011-01-01", "--set",
                                                  "run.trade_from=2010-01-01"), "is before run.start"),
    ("date-chinext", lambda w: bt("--market", "cn-a", "--set", "market.chinext_20pct_from=soon"),
     "market.chinext_20pct_from must be a date"),
    # ---- TOML files
    ("toml-cash-bool", lambda w: ["backtest", "--config", _toml_file(w, "cash = true"), "--out", "run"],
     "[run]: cash must be a number, got True"),
    ("toml-cash-string", lambda w: ["backtest", "--config", _toml_file(w, 'cash = "100000"'), "--out", "run"],
     "[run]: cash must be a number, got '100000'"),
    ("toml-cash-negative", lambda w: ["backtest", "--config", _toml_file(w, "cash = -1"), "--out", "run"],
     "run.cash must be positive"),
    ("toml-participation-nan", lambda w: ["backtest", "--config", _toml_file(w, "participation = nan"),
                                          "--out", "run"], "run.participation must be a finite number"),
    ("toml-dates-out-of-order", lambda w: ["backtest", "--config",
                                           _toml_file(w, "start = 2012-01-01\nend = 2011-01-01"), "--out", "run"],
     "run.start '2012-01-01' must be before run.end '2011-01-01'"),
    ("toml-commission-negative", lambda w: ["backtest", "--config", toml(w, "[commission]\nrate = -0.01\n"),
                                            "--out", "run"], "commission.rate must be between 0 and 0.1"),
    ("toml-slippage-negative", lambda w: ["backtest", "--config", toml(w, '[slippage]\nkind = "bps"\nbps = -10\n'),
                                          "--out", "run"], "slippage.bps must be between 0 and 1000"),
    ("toml-commission-not-table", lambda w: ["backtest", "--config", _toml_top(w, "commission = 5"), "--out", "run"],
     "[commission]: expected a table"),
    ("toml-params-not-table", lambda w: ["backtest", "--config", _toml_top(w, 'params = "fast"'), "--out", "run"],
     "[params]: expected a table"),
    ("toml-risk-inf", lambda w: ["backtest", "--config", toml(w, "[risk]\nmax_gross = inf\n"), "--out", "run"],
     "risk.max_gross must be a finite number"),
    ("toml-data-no-path", lambda w: ["backtest", "sma_cross", "--config", _toml_raw(w, '[[data]]\nsymbol = "X"\n'),
                                     "--out", "run"], "[[data]] #1: path is required"),
    ("toml-invalid", lambda w: ["backtest", "--config", _toml_raw(w, "[run\ncash = 5\n"), "--out", "run"],
     "not valid TOML"),
    ("toml-unknown-section", lambda w: ["backtest", "--config", toml(w, "[runn]\ncash = 5\n"), "--out", "run"],
     "unknown section(s) runn"),
    # ---- --param values
    ("param-text-for-int", lambda w: bt("--param", "fast=abc"), "parameter 'fast' expects int, got 'abc'"),
    ("param-below-min", lambda w: bt("--param", "fast=0"), "parameter 'fast' must be at least 1, not 0"),
    ("param-fast-not-below-slow", lambda w: bt("--param", "fast=40", "--param", "slow=30"),
     "fast (40) must be less than slow (30)"),
    ("param-unknown", lambda w: bt("--param", "nope=1"), "unknown parameter(s) nope"),
    ("param-choices", lambda w: bt("--param", "sizing=weird"), "parameter 'sizing' must be one of 'fixed', 'allin'"),
    ("param-nan", lambda w: bt("--param", "target=nan"), "parameter 'target' must be a finite number"),
    ("param-bool-for-int", lambda w: bt("--param", "fast=true"), "parameter 'fast' expects int, got True"),
    ("param-no-equals", lambda w: bt("--param", "fast"), "--param 'fast': expected key=value"),
    # ---- strategy files
    ("strategy-file-missing", lambda w: bt(strategy="nowhere.py:S"), "strategy file nowhere.py not found"),
    ("strategy-class-missing", lambda w: bt(strategy="strats.py:Nope"), "has no Strategy subclass 'Nope'"),
    ("strategy-name-unknown", lambda w: bt(strategy="no_such_strategy"), "no such module in strategies/"),
    ("strategy-syntax-error", lambda w: bt(strategy="syntax.py:S"), "syntax.py:3: SyntaxError"),
    ("strategy-import-error", lambda w: bt(strategy="imports.py:S"),
     "imports.py:1: ModuleNotFoundError: No module named 'no_such_module_for_tradeloop_tests'"),
    ("strategy-module-raises", lambda w: bt(strategy="raises.py:S"), "raises.py:3: ZeroDivisionError"),
    ("strategy-init-raises", lambda w: bt(strategy="strats.py:InitFails"),
     f"strategy error: strats.py:{at('self.table =')} in __init__: KeyError: 'missing'"),
    ("strategy-validate-raises", lambda w: bt(strategy="strats.py:ValidateFails"),
     f"strategy error: strats.py:{at('no_such_attribute')} in validate: AttributeError"),
    ("strategy-start-raises", lambda w: bt(strategy="strats.py:StartFails"),
     f"strategy error: strats.py:{at('cannot start')} in on_start: RuntimeError: cannot start"),
    ("strategy-bar-raises", lambda w: bt(strategy="strats.py:BarFails"),
     f"strategy error: strats.py:{at('1 / 0')} in on_bar: ZeroDivisionError: division by zero"),
    ("strategy-fill-raises", lambda w: bt(strategy="strats.py:FillFails"), f"strats.py:{at('KeyError(fill.symbol)')} in on_fill: KeyError"),
    ("strategy-stop-raises", lambda w: bt(strategy="strats.py:StopFails"),
     f"strategy error: strats.py:{at('cannot stop')} in on_stop: ValueError: cannot stop"),
    ("strategy-param-range", lambda w: bt("--param", "n=0", strategy="strats.py:Fine"),
     "parameter 'n' must be at least 1, not 0"),
    ("model-missing", lambda w: bt(strategy="strats.py:MissingModel"),
     f"strats.py:{at('ghost@latest')} in on_start: RegistryError: no model named 'ghost'"),
    ("model-declared-missing", lambda w: bt(strategy="strats.py:DeclaredModel"),
     "DeclaredModel.predictor 'ghost@v0001': RegistryError"),
]


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_exit_2(ws, capsys, argv, expected):
    code = main(argv(ws))
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in out + err


@pytest.mark.parametrize("strategy, extra, expected", [
    ("sma_cross", ["--cash", "-5"], "run.cash must be positive"),
    ("sma_cross", ["--set", "slippage.kind=bps", "--set", "slippage.bps=-5"], "slippage.bps must be between 0 and 1000"),
    ("sma_cross", ["--bogus"], "unrecognized arguments: --bogus"),
    ("syntax.py:S", [], "syntax.py:3: SyntaxError"),
    ("strats.py:BarFails", [], f"strats.py:{at('1 / 0')} in on_bar: ZeroDivisionError"),
], ids=["cash", "slippage", "flag", "syntax", "on_bar"])
def test_the_real_command_line_says_one_line_too(ws, strategy, extra, expected):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run([sys.executable, "-m", "tradeloop", "backtest", strategy, "--data", str(need(ORCL)),
                        "--out", "run", "--quiet", *extra], cwd=ws, capture_output=True, text=True, timeout=120,
                       env={**env, "PYTHONPATH": str(ROOT)})
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and expected in lines[0], p.stderr
    assert "Traceback" not in p.stdout + p.stderr


def test_a_failed_strategy_keeps_its_run_folder_with_what_ran(ws, capsys):
    assert main(bt(strategy="strats.py:BarFails")) == 2
    err = capsys.readouterr().err
    assert "status failed" in err and "run/events.jsonl" in err
    run = ws / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["error"].startswith(f"strategy error: strats.py:{at('1 / 0')} in on_bar: ZeroDivisionError")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["bars"] == 50                                   # the bars up to and with the failing one
    equity = pl.read_parquet(run / "equity.parquet")
    assert equity.height == 50 and equity["equity"].is_finite().all()
    assert pl.read_parquet(run / "fills.parquet").height == 1       # the one buy before the failure
    assert (run / "report.html").exists()
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "strategy_failed"]
    assert len(failed) == 1 and "Traceback" in failed[0]["traceback"]
    assert "ZeroDivisionError: division by zero" in failed[0]["traceback"] and "strats.py" in failed[0]["traceback"]


def test_a_strategy_failing_in_init_records_a_run_of_no_bars(ws, capsys):
    assert main(bt(strategy="strats.py:InitFails")) == 2
    manifest = json.loads((ws / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "in __init__: KeyError" in manifest["error"]
    assert json.loads((ws / "run" / "metrics.json").read_text())["bars"] == 0
    assert pl.read_parquet(ws / "run" / "equity.parquet").height == 0


def test_backtest_raises_the_strategy_error_with_the_partial_result(ws):
    from tradeloop.engine.assembly.backtest import backtest
    from tradeloop.engine.config.run import DataSpec
    cfg = RunConfig()
    cfg.run.strategy = "strats.py:BarFails"
    cfg.data = [DataSpec(str(need(ORCL)))]
    with pytest.raises(StrategyError) as e:
        backtest(cfg, write=False, progress=False)
    assert e.value.result is not None and len(e.value.result.equity) == 50
    assert "in on_bar" in str(e.value) and "Traceback" in e.value.detail


def test_a_sweep_with_a_failing_point_exits_non_zero_and_names_it(ws, capsys):
    code = main(["sweep", "sma_cross", "--data", str(need(ORCL)), "--grid", "fast=5,40", "--executor", "serial",
                 "--out", "sweep", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    failed = [line for line in err.splitlines() if line.startswith("tradeloop: sweep point")]
    assert failed == ["tradeloop: sweep point 1 {'params.fast': 40} failed: "
                      "strategy SmaCross: fast (40) must be less than slow (30)"]
    assert "Traceback" not in err
    assert json.loads((ws / "sweep" / "sweep.json").read_text())["failed"] == 1


def test_a_sweep_point_with_a_parameter_out_of_range_fails_alone(ws, capsys):
    code = main(["sweep", "strats.py:Fine", "--data", str(need(ORCL)), "--grid", "n=1,2", "--executor", "serial",
                 "--out", "sweep", "--quiet"])
    assert code == 0  # the grid runs clean: the exit status is about failed points only
    code = main(["sweep", "strats.py:Fine", "--data", str(need(ORCL)), "--grid", "n=1,0", "--executor", "serial",
                 "--out", "sweep2", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "sweep point 1 {'params.n': 0} failed: parameter 'n' must be at least 1, not 0" in err


def test_a_sweep_point_whose_strategy_fails_mid_run_names_its_file_and_line(ws, capsys):
    code = main(["sweep", "strats.py:FailsAtBar", "--data", str(need(ORCL)), "--grid", "at=100000,20",
                 "--executor", "serial", "--out", "sweep", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert ("tradeloop: sweep point 1 {'params.at': 20} failed: strategy error: "
            f"strats.py:{at('boom at bar')} in on_bars: "
            "RuntimeError: boom at bar 20") in err.splitlines()


def test_a_walkforward_with_a_failing_window_exits_1_naming_it(ws, capsys):
    code = main(["walkforward", "strats.py:FailsInSummer2011", "--data", str(need(ORCL)), "--set",
                 "run.start=2010-01-01", "--set", "run.end=2013-01-01", "--train", "1y", "--test", "6m", "--warmup",
                 "2m", "--executor", "serial", "--out", "wf", "--quiet"])
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("tradeloop: walk-forward window")]
    assert code == 1 and "Traceback" not in err
    assert failed == ["tradeloop: walk-forward window 2 (test from 2011-07-01) failed: backtest: strategy error: "
                      f"strats.py:{at('boom in the summer')} in on_bars: RuntimeError: boom in the summer of 2011"]


# ------------------------------------------------------------------------ the ranges, directly
@pytest.mark.parametrize("item, message", [
    ("slippage.bps=-5", "slippage: model 'none' takes no parameters, got bps"),   # kind 'none' by default
    ("commission.rate=0.2", "commission.rate must be between 0 and 0.1"),
    ("commission.per_share=1", "bad parameters for 'percent'"),
    ("run.cash=0", "run.cash must be positive, not 0.0"),
    ("market.main_limit=1", "market.main_limit must be a fraction between 0 and 1, not 1.0"),
    ("market.commission_rate=-0.001", "market.commission_rate must be between 0 and 0.1"),
    ("live.stale_after=-1", "live.stale_after must be positive"),
    ("risk.review.notional=0", "risk.review.notional must be positive"),
])
def test_validate_names_the_key_and_the_bound(item, message):
    cfg = RunConfig()
    cfg.override(item)
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert message in str(e.value)


def test_review_timeout_is_checked_only_with_reviews_on():
    cfg = RunConfig()
    cfg.override("risk.review.timeout=0")
    cfg.validate()
    cfg.override("risk.review.notional=1000")
    with pytest.raises(ConfigError, match="risk.review.timeout must be positive"):
        cfg.validate()


def test_a_toml_date_is_kept_as_its_iso_text(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\nstart = 2011-01-03\nend = 2012-01-03\n')
    cfg = RunConfig.load(path).validate()
    assert cfg.run.start == "2011-01-03" and cfg.run.end == "2012-01-03"
    json.dumps(cfg.to_dict())   # the manifest can hold it


def test_negative_slippage_no_longer_inflates_returns(tmp_path):
    from tradeloop.engine.assembly.backtest import backtest
    from tradeloop.engine.config.run import DataSpec
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    cfg.data = [DataSpec(str(need(ORCL)))]
    cfg.slippage = {"kind": "bps", "bps": -50}
    with pytest.raises(ConfigError, match="slippage.bps"):
        backtest(cfg, write=False, progress=False)


def test_param_ranges_and_example_strategies():
    from tradeloop.engine.assembly.build import make_strategy, resolve_strategy
    from tradeloop.engine.loop.strategy import Param, Strategy

    class S(Strategy):
        k = Param(3, "k", min=1, max=5)
        mode = Param("a", "mode", choices=("a", "b"))
        f = Param(0.5, "f", min=0.0, max=1.0)

    assert S(k="4").k == 4 and S(f=1).f == 1.0
    for params, message in [({"k": 6}, "parameter 'k' must be between 1 and 5, not 6"),
                            ({"mode": "c"}, "parameter 'mode' must be one of 'a', 'b', not 'c'"),
                            ({"f": math.inf}, "parameter 'f' must be a finite number")]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            S(**params)
    for name, params in [("mean_reversion", {"period": 1}), ("momentum_rotation", {"top": 0}),
                         ("momentum_rotation", {"exposure": 2.0}), ("model_signal", {}),
                         ("model_signal", {"model": "m@v1", "enter": 0.4, "exit": 0.6})]:
        with pytest.raises(ConfigError):
            make_strategy(resolve_strategy(name), params)
    assert make_strategy(resolve_strategy("sma_cross"), {"fast": 5, "slow": 6}).fast == 5
