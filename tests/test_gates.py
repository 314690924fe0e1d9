"""Acceptance gates: declared in [gates] or with --set, checked after the run, and --strict turns a failure into exit 3."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tradeloop.engine.cli.main import EXIT_GATE_FAILED, main
from tradeloop.errors import ConfigError
from tradeloop.engine.metrics.gates import evaluate_gates, failed_gates, parse_gate, parse_gates
from tests.conftest import ORCL, need

SAMPLE = ORCL  # backtrader's ORCL daily bars in ../shared/data; need(SAMPLE) skips where absent
# the sample run: sharpe 0.226, max_drawdown 0.1826, max_consecutive_losing_days 8, no benchmark


def backtest(out: Path, *extra: str) -> int:
    return main(["backtest", "sma_cross", "--data", str(need(SAMPLE)), "--param", "size=1000", "--commission", "0.001",
                 "--out", str(out), "--quiet", *extra])


# ------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("rule, op, threshold", [
    (">= 2", ">=", 2.0), ("<=0.08", "<=", 0.08), ("  >  -1.5 ", ">", -1.5), ("< 3", "<", 3.0),
    ("== 0", "==", 0.0), ("!= 1e-3", "!=", 0.001), (">= 15%", ">=", 0.15), ("<= 8 %", "<=", 0.08),
])
def test_a_gate_is_an_operator_and_a_number(rule, op, threshold):
    g = parse_gate("sharpe", rule)
    assert (g.metric, g.op) == ("sharpe", op) and g.threshold == pytest.approx(threshold)


@pytest.mark.parametrize("key, rule, message", [
    ("sharpe", "big", "[gates] sharpe: cannot read 'big'"),
    ("sharpe", "=> 2", "[gates] sharpe: cannot read '=> 2'"),
    ("sharpe", ">= two", "[gates] sharpe: cannot read"),
    ("sharpe", 2, "[gates] sharpe: expected a string"),
    ("sharp", ">= 2", "[gates] sharp: unknown metric 'sharp'"),
])
def test_a_malformed_gate_is_a_config_error_naming_its_key(key, rule, message):
    with pytest.raises(ConfigError) as e:
        parse_gates({key: rule})
    assert message in str(e.value)


# ---------------------------------------------------------------------------------- evaluation
def test_each_gate_says_pass_or_fail_with_the_value_and_why():
    gates = parse_gates({"sharpe": ">= 2", "max_drawdown": "<= 0.25"})
    result = evaluate_gates(gates, {"sharpe": 0.5, "max_drawdown": 0.2})
    assert result["sharpe"] == {"rule": ">= 2", "value": 0.5, "passed": False,
                                "reason": "sharpe = 0.5 does not meet >= 2"}
    assert result["max_drawdown"]["passed"] is True
    assert failed_gates({"gates": result}) == ["sharpe"]


def test_a_gate_on_an_undefined_metric_fails_and_says_why():
    result = evaluate_gates(parse_gates({"calmar": ">= 1"}), {"calmar": None})
    assert result["calmar"]["passed"] is False and result["calmar"]["value"] is None
    assert "calmar is undefined (None) for this run" == result["calmar"]["reason"]


def test_a_benchmark_gate_without_a_benchmark_fails_and_names_the_fix():
    result = evaluate_gates(parse_gates({"excess_return": ">= 0.15"}), {"sharpe": 1.0})
    assert result["excess_return"]["passed"] is False
    assert "needs a benchmark (--benchmark PATH" in result["excess_return"]["reason"]


# ------------------------------------------------------------------------------------- the CLI
def test_gates_from_the_config_file_go_into_metrics_json(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[gates]\nsharpe = ">= 2"\nmax_drawdown = "<= 0.25"\nmax_consecutive_losing_days = "<= 3"\n')
    assert backtest(tmp_path / "run", "--config", str(cfg)) == 0          # not strict: failures only reported
    gates = json.loads((tmp_path / "run" / "metrics.json").read_text())["gates"]
    assert {k: g["passed"] for k, g in gates.items()} == {
        "sharpe": False, "max_drawdown": True, "max_consecutive_losing_days": False}
    assert gates["max_consecutive_losing_days"]["value"] == 8


def test_strict_exits_3_when_a_gate_fails(tmp_path, capsys):
    assert backtest(tmp_path / "run", "--strict", "--set", 'gates.sharpe=">= 2"') == EXIT_GATE_FAILED == 3
    assert "gate failed: sharpe >= 2: sharpe = 0.226115 does not meet >= 2" in capsys.readouterr().err
    assert (tmp_path / "run" / "report.html").is_file()                  # the run is still written


def test_strict_exits_0_when_every_gate_passes(tmp_path):
    assert backtest(tmp_path / "run", "--strict", "--set", "gates.sharpe=>= 0.2",
                    "--set", "gates.max_drawdown=<= 20%") == 0


def test_strict_fails_a_benchmark_gate_of_a_run_without_benchmark(tmp_path, capsys):
    assert backtest(tmp_path / "run", "--strict", "--set", "gates.excess_return=>= 0.15") == 3
    assert "needs a benchmark" in capsys.readouterr().err


def test_the_summary_table_says_pass_or_fail(tmp_path, capsys):
    main(["backtest", "sma_cross", "--data", str(need(SAMPLE)), "--param", "size=1000", "--commission", "0.001",
          "--out", str(tmp_path / "run"), "--set", "gates.sharpe=>= 2", "--set", "gates.trades=>= 10"])
    out = capsys.readouterr().out
    assert "gate sharpe >= 2" in out and "FAIL sharpe = 0.226115" in out
    assert "gate trades >= 10" in out and "PASS trades = 97" in out


def test_a_malformed_gate_stops_the_run_before_it_starts(tmp_path, capsys):
    assert backtest(tmp_path / "run", "--set", "gates.sharpe=lots") == 2
    assert "[gates] sharpe: cannot read 'lots'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_gates_must_be_a_table_in_the_config_file(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text('gates = ">= 2"\n')
    assert backtest(tmp_path / "run", "--config", str(cfg)) == 2
    assert "[gates]: expected a table" in capsys.readouterr().err
