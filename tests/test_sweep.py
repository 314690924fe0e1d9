"""Parameter sweeps (engine/sweep.py) and their executors (engine/executors.py)."""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import polars as pl
import pytest

from tradeloop.engine.cli.main import main
from tradeloop.errors import ConfigError
from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.research.executors import ProcessExecutor, SerialExecutor, make_executor
from tradeloop.engine.research.sweep import (_moments, deflated_sharpe, deflated_sharpe_of, expected_max_sharpe, grid_points,
                          parse_grid, run_sweep)

ORCL = "backtrader/orcl-1995-2014.txt"


def _cfg(shared_data) -> RunConfig:
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    cfg.data = [DataSpec(path=str(shared_data / ORCL))]
    return cfg


# ------------------------------------------------------------------------------- executors agree
def test_serial_process_and_dask_give_identical_tables(shared_data):
    pytest.importorskip("dask.distributed")
    cfg = _cfg(shared_data)
    grid = parse_grid(["fast=5,10", "slow=30,60"])
    runs = {name: run_sweep(cfg, grid, executor=name, workers=2, write=False, progress=False)
            for name in ("serial", "process", "dask")}
    serial = runs["serial"].table
    assert serial.height == 4 and serial["status"].to_list() == ["ok"] * 4
    assert serial["params.fast"].to_list() == [5, 5, 10, 10]
    assert serial["params.slow"].to_list() == [30, 60, 30, 60]
    assert serial["trades"].min() > 0
    for name in ("process", "dask"):
        assert runs[name].table.equals(serial), name
        assert runs[name].summary["ranking"] == runs["serial"].summary["ranking"], name
        assert runs[name].summary["best"] == runs["serial"].summary["best"], name
    # the best by sharpe is the row with the largest sharpe, and its DSR is a probability
    best = runs["serial"].summary["best"]
    assert best["sharpe"] == serial["sharpe"].max()
    assert 0.0 < best["deflated_sharpe"] < 1.0 and best["trials"] == 4 and best["days"] == serial["days"][0]


