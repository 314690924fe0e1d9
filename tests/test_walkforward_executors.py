"""Specification: where the windows train does not change the walk-forward.

The same walk-forward run serially, on a local process pool and on a Dask LocalCluster writes
identical stitched fills, equity and metrics (per window and combined), and the same models.
"""
from __future__ import annotations

import json

import polars as pl
import pytest

from tradeloop.engine.research.walkforward import run_walkforward
from tests.test_walkforward_support import (
    SPEC,
    model_config,
    needs_models,
    qbot_files,
    tiny_train,
)


def test_serial_process_and_dask_give_identical_stitched_runs(tmp_path):
    needs_models()
    distributed = pytest.importorskip("dask.distributed")
    cfg = model_config(qbot_files())
    out = {}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        for name in ("serial", "process", "dask"):
            _, out[name] = run_walkforward(cfg, SPEC, tiny_train(tmp_path / f"reg-{name}"), executor=name, workers=2,
                                           address=cl.scheduler_address if name == "dask" else None,
                                           out=tmp_path / name, progress=False)
    metrics = {name: json.loads((path / "metrics.json").read_text()) for name, path in out.items()}
    serial = metrics["serial"]
    assert serial["walkforward"] == {"windows": 3, "ok": 3, "failed": 0, "warmup_orders_refused":
                                     serial["walkforward"]["warmup_orders_refused"]}
    assert [w["model"] for w in serial["windows"]] == ["tiny-w001@v0001", "tiny-w002@v0001", "tiny-w003@v0001"]
    assert serial["trades"] > 0
    for name in ("process", "dask"):
        assert metrics[name] == serial, name
        for table in ("fills", "equity", "orders"):
            assert pl.read_parquet(out[name] / f"{table}.parquet").equals(
                pl.read_parquet(out["serial"] / f"{table}.parquet")), (name, table)
