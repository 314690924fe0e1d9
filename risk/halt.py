"""Limit-move halt: a symbol whose last price moved too far from the previous close stops taking orders.

At each timestamp (step 3) every new bar's close is compared with the symbol's previous close
(``pre_close`` where the data has it, else the prior day's last close). A move of ``move`` or
more, either way, halts new orders for that symbol (``scope="symbol"``) or for the whole book
(``scope="book"``) until the next session (trading day) or an operator's ``resume``; working
orders are cancelled too when ``cancel_working`` is set. A resumed halt does not come back the
same day.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tradeloop.brokers.orders import Order
from tradeloop.data.schema import NS_PER_DAY

from tradeloop.risk.pipeline import BatchState, Verdict

if TYPE_CHECKING:  # pragma: no cover
    from tradeloop.data.schema import Bar

    from tradeloop.risk.pipeline import RiskPipeline

BOOK = ""  # the key of a whole-book halt


class HaltGuard:
    """Watches moves from the previous close; refuses orders for halted symbols (or the halted book)."""

    name = "halt"

    def __init__(self, move: float = 0.05, scope: str = "symbol", cancel_working: bool = False) -> None:
        if not 0 < move < 1:
            raise ValueError(f"halt move must be a fraction between 0 and 1, not {move!r}")
        if scope not in ("symbol", "book"):
            raise ValueError(f"halt scope must be 'symbol' or 'book', not {scope!r}")
        self.move = move
        self.scope = scope
        self.cancel_working = cancel_working
        self.reset(None)

    def reset(self, pipeline: RiskPipeline | None) -> None:
        self.pipe = pipeline
        self._pre_close = pipeline.desk.pre_close if pipeline is not None and pipeline.desk is not None else None
        self.halted: dict[str, tuple[int, str]] = {}   # key -> (day, why)
        self.resumed: dict[str, int] = {}              # key -> day an operator resumed it

    def state(self) -> dict:
        """Halts in force and operator resumes (by day), for a restarted live run."""
        return {"halted": {k: list(v) for k, v in self.halted.items()}, "resumed": dict(self.resumed)}

    def restore(self, state: dict) -> None:
        self.halted = {k: (int(v[0]), str(v[1])) for k, v in state["halted"].items()}
        self.resumed = {k: int(v) for k, v in state["resumed"].items()}

    def in_force(self, ts: int) -> dict[str, str]:
        """The halts that refuse orders at ``ts`` (key: symbol, or BOOK for the whole book -> why): today's."""
        day = ts // NS_PER_DAY
        return {k: why for k, (d, why) in self.halted.items() if d == day}

    def on_step(self, ts: int, bars: list[Bar]) -> None:
        pre_close, limit = self._pre_close, self.move - 1e-12
        for bar in bars:
            pc = pre_close(bar.symbol)
            if pc > 0:
                move = bar.close / pc - 1.0
                if move >= limit or -move >= limit:
                    self._trigger(ts, bar.symbol, bar.close, pc, move, self.pipe)

    def _trigger(self, ts: int, symbol: str, last: float, pc: float, move: float, pipe: RiskPipeline) -> None:
        day = ts // NS_PER_DAY
        key = symbol if self.scope == "symbol" else BOOK
        if self.halted.get(key, (None,))[0] == day or self.resumed.get(key) == day:
            return
        why = (f"{symbol} last {last:g} is {move:+.2%} from the previous close {pc:g} "
               f"(halt at {self.move:.2%}; {'the book' if key == BOOK else symbol} halted until the next session)")
        self.halted[key] = (day, why)
        pipe.record(ts, self.name, "halt", why, symbol=symbol, value=move)
        if self.cancel_working:
            pipe.cancel_open(ts, None if key == BOOK else symbol, self.name, why)

    def __call__(self, order: Order, state: BatchState) -> Verdict | None:
        if not self.halted:
            return None
        day = state.now // NS_PER_DAY
        for key in (order.symbol, BOOK):
            h = self.halted.get(key)
            if h is not None and h[0] == day:
                return Verdict("reject", h[1])
        return None

    def resume(self, ts: int, symbol: str | None, pipe: RiskPipeline, by: str = "operator") -> None:
        """Lift the halt of ``symbol`` (None: every halt) for the rest of the day."""
        day = ts // NS_PER_DAY
        keys = [k for k in self.halted if symbol is None or k == symbol]
        for key in keys:
            del self.halted[key]
            self.resumed[key] = day
            pipe.record(ts, self.name, "resume", f"{key or 'book'} resumed by {by}", symbol=key)
        if not keys:
            pipe.record(ts, self.name, "resume", f"resume {symbol or 'all'} by {by}: nothing was halted",
                        symbol=symbol or "")
