"""Specification of the run recorder: every kind of run (backtest, walk-forward, live, paper) writes the
same run folder with one manifest schema, and every folder opens in ``report``, ``runs list`` and
``runs compare``.

The four folders are written once per module, on short spans of real data: a one-year ORCL
backtest, a two-window walk-forward on qbot A-shares, a paper session (its own Mosquitto and
exchange simulator) and a live runner in this process against the exchange simulator over a real
Mosquitto, both on half a year of 600519.SH daily bars.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tradeloop.engine.assembly.backtest import backtest
from tradeloop.engine.assembly.build import load_inputs
from tradeloop.engine.cli.main import main
from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.research.walkforward import run_walkforward
from tradeloop.engine.research.windows import WindowSpec
from tradeloop.engine.runs.recorder import KINDS, MANIFEST_KEYS, build_manifest
from tests import live_procs
from tests.conftest import ORCL, SHARED_DATA, need
from tests.mosquitto import MOSQUITTO, Mosquitto
from tests.test_walkforward_support import qbot_files

DAILY = SHARED_DATA / "qbot" / "600519.SH.csv"
PARAMS = {"fast": 5, "slow": 20, "size": 100}
TABLES = ("equity", "fills", "orders", "order_events", "risk_events")


def sma(start: str, end: str, *files: Path) -> RunConfig:
    """sma_cross (5/20, 100 shares) on ``files`` cut to [start, end)."""
    cfg = RunConfig()
    cfg.run.strategy, cfg.params = "sma_cross", dict(PARAMS)
    cfg.run.start, cfg.run.end = start, end
    cfg.data = [DataSpec(str(p)) for p in files]
    return cfg


def live_session(cfg: RunConfig, folder: Path, out: Path) -> None:
    """``run_live`` in this process against the exchange simulator, fed a lockstep replay of ``cfg.data``."""
    from tradeloop.data.replay import replay
    from tradeloop.engine.live.runner import run_live

    series, _ = load_inputs(cfg, hashes=False)
    broker = Mosquitto(folder).start()
    exch, port = live_procs.exchange(folder, broker.url, venue="rec", interval="1d")
    try:
        cfg = dataclasses.replace(cfg, data=[])   # the replay is the market, not history to warm up on
        cfg.live.mqtt, cfg.live.fix, cfg.live.state = broker.url, f"127.0.0.1:{port}", str(folder / "live.sqlite")
        cfg.live.symbols, cfg.live.venue, cfg.live.interval, cfg.live.lockstep = ["600519.SH"], "rec", "1d", True

        async def session() -> None:
            ready = asyncio.Event()
            task = asyncio.create_task(run_live(cfg, out=out, on_ready=lambda _: ready.set()))
            await asyncio.wait({task, asyncio.ensure_future(ready.wait())}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
            await replay(series, broker.url, venue="rec", interval="1d", lockstep=("runner",), qos=1)
            await asyncio.wait_for(task, 60)

        asyncio.run(session())
    finally:
        exch.stop()
        broker.stop()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A runs folder holding one finished run of every kind: backtest, walkforward, live, paper."""
    from tradeloop.engine.live.paper import paper

    need(ORCL), need(DAILY)
    files = qbot_files()
    if MOSQUITTO is None:
        pytest.skip("the mosquitto binary is not installed (Debian: apt-get install mosquitto)")
    base = tmp_path_factory.mktemp("recorder")
    root = base / "runs"
    backtest(sma("2000-01-01", "2001-01-01", ORCL), out=root / "backtest", progress=False)
    run_walkforward(sma("2010-01-01", "2012-01-01", *files), WindowSpec("1y", "6m", warmup="3m"),
                    executor="serial", out=root / "walkforward", progress=False)
    paper(sma("2012-01-01", "2012-07-01", DAILY), out=root / "paper")
    (base / "live").mkdir()
    live_session(sma("2012-01-01", "2012-07-01", DAILY), base / "live", root / "live")
    return root


def manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def json_type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --------------------------------------------------------------------------------- the manifest
def test_every_kind_writes_a_manifest_with_the_same_keys_and_the_same_type_per_key(runs):
    manifests = {kind: manifest(runs / kind) for kind in KINDS}
    for kind, m in manifests.items():
        assert sorted(m) == sorted(MANIFEST_KEYS), kind
        assert m["kind"] == kind and m["status"] == "completed" and m["error"] is None
    types = {kind: {k: json_type(v) for k, v in m.items()} for kind, m in manifests.items()}
    assert all(t == types["backtest"] for t in types.values()), types
    for part in ("strategy", "fill_rules", "market", "span"):    # the sections inside agree too
        assert len({tuple(sorted(m[part])) for m in manifests.values()}) == 1, part
    for kind, m in manifests.items():   # the span the metrics cover: ISO text, never null or empty
        assert sorted(m["span"]) == ["from", "to", "warmup_from"], kind
        assert all(isinstance(v, str) and v for v in m["span"].values()), (kind, m["span"])
        assert m["span"]["warmup_from"] <= m["span"]["from"] <= m["span"]["to"], (kind, m["span"])
    for kind, m in manifests.items():   # per traded symbol its resolved instrument (none here), and the run's P
        assert sorted(m["instruments"]) == sorted(m["symbols"]) and m["periods_per_year"] == 252, kind
        assert all(v is None for v in m["instruments"].values()), kind