def test_dask_address_uses_an_existing_scheduler_and_leaves_it_running(shared_data):
    distributed = pytest.importorskip("dask.distributed")
    cfg = _cfg(shared_data)
    grid = parse_grid(["fast=10", "slow=30"])
    serial = run_sweep(cfg, grid, executor="serial", write=False, progress=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl:
        res = run_sweep(cfg, grid, executor="dask", address=cl.scheduler_address, write=False, progress=False)
        assert res.table.equals(serial.table)
        with distributed.Client(cl.scheduler_address) as client:  # still there after the sweep
            assert len(client.scheduler_info()["workers"]) == 1


def test_failing_point_is_an_error_row_and_the_others_finish(shared_data, tmp_path):
    res = run_sweep(_cfg(shared_data), parse_grid(["fast=0,10", "slow=30"]), executor="process", workers=2,
                    out=tmp_path, progress=False)
    t = pl.read_parquet(tmp_path / "sweep.parquet")
    assert t.equals(res.table)
    assert t["status"].to_list() == ["error", "ok"]
    assert "parameter 'fast' must be at least 1, not 0" in t["error"][0] and t["error"][1] is None  # Param(min=1)
    assert t["sharpe"][0] is None and t["sharpe"][1] is not None
    summary = json.loads((tmp_path / "sweep.json").read_text())
    assert summary["points"] == 2 and summary["ok"] == 1 and summary["failed"] == 1
    assert summary["errors"][0]["params"] == {"params.fast": 0, "params.slow": 30}
    assert summary["best"]["point"] == 1 and summary["best"]["trials"] == 1


def test_executors_report_a_failed_unit_and_keep_going():
    results = SerialExecutor().map(_inverse, [1, 0, 4])
    assert [r.ok for r in results] == [True, False, True]
    assert results[0].value == 1.0 and results[2].value == 0.25
    assert results[1].error == "ZeroDivisionError: division by zero" and "Traceback" in results[1].detail
    assert ProcessExecutor(2).map(_inverse, []) == []


def _inverse(x: float) -> float:
    return 1 / x


def test_make_executor_checks_its_arguments(monkeypatch):
    with pytest.raises(ConfigError, match="--executor 'ray'"):
        make_executor("ray")
    with pytest.raises(ConfigError, match="only the dask executor"):
        make_executor("process", address="tcp://127.0.0.1:8786")
    with pytest.raises(ConfigError, match="--workers 0"):
        make_executor("process", workers=0)
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # as if dask were not installed
    with pytest.raises(ConfigError, match=r"pip install \"dask\[distributed\]"):
        make_executor("dask")


# ------------------------------------------------------------------------------ deflated Sharpe
def test_deflated_sharpe_matches_a_hand_computation():
    # N = 10 trials, V = 0.0025 (daily SR variance), SR* = 0.1, skew -0.5, kurtosis 5, T = 250 days.
    # Z^-1(1 - 1/10) = 1.2815515655446004; Z^-1(1 - 1/(10 e)) = Z^-1(0.96321205588...) = 1.7892417645816283
    # SR0 = 0.05 * ((1 - 0.5772156649015329) * 1.2815515655446004 + 0.5772156649015329 * 1.7892417645816283)
    #     = 0.05 * (0.541823474... + 1.032781...) = 0.0787299150672875
    # denominator = 1 - (-0.5)(0.1) + (5 - 1)/4 * 0.1^2 = 1.06
    # z = (0.1 - 0.0787299150672875) * sqrt(249) / sqrt(1.06) = 0.3259987726394247 ; DSR = Z(z) = 0.62778735812908
    assert expected_max_sharpe(0.0025, 10) == pytest.approx(0.0787299150672875, rel=1e-12)
    assert deflated_sharpe(0.1, 0.0025, 10, -0.5, 5.0, 250) == pytest.approx(0.6277873581290826, rel=1e-9)
    # one trial (or no spread): nothing to deflate by, the PSR against 0
    assert expected_max_sharpe(0.0025, 1) == 0.0 and expected_max_sharpe(0.0, 10) == 0.0
    psr = 0.5 * (1 + math.erf(0.1 * math.sqrt(249) / math.sqrt(1.06) / math.sqrt(2)))
    assert deflated_sharpe(0.1, 0.0, 1, -0.5, 5.0, 250) == pytest.approx(psr, rel=1e-12)
    assert deflated_sharpe(0.1, 0.0025, 10, -0.5, 5.0, 1) is None
    assert deflated_sharpe(2.0, 0.0025, 10, 3.0, 1.0, 250) is None  # denominator 1 - 6 + 0 < 0


def test_deflated_sharpe_of_uses_the_trials_variance_in_daily_units():
    daily = [0.1, 0.05, 0.02]
    rows = [{"status": "ok", "sharpe": s * math.sqrt(252)} for s in daily] + [{"status": "error", "sharpe": None}]
    best = {**rows[0], "skew": -0.5, "kurtosis": 5.0, "days": 250}
    out = deflated_sharpe_of(best, rows)
    var = np.var(daily, ddof=1)
    assert out["trials"] == 3 and out["trials_sharpe_variance_daily"] == pytest.approx(var, rel=1e-12)
    assert out["deflated_sharpe"] == pytest.approx(deflated_sharpe(0.1, var, 3, -0.5, 5.0, 250), rel=1e-12)


def test_moments_are_population_skew_and_pearson_kurtosis():
    scipy_stats = pytest.importorskip("scipy.stats")
    r = np.random.default_rng(7).standard_t(4, 500) / 100
    skew, kurt = _moments(r)
    assert skew == pytest.approx(scipy_stats.skew(r), rel=1e-10)
    assert kurt == pytest.approx(scipy_stats.kurtosis(r, fisher=False), rel=1e-10)
    assert _moments(np.zeros(5)) == (None, None)


# ----------------------------------------------------------------------------------- grid syntax
def test_grid_parsing():
    grid = parse_grid(["fast=5,10", "commission.rate=0, 0.001"])
    assert grid == {"params.fast": ["5", "10"], "commission.rate": ["0", "0.001"]}
    assert grid_points(grid) == [{"params.fast": "5", "commission.rate": "0"},
                                 {"params.fast": "5", "commission.rate": "0.001"},
                                 {"params.fast": "10", "commission.rate": "0"},
                                 {"params.fast": "10", "commission.rate": "0.001"}]


@pytest.mark.parametrize("bad", ["fast", "fast=", "=5,10", "fast=5,,10", "fast=5,5", "fa st=5"])
def test_bad_grid_syntax_is_an_error_naming_it(bad):
    with pytest.raises(ConfigError, match=f"--grid {bad!r}"):
        parse_grid([bad])


def test_grid_twice_and_unknown_section():
    with pytest.raises(ConfigError, match="given twice"):
        parse_grid(["fast=5", "params.fast=10"])
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    with pytest.raises(ConfigError, match="--grid nope.x"):
        run_sweep(cfg, parse_grid(["nope.x=1"]), executor="serial", write=False)


def test_cli_sweep(shared_data, tmp_path, capsys):
    data = str(shared_data / ORCL)
    code = main(["sweep", "sma_cross", "--data", data, "--grid", "fast=10,20", "--set", "params.slow=60",
                 "--executor", "serial", "--metric", "total_return", "--out", str(tmp_path / "sw"), "--quiet"])
    assert code == 0
    t = pl.read_parquet(tmp_path / "sw" / "sweep.parquet")
    assert t["params.fast"].to_list() == [10, 20] and t["status"].to_list() == ["ok", "ok"]
    summary = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert summary["metric"] == "total_return" and summary["executor"] == "serial"
    assert summary["best"]["total_return"] == t["total_return"].max()
    assert "deflated_sharpe" in summary["best"]

    assert main(["sweep", "sma_cross", "--data", data, "--grid", "fast:5,10", "--executor", "serial"]) == 2
    assert "--grid 'fast:5,10'" in capsys.readouterr().err
    assert main(["sweep", "sma_cross", "--data", data, "--grid", "fast=5", "--metric", "sharp"]) == 2
    assert "--metric 'sharp'" in capsys.readouterr().err


def test_a_sweep_point_writes_nothing_and_does_not_hash_its_inputs(shared_data, monkeypatch, tmp_path):
    """sha256 is for a written run's manifest; a sweep point (write=False) skips it."""
    import tradeloop.engine.assembly.backtest as session
    import tradeloop.engine.assembly.build as build
    hashed: list[str] = []
    real = build.file_sha256
    monkeypatch.setattr(build, "file_sha256", lambda p: hashed.append(str(p)) or real(p))
    point, _ = session.backtest(_cfg(shared_data), write=False, progress=False)
    assert hashed == []
    written, folder = session.backtest(_cfg(shared_data), out=tmp_path / "run", progress=False)
    path = _cfg(shared_data).data[0].path
    assert hashed == [path]
    assert json.loads((folder / "manifest.json").read_text())["inputs"][0]["sha256"] == real(path)
    assert point.fills == written.fills
