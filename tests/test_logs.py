"""Specification of engine.logs' run event files: a run records its own log events and no one
else's, also when runs share a process on threads (Dask with processes=False), and the threads a
run starts for batch inference log into the run that started them."""
from __future__ import annotations

import json
import threading

import structlog

from tradeloop.engine.telemetry.logs import run_events
from tradeloop.models.batching import run_tasks


def recorded(events, tmp_path, name: str) -> list[dict]:
    path = events.save(tmp_path / f"{name}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_runs_on_two_threads_record_only_their_own_events(tmp_path):
    both_started = threading.Barrier(2)
    out: dict[str, list[dict]] = {}

    def run(name: str) -> None:
        log = structlog.get_logger("tradeloop.test")
        with run_events() as events:
            both_started.wait()  # both runs are active while either logs
            for i in range(50):
                log.info("step", run=name, i=i)
            both_started.wait()
            out[name] = recorded(events, tmp_path, name)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("a", "b"):
        assert [e["run"] for e in out[name]] == [name] * 50
        assert [e["i"] for e in out[name]] == list(range(50))


def test_batch_worker_threads_log_into_the_run_that_started_them(tmp_path):
    log = structlog.get_logger("tradeloop.test")

    def work(i: int) -> None:
        log.info("batch_task", i=i, thread=threading.current_thread().name)

    with structlog.contextvars.bound_contextvars(run_id="r1"), run_events() as events:
        run_tasks(work, range(6), workers=3)
        got = recorded(events, tmp_path, "r1")
    assert sorted(e["i"] for e in got) == list(range(6))
    assert {e["run_id"] for e in got} == {"r1"}
    assert all(e["thread"].startswith("tradeloop-batch") for e in got)


def test_a_run_that_ended_records_nothing_more(tmp_path):
    log = structlog.get_logger("tradeloop.test")
    with run_events() as events:
        log.info("inside")
        path = events.save(tmp_path / "e.jsonl")
    log.info("after")
    assert [json.loads(line)["event"] for line in path.read_text().splitlines()] == ["inside"]