def test_every_manifest_says_what_ran_how_it_filled_and_with_what(runs):
    for kind in KINDS:
        m = manifest(runs / kind)
        assert m["strategy"]["class"] == "tradeloop.strategies.sma_cross:SmaCross", kind
        assert m["strategy"]["params"]["fast"] == 5 and m["strategy"]["params"]["size"] == 100, kind
        assert m["fill_rules"]["fill_at"] == "open" and m["fill_rules"]["commission"]["kind"] == "percent", kind
        assert m["risk"] == m["config"]["risk"] and m["seed"] == 0, kind
        assert "out" not in m["config"]["run"] and m["versions"]["numpy"], kind
        assert m["symbols"], kind
    for kind in ("backtest", "walkforward", "paper"):              # the files that were read, with their hashes
        assert all(len(i["sha256"]) == 64 for i in manifest(runs / kind)["inputs"]), kind
    assert manifest(runs / "live")["inputs"] == []                 # bars came over MQTT; no history files
    assert manifest(runs / "paper")["market"]["venue"] == "paper"
    assert manifest(runs / "backtest")["market"] == {"profile": None, "venue": None, "interval": None}


def test_what_only_one_kind_has_is_under_details(runs):
    assert manifest(runs / "backtest")["details"] == {}
    wf = manifest(runs / "walkforward")["details"]
    assert wf["spec"]["train"] == "1y" and wf["training"] is None
    assert [w["test_start"] for w in wf["windows"]] == ["2011-01-01", "2011-07-01"]
    for kind in ("live", "paper"):
        session = manifest(runs / kind)["details"]["session"]
        bars = pl.read_parquet(runs / kind / "equity.parquet").height
        assert session["steps"] == bars > 100 and session["bars"] == bars, kind


def test_the_builder_refuses_an_unknown_kind_or_status():
    from tradeloop.brokers.sim import FillRules
    from tradeloop.strategies.sma_cross import SmaCross

    args: dict[str, Any] = {"inputs": [], "models": [], "symbols": ["A"], "tz": None}
    assert build_manifest("live", RunConfig(), SmaCross(), FillRules(), status="stopped", **args)["status"] == "stopped"
    with pytest.raises(ValueError, match="run kind 'replay'"):
        build_manifest("replay", RunConfig(), SmaCross(), FillRules(), **args)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run status 'ok'"):
        build_manifest("live", RunConfig(), SmaCross(), FillRules(), status="ok", **args)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the run folder
def test_every_kind_writes_the_same_files(runs):
    for kind in KINDS:
        folder = runs / kind
        for name in ("manifest.json", "metrics.json", "report.html", "events.jsonl",
                     *(f"{t}.parquet" for t in TABLES)):
            assert (folder / name).is_file(), (kind, name)
        events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
        assert any(e["event"] == "report_written" for e in events), kind


def test_live_and_paper_reports_show_the_session(runs):
    for kind in ("live", "paper"):
        text = (runs / kind / "report.html").read_text()
        assert f"{kind} run {kind}" in text and "<h2>Session</h2>" in text and "<h2>Trades</h2>" in text, kind
        assert "<svg" in text and "<script" not in text.lower(), kind


# ---------------------------------------------------------------------------- runs list, compare
def test_runs_list_shows_every_kind(runs, capsys):
    assert main(["runs", "list", "--root", str(runs), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert {row["id"]: row["kind"] for row in listed} == {kind: kind for kind in KINDS}
    assert main(["runs", "list", "--root", str(runs)]) == 0     # and the table people read names each kind
    table = capsys.readouterr().out
    assert all(any(line.split()[:2] == [kind, kind] for line in table.splitlines()) for kind in KINDS), table


def test_a_paper_session_opens_in_runs_compare_beside_a_backtest(runs, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    assert main(["runs", "compare", "paper", "live", "backtest", "--root", str(runs), "--out", str(out)]) == 0
    assert "sharpe" in capsys.readouterr().out
    page = out.read_text()
    assert ">paper<" in page and ">live<" in page and ">backtest<" in page


def test_a_failed_session_says_so_in_the_list_and_the_report(runs, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(runs / "live", root / "broken")
    m = manifest(root / "broken")
    m["status"], m["error"] = "failed", "ZeroDivisionError: the strategy divided by zero"
    (root / "broken" / "manifest.json").write_text(json.dumps(m))
    assert main(["runs", "list", "--root", str(root)]) == 0
    assert "live (failed)" in capsys.readouterr().out
    assert main(["report", str(root / "broken")]) == 0
    assert "live session failed: ZeroDivisionError: the strategy divided by zero" in \
        (root / "broken" / "report.html").read_text()
