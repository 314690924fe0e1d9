"""A QuickFIX 4.4 acceptor validating with the FIX 4.4 data dictionary, as a process (tests/test_fix_quickfix.py).

Usage: python tests/quickfix_counterparty.py CONFIG OUT. It appends one line per application message
received (``recv <MsgType>``) and per admin message sent (``admin-out <message>``) to OUT, prints
``ready`` once listening, and exits on SIGTERM without stopping the engine (the binding's
``stop()`` can crash while its threads call back into Python).
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import quickfix as fix


class Counterparty(fix.Application):
    """A minimal broker: acknowledges, part-fills, replaces, reports and cancels orders as FIX 4.4 says."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = open(out, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
        self.logged_on = threading.Event()
        self.n = 0
        self.orders: dict[str, dict[int, str]] = {}

    def onCreate(self, sessionID): pass
    def onLogon(self, sessionID): self.logged_on.set()
    def onLogout(self, sessionID): pass
    def toAdmin(self, message, sessionID):
        self.out.write("admin-out " + message.toString().replace("\x01", "|") + "\n")
    def toApp(self, message, sessionID): pass

    def fromAdmin(self, message, sessionID): pass

    def fromApp(self, message, sessionID):
        mt = self._get(message.getHeader(), 35)
        self.out.write(f"recv {mt}\n")
        f = {tag: self._get(message, tag) for tag in (11, 41, 55, 54, 38, 44, 40)}
        if mt == "D":
            self.orders[f[11]] = {38: f[38], 44: f[44], 54: f[54], 55: f[55], "cum": "0"}
            self._er(sessionID, f[11], None, "0", "0", f, leaves=f[38], cum="0", avg="0")
            half = str(float(f[38]) / 2)
            self.orders[f[11]]["cum"] = half
            self._er(sessionID, f[11], None, "F", "1", f, leaves=half, cum=half, avg=f[44], last=(half, f[44]))
        elif mt == "G":
            o = self.orders[f[41]]
            o[38], o[44] = f[38], f[44]
            leaves = str(float(f[38]) - float(o["cum"]))
            self._er(sessionID, f[11], f[41], "5", "1", f, leaves=leaves, cum=o["cum"], avg=o[44])
        elif mt == "H":
            o = next(iter(self.orders.values()))
            self._er(sessionID, f[11], None, "I", "1", {**f, 55: o[55], 54: o[54], 38: o[38]},
                     leaves=str(float(o[38]) - float(o["cum"])), cum=o["cum"], avg=o[44])
        elif mt == "F":
            o = next(iter(self.orders.values()))
            self._er(sessionID, f[11], f[41], "4", "4", {**f, 38: o[38]}, leaves="0", cum=o["cum"], avg=o[44])

    @staticmethod
    def _get(m, tag: int) -> str | None:
        field = fix.StringField(tag)
        if m.isSetField(field):
            m.getField(field)
            return field.getValue()
        return None

    def _er(self, sessionID, clordid, orig, exec_type, status, f, *, leaves, cum, avg, last=None) -> None:
        self.n += 1
        m = fix.Message()
        m.getHeader().setField(fix.MsgType("8"))
        fields = [(37, "Q1"), (11, clordid), (41, orig), (17, f"QE{self.n}"), (150, exec_type), (39, status),
                  (55, f[55]), (54, f[54]), (38, f[38]), (44, f.get(44)), (151, leaves), (14, cum), (6, avg)]
        if last is not None:
            fields += [(32, last[0]), (31, last[1])]
        for tag, value in fields:
            if value is not None:
                m.setField(fix.StringField(tag, str(value)))
        m.setField(fix.TransactTime())
        fix.Session.sendToTarget(m, sessionID)



def main(config: str, out: str) -> None:
    app = Counterparty(out)
    settings = fix.SessionSettings(config)
    acceptor = fix.SocketAcceptor(app, fix.FileStoreFactory(settings), settings, fix.FileLogFactory(settings))
    acceptor.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    os._exit(0)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main(sys.argv[1], sys.argv[2])
