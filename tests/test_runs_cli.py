"""`tradeloop runs list|compare`, and the structured logs every backtest leaves in its run folder."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tradeloop.engine.cli.main import main
from tests.conftest import ORCL, need

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ORCL  # backtrader's ORCL daily bars in ../shared/data; need(SAMPLE) skips where absent


def backtest(out: Path, *extra: str) -> int:
    return main(["backtest", "sma_cross", "--data", str(need(SAMPLE)), "--commission", "0.001", "--out", str(out),
                 "--quiet", *extra])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A runs folder with two finished runs (fast and slow SMA pairs) and one stray folder."""
    base = tmp_path_factory.mktemp("runs")
    assert backtest(base / "fast", "--param", "size=1000") == 0
    assert backtest(base / "slow", "--param", "size=1000", "--param", "fast=20", "--param", "slow=60") == 0
    (base / "notes").mkdir()                              # not a run: ignored
    return base


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# ----------------------------------------------------------------------------------- runs list
def test_runs_list_shows_one_row_per_run(root, capsys):
    assert main(["runs", "list", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "sma_cross" in ln]
    assert len(lines) == 2 and "fast" in lines[0] and "slow" in lines[1]     # oldest first
    assert "1995-01-03 .. 2014-12-31" in lines[0]
    m = _metrics(root / "fast")
    assert f"{m['final_value']:,.2f}" in lines[0] and f"{m['total_return']:.2%}" in lines[0]
    assert f"{m['sharpe']:.3f}" in lines[0] and f"{m['max_drawdown']:.2%}" in lines[0]
    assert "notes" not in out


def test_runs_list_of_an_empty_folder_says_so(tmp_path, capsys):
    assert main(["runs", "list", "--root", str(tmp_path)]) == 0
    assert f"no runs under {tmp_path}" in capsys.readouterr().out


def test_runs_list_of_a_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["runs", "list", "--root", str(tmp_path / "nope")]) == 2
    assert "runs folder" in (err := capsys.readouterr().err) and "not found" in err


# -------------------------------------------------------------------------------- runs compare
def test_runs_compare_prints_metrics_side_by_side_and_writes_one_html(root, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    assert main(["runs", "compare", "fast", "slow", "--root", str(root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    sharpe = next(ln for ln in text.splitlines() if re.search(r"\bsharpe\b", ln))
    assert f"{_metrics(root / 'fast')['sharpe']:.3f}" in sharpe and f"{_metrics(root / 'slow')['sharpe']:.3f}" in sharpe
    assert f"equity curves: {out}" in text
    page = out.read_text()
    assert "<script" not in page and "http" not in page.split("</style>")[1].split("<h2>Metrics")[0]
    curves = re.findall(r'<path class="series" data-name="(\w+)"', page)
    assert curves == ["fast", "slow", "fast", "slow"]     # cumulative return and drawdown, both runs each


def test_runs_compare_writes_compare_html_in_the_current_folder_by_default(root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["runs", "compare", str(root / "fast"), str(root / "slow")]) == 0
    assert (tmp_path / "compare.html").is_file()
    assert "equity curves: compare.html" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["fast", "missing"], "run 'missing' not found"),
    (["fast"], "compare needs at least two runs"),
    (["fast", "notes"], "notes is not a complete run folder: missing manifest.json"),
])
def test_runs_compare_errors_name_the_run(root, tmp_path, capsys, args, message):
    assert main(["runs", "compare", *args, "--root", str(root), "--out", str(tmp_path / "c.html")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c.html").exists()


# ---------------------------------------------------------------------------------------- logs
def test_every_backtest_writes_its_log_events_as_json_lines(root):
    lines = (root / "fast" / "events.jsonl").read_text().splitlines()
    events = [json.loads(ln) for ln in lines]
    names = [e["event"] for e in events]
    assert "backtest_done" in names and "report_written" in names
    done = events[names.index("backtest_done")]
    assert done["level"] == "info" and done["fills"] == 195 and done["timestamp"].endswith("Z")


def test_a_run_keeps_only_its_own_events(root):
    fast = (root / "fast" / "events.jsonl").read_text()
    assert str(root / "slow") not in fast and str(root / "fast") in fast


def test_log_lines_are_key_value_for_people_and_json_with_log_json(tmp_path):
    def stderr(*extra: str) -> str:
        cmd = [sys.executable, "-m", "tradeloop", "backtest", "sma_cross", "--data", str(need(SAMPLE)), "--json",
               "--out", str(tmp_path / f"r{len(extra)}"), *extra]  # one folder per run: a run folder is never reused
        return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stderr

    people = [ln for ln in stderr().splitlines() if "backtest_done" in ln][0]
    assert "fills=195" in people and not people.startswith("{")
    machine = [json.loads(ln) for ln in stderr("--log-json").splitlines() if ln.startswith("{")]
    assert any(e["event"] == "backtest_done" and e["fills"] == 195 for e in machine)
    quiet = subprocess.run([sys.executable, "-m", "tradeloop", "backtest", "sma_cross", "--data", str(SAMPLE),
                            "--quiet", "--out", str(tmp_path / "rq")], check=True, capture_output=True, text=True, cwd=ROOT)
    assert quiet.stdout == "" and quiet.stderr == ""       # --quiet: nothing but errors
    events = (tmp_path / "rq" / "events.jsonl").read_text()
    assert "backtest_done" in events                        # the run still records its events
