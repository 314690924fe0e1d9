"""The exchange simulator as its own process: start, refuse bad logons, survive SIGKILL, keep secrets out of logs."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import AsyncIterator

import pytest

from tradeloop.brokers.costs import PerShareCommission, VolumeShareSlippage
from tradeloop.brokers.exchange import build_parser, main
from tradeloop.brokers.fill_config import write_rules
from tradeloop.brokers.fix.client import Backoff, FixBroker
from tradeloop.brokers.fix.rawpeer import RawPeer
from tradeloop.brokers.fix.session import SessionConfig
from tradeloop.brokers.fix.spec import MsgType, Tag
from tradeloop.brokers.fix.store import SQLiteSequenceStore
from tradeloop.brokers.orders import Fill, Order, OrderEvent, OrderStatus, OrderType, Side
from tradeloop.brokers.sim import FillRules

HOST = "127.0.0.1"
PASSWORD = "correct horse battery staple"
ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_006_400_000_000_000
MIN = 60_000_000_000


def run(coro, timeout: float = 40.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Simulator:
    """``python -m brokers.exchange`` as a child process, with its ready line parsed."""

    def __init__(self, proc: asyncio.subprocess.Process, ready: dict, log: Path) -> None:
        self.proc, self.log = proc, log
        self.fix_port, self.bars_port = ready["fix_port"], ready["bars_port"]
        self._bars: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def bar(self, i: int, o: float, h: float, l: float, c: float, v: float = 1000.0) -> None:
        """Send one bar on the market-data port and wait until the simulator has matched it."""
        if self._bars is None:
            self._bars = await asyncio.open_connection(HOST, self.bars_port)
        reader, writer = self._bars
        ts = T0 + i * MIN
        writer.write(json.dumps({"symbol": "X", "ts": ts, "open": o, "high": h, "low": l, "close": c,
                                 "volume": v}).encode() + b"\n")
        assert await asyncio.wait_for(reader.readline(), 5) == f"ok {ts}\n".encode()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        if self._bars is not None:
            self._bars[1].close()
            self._bars = None
        return await asyncio.wait_for(self.proc.wait(), 10)


@contextlib.asynccontextmanager
async def simulator(tmp: Path, *, fix_port: int = 0, bars_port: int = 0, name: str = "sim",
                    rules: Path | None = None) -> AsyncIterator[Simulator]:
    log = tmp / f"{name}.log"
    env = {**os.environ, "EXCH_PW": PASSWORD}
    with open(log, "ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tradeloop.brokers.exchange", "--port", str(fix_port), "--bars-port", str(bars_port),
            "--sender", "EXCH", "--target", "TRADER", "--password-env", "EXCH_PW", "--state", str(tmp / "x.sqlite"),
            "--log-level", "debug", *(["--rules", str(rules)] if rules else []),
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=err)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert line, f"simulator exited: {log.read_text()[-2000:]}"
        sim = Simulator(proc, json.loads(line), log)
        yield sim
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def trader(port: int, store_path: Path, password: str = PASSWORD) -> FixBroker:
    """The trader's FIX adapter for the simulator process, its sequence numbers in ``store_path``."""
    config = SessionConfig("TRADER", "EXCH", heartbeat_s=2, password=password, logout_timeout_s=1.0)
    return FixBroker(config, HOST, port, SQLiteSequenceStore(store_path, "TRADER->EXCH"), backoff=Backoff(0.05, 0.25))


