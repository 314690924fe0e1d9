"""Broken state files never become a silent fresh start: an empty, truncated or corrupt live or exchange
state file is a one-line error naming it (exit 2); ``--fresh-state`` moves it aside, never deletes it."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tradeloop.brokers.exchange import ExchangeSimulator
from tradeloop.brokers.fix.session import SessionConfig
from tradeloop.brokers.fix.store import StateFileError, check_state_file, state_problem
from tradeloop.data.schema import Bar
from tradeloop.engine.cli.main import main
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.live.runner import LiveRunner

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_006_400_000_000_000
DAY = 86_400 * 10 ** 9


def exchange_state(path: Path) -> bytes:
    """A real exchange state file with history in it (one bar processed); its bytes, checkpointed."""
    ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=path)
    for i in range(3):
        ex.on_bar(Bar("X", T0 + i * DAY, 10.0, 11.0, 9.0, 10.5, 1000.0))
    ex.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ex.store.close()
    return path.read_bytes()


def damaged(kind: str, good: bytes) -> bytes:
    """``good`` emptied, cut short or overwritten in the middle."""
    if kind == "empty":
        return b""
    if kind == "truncated":
        return good[:len(good) // 2]
    corrupt = bytearray(good)
    corrupt[len(good) // 2:len(good) // 2 + 512] = os.urandom(512)
    corrupt[4096 + 8:4096 + 12] = b"\xff\xff\xff\xff"   # the first b-tree page's cell count: certainly bad
    return bytes(corrupt)


def live_cfg(state: Path) -> RunConfig:
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    cfg.live.mqtt, cfg.live.fix, cfg.live.state, cfg.live.symbols = "mqtt://x:1", "127.0.0.1:1", str(state), ["A"]
    return cfg


def run_exchange(state: Path, *extra: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """``python -m tradeloop.brokers.exchange --state STATE`` run until its ready line, then SIGTERM'd."""
    proc = subprocess.Popen([sys.executable, "-m", "tradeloop.brokers.exchange", "--port", "0", "--state", str(state),
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line:
        proc.terminate()
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, line + out, err)


@pytest.mark.parametrize("kind", ["empty", "truncated", "corrupt"])
def test_a_broken_exchange_state_file_is_a_one_line_error_and_is_left_as_it_was(tmp_path, kind):
    state = tmp_path / "x.sqlite"
    bad = damaged(kind, exchange_state(state))
    state.write_bytes(bad)
    done = run_exchange(state)
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(state) in lines[0] and "--fresh-state" in lines[0], done.stderr
    assert "ready" not in done.stdout
    assert state.read_bytes() == bad and [p.name for p in tmp_path.iterdir()] == ["x.sqlite"]


def test_fresh_state_moves_a_broken_exchange_state_aside_and_starts_fresh(tmp_path):
    state = tmp_path / "x.sqlite"
    bad = damaged("truncated", exchange_state(state))
    state.write_bytes(bad)
    done = run_exchange(state, "--fresh-state", "--log-json")
    assert done.returncode == 0 and '"event": "ready"' in done.stdout, done
    [aside] = [p for p in tmp_path.iterdir() if ".bad-" in p.name and not p.name.endswith(("-wal", "-shm"))]
    assert aside.name.startswith("x.sqlite.bad-") and aside.read_bytes() == bad   # kept, byte for byte
    assert "exchange.state_moved_aside" in done.stderr and str(aside) in done.stderr
    assert state_problem(state, ("fix_session", "exch_meta")) is None             # the new one is a valid state


def test_an_exchange_state_file_that_does_not_exist_is_a_fresh_start_and_a_valid_one_resumes(tmp_path):
    state = tmp_path / "new.sqlite"
    assert run_exchange(state).returncode == 0 and state.exists()
    exchange_state(tmp_path / "old.sqlite")
    ex = ExchangeSimulator(SessionConfig("EXCH", "TRADER"), state=tmp_path / "old.sqlite", fresh_state=True)
    assert ex._last_ts[("X", "bar")] == T0 + 2 * DAY       # resumed: --fresh-state never touches a good file
    ex.store.close()
    assert not [p for p in tmp_path.iterdir() if ".bad-" in p.name]


@pytest.mark.parametrize("kind", ["empty", "truncated", "corrupt"])
def test_a_broken_live_state_file_is_a_one_line_error_exit_2(tmp_path, capsys, kind):
    state = tmp_path / "live.sqlite"
    LiveRunner(live_cfg(state)).close()
    with sqlite3.connect(state) as db:   # a journal with something in it, then into the main file
        db.execute("INSERT INTO live_meta VALUES ('last_ts', '1')")
    with sqlite3.connect(state) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    bad = damaged(kind, state.read_bytes())
    state.write_bytes(bad)
    assert main(["live", "sma_cross", "--mqtt", "mqtt://127.0.0.1:1", "--fix", "127.0.0.1:1", "--state", str(state),
                 "--symbols", "A"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(state) in err[0] and "--fresh-state" in err[0], err
    assert state.read_bytes() == bad


def test_fresh_state_moves_a_broken_live_state_aside_and_a_missing_one_is_a_fresh_start(tmp_path):
    state = tmp_path / "live.sqlite"
    state.write_bytes(b"")
    with pytest.raises(StateFileError, match=r"live.state .*live.sqlite: it is empty \(0 bytes\)"):
        LiveRunner(live_cfg(state))
    runner = LiveRunner(live_cfg(state), fresh_state=True)
    runner.close()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("live.sqlite.bad-")]
    assert len(aside) == 1 and aside[0].read_bytes() == b""
    assert state_problem(state, ("fix_session", "live_meta")) is None
    LiveRunner(live_cfg(tmp_path / "never.sqlite")).close()     # a path that does not exist: a fresh start


def test_another_programs_database_or_a_non_file_is_not_taken_for_a_state(tmp_path):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    assert "no table fix_session, exch_meta" in state_problem(other, ("fix_session", "exch_meta"))
    assert "not a regular file" in state_problem(tmp_path, ("fix_session",))
    text = tmp_path / "notes.sqlite"
    text.write_text("hello\n" * 50)
    with pytest.raises(StateFileError, match="not a SQLite database"):
        check_state_file(text, ("fix_session",), what="exchange")
    wal_only = tmp_path / "gone.sqlite"
    Path(f"{wal_only}-wal").write_bytes(b"x" * 100)
    assert "write-ahead log" in state_problem(wal_only, ("fix_session",))
    moved = check_state_file(wal_only, ("fix_session",), what="exchange", fresh=True)
    assert Path(f"{moved}-wal").read_bytes() == b"x" * 100      # the log travels with it, never deleted
