"""Specification of the remote predictor: ``use_predictor(..., endpoint=...)`` through a real
``tradeloop serve`` process gives exactly the local predictor's outputs (live-style loop and
backtest), and a server killed mid-run makes the engine apply its stated policy: ``local`` falls
back to the same version run in-process, ``halt`` refuses new entries through the risk layer
until the server answers again; both recorded as risk events and in the run's models entry."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tradeloop import Strategy
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.drivers.live import LiveDriver
from tradeloop.engine.loop.strategy import PredictorSpec
from tradeloop.models.errors import ModelError
from tests.test_models_predictor import three_symbols
from tests.test_models_support import trained
from tests.test_serve_support import served, start, tiny_windows


class Recorder(Strategy):
    """Records every probability it sees; buys on P(up) >= 0.5 when flat, sells on < 0.5."""

    def __init__(self, use: dict, on_bar_hook=None, trade: bool = True) -> None:
        super().__init__()
        self.use, self.hook, self.trade = use, on_bar_hook, trade
        self.seen: list[tuple[int, str, tuple[float, float]]] = []
        self.steps = 0

    def on_start(self, ctx) -> None:
        ctx.use_predictor(**self.use)

    def on_bars(self, ctx, bars) -> None:
        self.steps += 1
        if self.hook is not None:
            self.hook(self.steps, ctx)
        for s in sorted(ctx.predictions):
            p = ctx.predictions[s]
            self.seen.append((ctx.now, s, (float(p[0]), float(p[1]))))
            if not self.trade:
                continue
            held = ctx.position(s)
            if not held and p[1] >= 0.5:
                ctx.order_target_percent(s, 0.3)
            elif held > 0 and p[1] < 0.5:
                ctx.close(s)


def live(strategy, series, *, cash: float = 1_000_000):
    """Run ``strategy`` in the live driver over ``series``, bar by bar in time order."""
    driver = LiveDriver(strategy, [s.symbol for s in series], cash=cash)

    async def bars():
        for _, _, i, s in sorted(((s.ts[i], s.symbol, i, s) for s in series for i in range(len(s))),
                                 key=lambda e: e[:2]):
            yield s.bar(i)

    return asyncio.run(driver.run(bars()))


def test_a_remote_predictor_gives_the_local_predictors_outputs_bit_for_bit_live_and_in_backtests():
    root, ref = trained("tiny")
    series = three_symbols("2013-01-01", "2013-09-01")
    with served() as srv:
        local_s = Recorder({"model": ref, "registry": root})
        remote_s = Recorder({"model": ref, "registry": root, "endpoint": srv.endpoint, "timeout_ms": 5000})
        local_e, remote_e = live(local_s, series), live(remote_s, series)
        assert len(remote_s.seen) == len(local_s.seen) > 100
        assert remote_s.seen == local_s.seen            # every probability, exactly
        assert [(f.ts, f.symbol, f.qty, f.price) for f in remote_e.fills] == \
            [(f.ts, f.symbol, f.qty, f.price) for f in local_e.fills]
        entry = remote_e.models[0]
        assert entry["endpoint"] == srv.endpoint and entry["on_failure"] == "local"
        assert entry["served"]["versions"] == {"v0001": entry["served"]["versions"]["v0001"]}
        assert entry["served"]["outages"] == 0 and entry["served"]["local_windows"] == 0
        assert entry["runtime"] == "onnx-cpu" and entry["device"] == srv.endpoint

        bt_local = Recorder({"model": ref, "registry": root})
        bt_remote = Recorder({"model": ref, "registry": root, "endpoint": srv.endpoint, "timeout_ms": 5000})
        run_backtest(bt_local, series, cash=1_000_000)
        run_backtest(bt_remote, series, cash=1_000_000)
        assert bt_remote.seen == bt_local.seen and len(bt_local.seen) > 100


def test_a_server_killed_mid_run_makes_the_engine_fall_back_to_the_local_copy():
    root, ref = trained("tiny")
    series = three_symbols("2013-01-01", "2013-09-01")
    srv = start(root, "--model", "tiny@latest")
    try:
        kill_at = 60
        remote = Recorder({"model": ref, "registry": root, "endpoint": srv.endpoint, "timeout_ms": 500},
                          on_bar_hook=lambda step, ctx: srv.stop() if step == kill_at else None)
        engine = live(remote, series)
    finally:
        srv.stop()
    local = Recorder({"model": ref, "registry": root})
    live(local, series)
    assert remote.seen == local.seen                   # the same version answers locally: nothing changes
    events = [e for e in engine.risk.events if e.check == "model_server"]
    assert [e.action for e in events] == ["fallback"]
    assert "local copy answers" in events[0].reason and srv.endpoint in events[0].reason
    served = engine.models[0]["served"]
    assert served["outages"] == 1 and served["local_windows"] > 0 and served["versions"]["v0001"] > 0


def test_a_server_killed_mid_run_with_policy_halt_halts_new_entries_until_it_answers_again():
    root, ref = trained("tiny")
    series = three_symbols("2013-01-01", "2013-12-31")
    srv = start(root, "--model", "tiny@latest")
    port = srv.port
    state = {"srv": srv}

    def hook(step: int, ctx) -> None:
        a, b = ctx.symbols[0], ctx.symbols[1]
        if step == 50:
            ctx.buy(a, 100)                             # a position to exit later
        if step == 60:
            state["srv"].stop()                         # the server dies
        if step == 90:                                  # halted: an entry is refused, an exit passes
            state["entry"], state["exit"] = ctx.buy(b, 100), ctx.sell(a, 100)
        if step == 120:                                 # ... and comes back on the same port
            state["srv"] = start(root, "--model", "tiny@latest", port=port)
            import time

            time.sleep(1.1)                             # past the client's retry interval

    strategy = Recorder({"model": ref, "registry": root, "endpoint": f"tcp://127.0.0.1:{port}",
                         "timeout_ms": 500, "on_failure": "halt"}, on_bar_hook=hook, trade=False)
    try:
        engine = live(strategy, series)
    finally:
        state["srv"].stop()
    events = [e for e in engine.risk.events if e.check == "model_server"]
    assert [e.action for e in events if e.order_id == ""] == ["halt", "resume"]
    halt_ts, resume_ts = (e.ts for e in events if e.order_id == "")
    seen_ts = {t for t, _, _ in strategy.seen}
    assert not any(halt_ts <= t < resume_ts for t in seen_ts)   # no predictions while halted
    assert any(t >= resume_ts for t in seen_ts)
    refused = [e for e in events if e.order_id]
    assert [(e.order_id, e.action) for e in refused] == [(state["entry"].id, "reject")]
    assert "model server unavailable: no new entries" in refused[0].reason
    assert state["exit"].status.name == "FILLED" and state["entry"].status.name == "REJECTED"
    assert engine.models[0]["on_failure"] == "halt" and engine.models[0]["served"]["outages"] == 1


def test_remote_predictor_arguments_are_checked():
    root, ref = trained("tiny")
    with pytest.raises(ValueError, match="on_failure must be 'local' or 'halt'"):
        PredictorSpec(ref, endpoint="tcp://127.0.0.1:1", on_failure="retry")
    series = three_symbols("2013-01-01", "2013-03-01")[:1]
    with pytest.raises(ModelError, match="bad endpoint 'http://x:1'"):
        run_backtest(Recorder({"model": ref, "registry": root, "endpoint": "http://x:1"}), series)
    with pytest.raises(ModelError, match="on_failure must be one of local, halt"):
        run_backtest(Recorder({"model": ref, "registry": root, "endpoint": "tcp://127.0.0.1:1",
                               "on_failure": "retry"}), series)


def test_exact_requests_equal_the_in_process_runtime_even_when_batched_with_others():
    """ONNX Runtime rounds a batch of one differently from a bigger batch in the last bits (every
    batch >= 2 agrees row for row): an ``exact`` one-window request runs alone, so it equals the
    in-process call; a non-exact one may share a batch and then equals the batch >= 2 result."""
    from concurrent.futures import ThreadPoolExecutor

    from tradeloop.models.registry import Registry
    from tradeloop.models.serve.client import ServeClient

    root, ref = trained("tiny")
    model = Registry(root).load(ref, "onnx-cpu")
    x = tiny_windows(64, seed=3)
    alone = np.concatenate([model.predict(x[i:i + 1]) for i in range(64)])
    batched = model.predict(x)
    with served("--max-delay-us", "20000") as srv:
        def ask(i: int, exact: bool) -> np.ndarray:
            c = ServeClient(srv.endpoint, timeout_s=10)
            try:
                return c.predict("tiny", x[i:i + 1], exact=exact).outputs
            finally:
                c.close()

        with ThreadPoolExecutor(8) as pool:
            exact = np.concatenate(list(pool.map(lambda i: ask(i, True), range(64))))
            loose = np.concatenate(list(pool.map(lambda i: ask(i, False), range(64))))
    assert np.array_equal(exact, alone)
    assert all(np.array_equal(loose[i], alone[i]) or np.array_equal(loose[i], batched[i]) for i in range(64))


def test_a_served_forecaster_gives_the_local_forecasts_in_a_live_loop():
    """The K-line forecaster (models/kline/) behind the same remote predictor: every Forecast equal."""
    pytest.importorskip("torch")
    from tests.test_kline_support import market, tiny_config
    from tradeloop.models.kline.train import train_forecaster

    root, _ = trained("tiny")
    ref = train_forecaster(tiny_config(root, name="klr", steps=20, tokenizer_steps=40), market(700))
    series = [s.between(int(s.ts[600]), int(s.ts[-1]) + 1) for s in market(700)]

    class Forecasts(Strategy):
        def __init__(self, use: dict) -> None:
            super().__init__()
            self.use, self.seen = use, []

        def on_start(self, ctx) -> None:
            ctx.use_predictor(**self.use)

        def on_bars(self, ctx, bars) -> None:
            self.seen += [(ctx.now, s, tuple(ctx.predictions[s])) for s in sorted(ctx.predictions)]

    srv = start(root, "--model", ref, wait_ready=False)
    try:
        from tests.test_serve_support import wait_until_ready

        wait_until_ready(srv, "klr", (32, 6))
        remote = Forecasts({"model": ref, "registry": root, "endpoint": srv.endpoint, "timeout_ms": 20000})
        live(remote, series)
    finally:
        srv.stop()
    local = Forecasts({"model": ref, "registry": root, "runtime": "torch-cpu"})
    live(local, series)
    assert len(remote.seen) == len(local.seen) > 50 and remote.seen == local.seen


def test_model_signal_takes_the_server_from_the_command_line_and_records_a_dead_one(tmp_path):
    """``--param endpoint=... --param on_failure=local`` reach the engine from the CLI: with nothing listening
    at the endpoint the run goes on with the same version run here, and its manifest says so."""
    import json
    import socket

    from tradeloop.engine.cli.main import main
    from tests.test_models_support import qbot

    root, ref = trained("tiny")
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    args = ["backtest", "model_signal", "--data", str(qbot("600519.SH")), "--param", "model=tiny@latest",
            "--param", f"registry={root}", "--set", "run.trade_from=2013-01-01", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--param", f"endpoint={dead}", "--param", "timeout_ms=200", "--param", "on_failure=local",
                 "--out", str(tmp_path / "remote")]) == 0
    local, remote = (json.loads((tmp_path / r / "manifest.json").read_text()) for r in ("local", "remote"))
    (used,) = remote["models"]
    assert used["endpoint"] == dead and used["on_failure"] == "local" and used["version"] == ref
    assert used["served"]["outages"] >= 1 and used["served"]["local_windows"] > 0
    metrics = [json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("local", "remote")]
    assert metrics[0]["final_value"] == metrics[1]["final_value"]   # the local copy gave the same decisions
    assert main([*args, "--param", "on_failure=maybe", "--out", str(tmp_path / "bad")]) == 2