async def wait_for(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def drain(broker: FixBroker) -> list:
    out = []
    while not broker.events.empty():
        out.append(broker.events.get_nowait())
    return out


def test_simulator_process_refuses_a_bad_password_serves_a_good_one_and_never_logs_it(tmp_path):
    async def scenario():
        async with simulator(tmp_path) as sim:
            peer = await RawPeer().connect(HOST, sim.fix_port)
            await peer.send(MsgType.Logon, [(Tag.EncryptMethod, 0), (Tag.HeartBtInt, 30), (Tag.Password, "guess")])
            assert "password" in (await peer.expect(MsgType.Logout))[Tag.Text]
            assert await peer.closed(2)
            broker = trader(sim.fix_port, tmp_path / "trader.sqlite")
            await broker.start()
            assert await broker.wait_logged_on(5)
            o = Order("O1", "X", Side.BUY, 5.0, created_ts=T0)
            broker.submit(o)
            await wait_for(lambda: o.status is OrderStatus.ACCEPTED)
            await sim.bar(1, 10, 10, 10, 10)
            await wait_for(lambda: o.status is OrderStatus.FILLED)
            await broker.stop()
            sim.proc.send_signal(signal.SIGTERM)
            assert await sim.wait() == 0
        log = sim.log.read_text()
        assert "554=***" in log and "35=D" in log
        assert PASSWORD not in log and "guess" not in log
    run(scenario())


def test_a_simulator_killed_and_restarted_mid_session_loses_and_duplicates_no_order(tmp_path):
    """SIGKILL between orders and fills; the adapter reconnects, both sides resend or gap-fill,
    and every order ends with exactly one final outcome and each fill arrives once."""
    async def scenario():
        broker = trader(0, tmp_path / "trader.sqlite")
        events: list = []
        async with simulator(tmp_path, name="first") as sim:
            fix_port, bars_port = sim.fix_port, sim.bars_port
            broker.port = fix_port
            await broker.start()
            assert await broker.wait_logged_on(5)
            a = Order("A", "X", Side.BUY, 10.0, OrderType.LIMIT, 5.0, created_ts=T0)       # stays working
            b = Order("B", "X", Side.BUY, 10.0, created_ts=T0)                               # fills on bar 1
            d = Order("D", "X", Side.SELL, 4.0, OrderType.LIMIT, 10.5, created_ts=T0)       # fills on bar 1
            for o in (a, b, d):
                broker.submit(o)
            await wait_for(lambda: all(o.status is OrderStatus.ACCEPTED for o in (a, b, d)))
            await sim.bar(1, 10, 11, 9.5, 10.8)   # matched and reported, then the process dies at once
            sim.kill()
            assert await sim.wait() == -signal.SIGKILL
        await wait_for(lambda: not broker.session.connected)
        c = Order("C", "X", Side.SELL, 3.0, created_ts=T0 + MIN)    # placed while the venue is down
        broker.submit(c)
        assert broker.cancel(a)
        async with simulator(tmp_path, fix_port=fix_port, bars_port=bars_port, name="second") as sim:
            await wait_for(lambda: a.status is OrderStatus.CANCELLED and c.status is OrderStatus.ACCEPTED, 10)
            await sim.bar(2, 12, 12, 11, 11.5)
            await wait_for(lambda: c.status is OrderStatus.FILLED)
            await broker.stop()
        events = drain(broker)
        finals = Counter(e.order_id for e in events if isinstance(e, OrderEvent) and e.status.is_final)
        assert finals == Counter({"A": 1, "B": 1, "C": 1, "D": 1})
        fills = [(f.order_id, f.qty, f.price) for f in events if isinstance(f, Fill)]
        assert sorted(fills) == [("B", 10.0, 10.0), ("C", 3.0, 12.0), ("D", 4.0, 10.5)]
        assert {o: broker.orders[o].status for o in "ABCD"} == {
            "A": OrderStatus.CANCELLED, "B": OrderStatus.FILLED, "C": OrderStatus.FILLED, "D": OrderStatus.FILLED}
        assert broker.logons == 2
    run(scenario())


def test_password_file_must_be_owner_only_and_the_command_line_takes_no_password(tmp_path, capsys):
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o644)
    assert main(["--port", "0", "--password-file", str(pw), "--state", str(tmp_path / "s.sqlite")]) == 2
    assert "chmod 600" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--password", PASSWORD])
    os.environ.pop("TRADELOOP_TEST_UNSET_PW", None)
    assert main(["--password-env", "TRADELOOP_TEST_UNSET_PW"]) == 2
    assert "TRADELOOP_TEST_UNSET_PW is not set" in capsys.readouterr().err


def test_the_simulator_process_fills_with_the_rules_file_it_is_given(tmp_path):
    """Per-share commission, volume-share slippage and a participation cap, all read from ``--rules``."""
    rules = FillRules(participation=0.5, commission=PerShareCommission(0.01, 1.0), slippage=VolumeShareSlippage(0.4))
    path = write_rules(tmp_path / "rules.json", rules)

    async def scenario():
        async with simulator(tmp_path, rules=path) as sim:
            broker = trader(sim.fix_port, tmp_path / "trader.sqlite")
            await broker.start()
            assert await broker.wait_logged_on(5)
            o = Order("O1", "X", Side.BUY, 300.0, created_ts=T0)
            broker.submit(o)
            await wait_for(lambda: o.status is OrderStatus.ACCEPTED)
            await sim.bar(1, 10, 12, 9, 11, v=400.0)     # 200 of 300 (half the volume), at 10 * (1 + 0.4 * 0.5**2)
            await sim.bar(2, 11, 12, 10, 11, v=1000.0)   # the last 100, at 11 * (1 + 0.4 * 0.1**2)
            await wait_for(lambda: o.status is OrderStatus.FILLED)
            await broker.stop()
            sim.proc.send_signal(signal.SIGTERM)
            assert await sim.wait() == 0
        return [(f.qty, f.price, f.commission) for f in drain(broker) if isinstance(f, Fill)]
    assert run(scenario()) == [(200.0, rules.slippage(Side.BUY, 10.0, 200.0, 400.0), 2.0),
                               (100.0, rules.slippage(Side.BUY, 11.0, 100.0, 1000.0), 1.0)]


@pytest.mark.parametrize("content, message", [
    (None, "No such file or directory"),
    ("fill_at = 'open'", "not JSON"),
    ('{"fill_at": "open", "slipage": {"kind": "bps", "bps": 5}}', "rules: unknown key 'slipage'"),
    ('{"commission": {"kind": "per_share", "per_share": 0.01, "minimum_fee": 1}}',
     "rules.commission(per_share): unknown key 'minimum_fee'"),
])
def test_a_bad_rules_file_is_one_line_naming_the_file_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "rules.json"
    if content is not None:
        path.write_text(content)
    assert main(["--port", "0", "--rules", str(path), "--state", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: rules file {path}: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "s.sqlite").exists()


def test_the_per_rule_flags_are_gone():
    for flag in ("--fill-at", "--market", "--participation", "--lot-size", "--commission-rate", "--commission-min",
                 "--slippage-bps"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([flag, "1"])
