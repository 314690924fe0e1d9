"""Our FIX 4.4 adapter against QuickFIX, a standard counterparty validating with the FIX 4.4 data dictionary.

QuickFIX (the C++ engine's Python binding) runs the acceptor with ``UseDataDictionary=Y``: a
message of ours with a missing required field, a wrong type or a value outside the dictionary
would be rejected (35=3) or ignored. Its application answers NewOrderSingle, replace, status
and cancel requests with ExecutionReports, which our session validates in turn. The acceptor runs
as its own process (tests/quickfix_counterparty.py), as a broker's would.

The binding has no wheel and takes minutes to build (see ../shared/DEPENDENCIES.md), so CI does
not install it and this test is skipped there; it runs wherever ``import quickfix`` works and
the dictionary file is found (``QUICKFIX_SPEC`` names FIX44.xml, or it sits beside the module).
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tradeloop.brokers.fix.client import FixBroker
from tradeloop.brokers.fix.codec import utc_timestamp
from tradeloop.brokers.fix.session import SessionConfig
from tradeloop.brokers.fix.spec import MsgType, Tag
from tradeloop.brokers.fix.store import MemoryStore
from tradeloop.brokers.orders import Fill, Order, OrderStatus, OrderType, Side

fix = pytest.importorskip("quickfix", reason="the quickfix binding is not installed (pip install quickfix, ~7 min)")


def spec_file() -> Path | None:
    for candidate in (os.environ.get("QUICKFIX_SPEC"), Path(fix.__file__).parent / "spec" / "FIX44.xml",
                      Path(fix.__file__).parent / "FIX44.xml"):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_orders_replace_status_and_cancel_interoperate_with_a_quickfix_acceptor_validating_the_dictionary(tmp_path):
    spec = spec_file()
    if spec is None:
        pytest.skip("FIX44.xml not found: set QUICKFIX_SPEC to the data dictionary of the quickfix sources")
    port = free_port()
    cfg = tmp_path / "acceptor.cfg"
    cfg.write_text(f"""[DEFAULT]
ConnectionType=acceptor
SocketAcceptPort={port}
SocketAcceptHost=127.0.0.1
FileStorePath={tmp_path / 'store'}
FileLogPath={tmp_path / 'log'}
StartTime=00:00:00
EndTime=00:00:00
UseDataDictionary=Y
DataDictionary={spec}
ValidateUserDefinedFields=Y
ValidateFieldsOutOfOrder=Y
ValidateFieldsHaveValues=Y
[SESSION]
BeginString=FIX.4.4
SenderCompID=EXCH
TargetCompID=TRADER
HeartBtInt=30
""")
    out = tmp_path / "counterparty.txt"
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("quickfix_counterparty.py")), str(cfg),
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout.readline().strip() == b"ready"

        def lines(prefix: str) -> list[str]:
            return [x[len(prefix):] for x in out.read_text().splitlines() if x.startswith(prefix)] if out.exists() else []

        broker_fills: list[Fill] = []
        clean: list[str] = []
        order = Order("O00000001", "600519.SH", Side.BUY, 200.0, OrderType.LIMIT, limit_price=1650.5)

        async def session() -> FixBroker:
            broker = FixBroker(SessionConfig("TRADER", "EXCH", heartbeat_s=30), "127.0.0.1", port, MemoryStore())
            await broker.start()
            assert await broker.wait_logged_on(10)
            broker.submit(order)
            await until(lambda: order.filled_qty == 100.0)
            broker.replace(order, qty=300.0, limit_price=1651.0)
            await until(lambda: order.qty == 300.0)
            assert await broker.status(order, 5) is OrderStatus.PARTIALLY_FILLED
            broker.cancel(order)
            await until(lambda: order.status is OrderStatus.CANCELLED)
            broker_fills.extend(broker.fills)
            clean.extend(m for m in lines("admin-out ") if "|35=3|" in m)
            # the control: a NewOrderSingle without OrdType(40) is refused by the dictionary check
            broker.session.send(MsgType.NewOrderSingle, [(Tag.ClOrdID, "BAD1"), (Tag.HandlInst, "1"),
                                                         (Tag.Symbol, "X"), (Tag.Side, "1"),
                                                         (Tag.TransactTime, utc_timestamp()), (Tag.OrderQty, 1)])
            await until(lambda: any("|35=3|" in m for m in lines("admin-out ")))
            await broker.stop()
            return broker

        asyncio.run(asyncio.wait_for(session(), 30))
    finally:
        proc.terminate()
        proc.wait(10)
    received = lines("recv ")
    assert received == ["D", "G", "H", "F"]                    # every request reached the application
    assert clean == []                                              # and none was rejected by the dictionary,
    reject, = [m for m in lines("admin-out ") if "|35=3|" in m]         # though the broken one was
    assert "|371=40|" in reject and "|373=1|" in reject             # (required tag missing: OrdType)
    events = "".join(p.read_text(errors="replace") for p in (tmp_path / "log").glob("*event*.log"))
    assert "Received logon request" in events                     # the log was read...
    assert "Invalid" not in events
    assert broker_fills == [Fill("O00000001", broker_fills[0].ts, "600519.SH", Side.BUY, 100.0, 1650.5, 0.0)]
    assert order.limit_price == 1651.0 and order.reason == ""


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)
