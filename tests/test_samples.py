"""``--data sample:NAME``: real market data read in place from the installed backtesting wheel.

The project carries no market data files; the samples extra (``backtesting==0.6.6``, also in the
test extra) ships GOOG, EURUSD and BTCUSD in its install folder, and the README's first command
backtests ``sample:GOOG`` on a fresh machine.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tradeloop.data import samples
from tradeloop.data.loaders import load_bars
from tradeloop.engine.cli.main import main
from tradeloop.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
installed = pytest.mark.skipif(importlib.util.find_spec("backtesting") is None,
                               reason="the backtesting package is not installed (pip install -e '.[samples]')")


@installed
def test_the_readme_backtest_on_sample_goog_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["backtest", "sma_cross", "--data", "sample:GOOG", "--param", "size=100", "--commission", "0.001",
                 "--out", str(out)]) == 0
    assert "run folder" in capsys.readouterr().out
    for name in ("manifest.json", "metrics.json", "equity.parquet", "fills.parquet", "report.html"):
        assert (out / name).is_file(), name
    (entry,) = json.loads((out / "manifest.json").read_text())["inputs"]
    assert entry["symbol"] == "GOOG" and entry["rows"] == 2148 and len(entry["sha256"]) == 64
    assert Path(entry["path"]) == samples.sample_path("GOOG")          # the installed file, named as it lies
    m = json.loads((out / "metrics.json").read_text())
    assert m["trades"] > 0 and m["final_value"] > 0


@installed
def test_the_readme_command_runs_from_any_folder(tmp_path):
    """As the README runs it: a fresh process outside the clone, the example strategy found by name."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "tradeloop", "backtest", "sma_cross", "--data", "sample:GOOG",
                          "--param", "size=100", "--commission", "0.001", "--out", "run", "--quiet"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["trades"] > 0


@installed
def test_the_sample_is_the_installed_packages_own_file_not_a_copy():
    dist = importlib.metadata.distribution("backtesting")
    assert dist.version == "0.6.6"
    installed_files = {Path(dist.locate_file(f)).resolve() for f in dist.files}  # the wheel's RECORD
    spec = importlib.util.find_spec("backtesting")
    folder = Path(next(iter(spec.submodule_search_locations))).resolve()
    for name in samples.SAMPLES:
        path = samples.sample_path(name).resolve()
        assert path.parent == folder / "test" and path.name == f"{name}.csv"
        assert path in installed_files                                  # read where pip put it, not a copy
    assert not (ROOT / "data" / "samples").exists()


@installed
@pytest.mark.parametrize("name, rows, first, last", [
    ("GOOG", 2148, "2004-08-19", "2013-03-01"),
    ("EURUSD", 5000, "2017-04-19T09:00:00", "2018-02-07T15:00:00"),
    ("BTCUSD", 156, "2012-01-31", "2024-12-31"),
])
def test_every_sample_loads_as_it_is(name, rows, first, last):
    s = load_bars(samples.resolve(f"sample:{name}"))
    stamps = s.ts.astype("datetime64[ns]").astype("datetime64[s]").astype(str)
    assert s.symbol == name and len(s) == rows
    assert (stamps[0].removesuffix("T00:00:00"), stamps[-1].removesuffix("T00:00:00")) == (first, last)
    assert (s.low <= s.open).all() and (s.open <= s.high).all() and (s.volume >= 0).all()


@installed
def test_sample_names_work_in_any_case_and_from_the_config_file(tmp_path):
    assert samples.resolve("sample:goog") == str(samples.sample_path("GOOG"))
    cfg = tmp_path / "run.toml"
    cfg.write_text('[run]\nstrategy = "sma_cross"\n[[data]]\npath = "sample:EURUSD"\n')
    assert main(["backtest", "--config", str(cfg), "--out", str(tmp_path / "r"), "--quiet"]) == 0
    (entry,) = json.loads((tmp_path / "r" / "manifest.json").read_text())["inputs"]
    assert entry["symbol"] == "EURUSD" and entry["rows"] == 5000


def test_an_unknown_sample_is_one_line_naming_the_known_ones(tmp_path, capsys):
    assert main(["backtest", "sma_cross", "--data", "sample:AAPL", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err == ("tradeloop: error: unknown sample 'AAPL': the samples are sample:GOOG, sample:EURUSD, "
                   "sample:BTCUSD\n")
    assert not (tmp_path / "r").exists()


def test_without_the_extra_the_error_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(samples, "package_folder", lambda: None)   # as where backtesting is not installed
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[samples\]'"):
        samples.sample_path("GOOG")
    assert main(["backtest", "sma_cross", "--data", "sample:GOOG", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sample:GOOG" in err and "backtesting==0.6.6" in err
    assert not (tmp_path / "r").exists()


def test_plain_paths_are_left_alone():
    assert samples.resolve("data/x.csv") == "data/x.csv"
    assert not samples.is_sample("GOOG.csv")


def test_the_project_ships_no_market_data_files():
    """Third-party data is read from ../shared (tests) or an installed wheel (sample:NAME), never kept here."""
    found = [p.relative_to(ROOT) for folder in ("data", "engine", "brokers", "risk", "models", "strategies", "tradeloop")
             for p in (ROOT / folder).rglob("*")
             if p.is_file() and p.suffix.lower() in {".csv", ".txt", ".parquet", ".json", ".gz", ".feather"}]
    assert found == []
