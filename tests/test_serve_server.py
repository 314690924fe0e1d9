"""Specification of the prediction server (``tradeloop serve``), through real processes and sockets:
dynamic batching coalesces concurrent requests (and does not with --no-batching); hot swap and
rollback under load answer every request, each from one version or the other; the health
monitor's switch to the backup shows in replies and metrics; readiness turns on only once the
models are loaded; /metrics is valid Prometheus text; admin needs the token."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tradeloop.models.registry import Registry
from tradeloop.models.serve.client import ServeClient
from tests.test_models_support import trained
from tests.test_serve_support import parse_metrics, served, tiny_windows

M = "tradeloop_serve_"


def hammer(endpoint: str, clients: int, per_client: int, exact: bool = False) -> list:
    """``clients`` threads, each its own connection, ``per_client`` one-window requests in a row."""
    x = tiny_windows(clients * per_client, seed=1)

    def one(k: int) -> list:
        c = ServeClient(endpoint, timeout_s=10)
        try:
            return [c.predict("tiny", x[k * per_client + i:k * per_client + i + 1], exact=exact)
                    for i in range(per_client)]
        finally:
            c.close()

    with ThreadPoolExecutor(clients) as pool:
        return [r for rs in pool.map(one, range(clients)) for r in rs]


def batch_histogram(srv) -> tuple[float, float, float]:
    """(model calls, calls of exactly one window, windows) from /metrics."""
    status, text = srv.http("/metrics")
    assert status == 200
    m = parse_metrics(text)
    lab = (("model", "tiny"),)
    return (m[(f"{M}batch_size_count", lab)], m[(f"{M}batch_size_bucket", (("le", "1"), ("model", "tiny")))],
            m[(f"{M}windows_total", lab)])


def test_dynamic_batching_coalesces_concurrent_requests_and_no_batching_does_not():
    with served("--max-delay-us", "3000", http=True) as srv:
        answers = hammer(srv.endpoint, 12, 25)
        calls, ones, windows = batch_histogram(srv)
    assert len(answers) == 300 and all(a.outputs.shape == (1, 2) for a in answers)
    assert windows >= 300 and calls < windows           # several requests shared model calls
    assert ones < calls                                  # some calls ran more than one window
    with served("--no-batching", http=True) as srv:
        hammer(srv.endpoint, 12, 25)
        calls, ones, windows = batch_histogram(srv)
    assert calls == ones == windows >= 300               # one call per request


def test_hot_swap_and_rollback_under_load_answer_every_request_from_one_version_or_the_other():
    root, _ = trained("tiny")
    reg = Registry(root)
    v1, v2 = reg.load("tiny@v0001", "onnx-cpu"), reg.load("tiny@v0002", "onnx-cpu")
    x = tiny_windows(1, seed=7)
    expect = {"v0001": v1.predict(x), "v0002": v2.predict(x)}
    assert not np.array_equal(expect["v0001"], expect["v0002"])
    stop = threading.Event()
    with served(http=True, env={"TRADELOOP_SERVE_TOKEN": "s3cret"}) as srv:
        def client() -> list:
            c = ServeClient(srv.endpoint, timeout_s=10)
            got = []
            while not stop.is_set():
                r = c.predict("tiny", x)          # every call must be answered (no exception)
                got.append(r)
            c.close()
            return got

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client) for _ in range(4)]
            try:
                time.sleep(0.3)
                swap = srv.http("/admin/models/tiny/swap", {"version": "v0002"}, token="s3cret")
                time.sleep(0.3)
                back = srv.http("/admin/models/tiny/rollback", {}, token="s3cret")
                time.sleep(0.3)
            finally:
                stop.set()
            results = [f.result(timeout=30) for f in futures]
        assert swap[0] == 200 and json.loads(swap[1]) == {"model": "tiny", "from": "v0001", "to": "v0002"}
        assert back[0] == 200 and json.loads(back[1]) == {"model": "tiny", "from": "v0002", "to": "v0001"}
        m = parse_metrics(srv.http("/metrics")[1])
    for got in results:
        versions = [r.version for r in got]
        assert all(np.array_equal(r.outputs, expect[r.version]) for r in got)   # each answer is its version's
        runs = [v for i, v in enumerate(versions) if i == 0 or versions[i - 1] != v]
        assert runs == ["v0001", "v0002", "v0001"]      # switched once each way, between two requests
    answered = sum(len(g) for g in results)
    assert m[(f"{M}requests_total", (("model", "tiny"),))] >= answered
    assert m[(f"{M}swaps_total", (("model", "tiny"),))] == 2
    assert not [k for k in m if k[0] == f"{M}errors_total"]


def test_admin_needs_the_token_and_refuses_bad_versions_without_disturbing_the_model():
    with served(http=True, env={"TRADELOOP_SERVE_TOKEN": "s3cret"}) as srv:
        assert srv.http("/admin/models/tiny/swap", {"version": "v0002"})[0] == 401
        assert srv.http("/admin/models/tiny/swap", {"version": "v0002"}, token="wrong")[0] == 401
        status, body = srv.http("/admin/models/tiny/swap", {"version": "v0009"}, token="s3cret")
        assert status == 400 and "no version 'v0009'" in body
        status, body = srv.http("/admin/models/tiny/rollback", {}, token="s3cret")
        assert status == 400 and "no earlier version" in body
        assert json.loads(srv.http("/v1/models")[1])["tiny"]["version"] == "v0001"
    with served(http=True) as srv:                     # no token in the server's environment: admin is off
        status, body = srv.http("/admin/models/tiny/swap", {"version": "v0002"}, token="anything")
        assert status == 403 and "TRADELOOP_SERVE_TOKEN is not set" in body


def test_the_health_monitor_switches_to_the_backup_and_replies_and_metrics_say_so():
    with served("--backup", "tiny@v0002", "--p99-ms", "0.000001", "--no-batching", http=True) as srv:
        answers = hammer(srv.endpoint, 1, 80)
        m = parse_metrics(srv.http("/metrics")[1])
        models = json.loads(srv.http("/v1/models")[1])
    assert answers[0].version == "v0001" and not answers[0].backup
    assert answers[-1].version == "v0002" and answers[-1].backup
    assert m[(f"{M}backup_switches_total", (("model", "tiny"),))] == 1
    assert m[(f"{M}model_version", (("backup", "true"), ("model", "tiny"), ("version", "v0002")))] == 1
    assert models["tiny"]["on_backup"] is True


def test_json_predictions_equal_the_binary_ones_and_bad_json_is_a_400():
    with served(http=True) as srv:
        x = tiny_windows(3, seed=5)
        status, body = srv.http("/v1/models/tiny/predict", {"windows": x.tolist(), "exact": True})
        assert status == 200
        got = json.loads(body)
        c = ServeClient(srv.endpoint, timeout_s=10)
        binary = c.predict("tiny", x).outputs
        c.close()
        assert got["version"] == "v0001" and np.array_equal(np.asarray(got["outputs"], np.float32), binary)
        assert srv.http("/v1/models/tiny/predict", {"windows": [[[1.0]]]})[0] == 400
        assert srv.http("/v1/models/tiny/predict", {"rows": []})[0] == 400
        status, body = srv.http("/v1/models/tiny/predict", {"windows": [[[1.0] * 16] * 16, [[1.0] * 16] * 3]})
        assert status == 400 and "ragged" in body
        assert srv.http("/v1/models/nosuch/predict", {"windows": x.tolist()})[0] == 404
        assert srv.http("/healthz")[0] == 200


def test_readiness_turns_on_only_once_every_model_is_loaded_and_metrics_parse():
    """In-process server on real sockets: listening (alive, not ready) before ``load``, ready after."""
    import urllib.error
    import urllib.request

    from tradeloop.models.serve.client import ServerUnavailable
    from tradeloop.models.serve.server import PredictionServer, ServeConfig

    root, _ = trained("tiny")

    def get(port: int, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def ask(port: int) -> str:
        try:
            return ServeClient(f"tcp://127.0.0.1:{port}", timeout_s=5).predict("tiny", tiny_windows(1)).version
        except ServerUnavailable as e:
            return str(e)

    async def scenario() -> tuple:
        srv = PredictionServer(ServeConfig(registry=root, models=("tiny@latest",), http_host="127.0.0.1"))
        await srv.start()
        before = (await asyncio.to_thread(get, srv.http_port, "/healthz"),
                  await asyncio.to_thread(get, srv.http_port, "/readyz"), await asyncio.to_thread(ask, srv.port))
        metrics_before = srv.metrics_text()
        await srv.load()
        after = (await asyncio.to_thread(get, srv.http_port, "/readyz"), await asyncio.to_thread(ask, srv.port))
        text = srv.metrics_text()
        await srv.close()
        return before, after, metrics_before, text

    before, after, metrics_before, text = asyncio.run(scenario())
    assert before[:2] == (200, 503) and "not_ready" in before[2]
    assert after == (200, "v0001")
    assert parse_metrics(metrics_before)[(f"{M}ready", ())] == 0
    m = parse_metrics(text)
    assert m[(f"{M}ready", ())] == 1 and m[(f"{M}requests_total", (("model", "tiny"),))] == 1
    assert m[(f"{M}latency_seconds_count", (("model", "tiny"),))] == 1
    assert m[(f"{M}latency_recent_seconds", (("model", "tiny"), ("quantile", "0.99")))] > 0
    with pytest.raises(ValueError):
        parse_metrics("no_type_line 1\n")            # the parser the checks rely on does refuse bad text


def test_a_forecaster_is_served_beside_a_classifier_with_the_in_process_outputs():
    """The server is generic over what Registry.load returns: a K-line forecaster (models/kline/) runs on
    torch-cpu (its own runtime) next to the ONNX classifier, and answers exactly as in-process."""
    pytest.importorskip("torch")

    from tests.test_kline_support import market, tiny_config
    from tests.test_serve_support import start, wait_until_ready
    from tradeloop.models.kline.train import train_forecaster

    root, _ = trained("tiny")
    ref = train_forecaster(tiny_config(root, steps=20, tokenizer_steps=40), market(700))
    forecaster = Registry(root).load(ref, "torch-cpu", threads=1)
    bars = market(200)[0]
    x = np.stack([np.column_stack([bars.open, bars.high, bars.low, bars.close, bars.volume,
                                   bars.extra["amount"]])[i:i + 32] for i in (0, 50, 100)]).astype(np.float32)
    srv = start(root, "--model", "tiny@latest", "--model", ref, "--max-batch", "4")
    try:
        wait_until_ready(srv, ref.split("@")[0], (32, 6))
        c = ServeClient(srv.endpoint, timeout_s=60)
        got = c.predict(ref.split("@")[0], x)
        tiny = c.predict("tiny", tiny_windows(2))
        c.close()
    finally:
        srv.stop()
    assert got.version == ref.split("@")[1] and got.outputs.shape == (3, len(forecaster.outputs))
    assert np.array_equal(got.outputs, forecaster.predict(x))
    assert tiny.outputs.shape == (2, 2)
