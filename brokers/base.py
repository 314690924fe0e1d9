"""The venue contract: what the engine may ask of a venue, and what a venue may ask back.

One engine drives any venue through :class:`Venue`: the simulated venue (``tradeloop.brokers.sim``), which
matches working orders against market data in process, and the remote venue (``tradeloop.brokers.remote``),
which sends them to a broker over FIX. A venue reports fills and order status changes to a
:class:`FillSink`; a venue that matches in process asks an :class:`Account` whether a fill can be
paid for and how much may be sold. The engine is both, and binds itself with :meth:`Venue.bind`.
A venue that matches in process is also a :class:`ResumableVenue`: its own state of each order can be
taken out and put back (the exchange simulator's undo and state file).
"""
from __future__ import annotations

from typing import Mapping, Protocol, Sequence, runtime_checkable

from tradeloop.brokers.orders import Fill, Order, OrderEvent, Side


@runtime_checkable
class FillSink(Protocol):
    """Where a venue reports: each fill, and each change of an order's status."""

    def on_fill(self, fill: Fill, order: Order) -> None: ...

    def on_order_event(self, event: OrderEvent, order: Order) -> None: ...


@runtime_checkable
class Account(Protocol):
    """What a venue that matches in process asks the account while it matches."""

    def affordable(self, symbol: str, side: Side, qty: float, price: float, commission: float) -> str | None:
        """None when the account can pay for this fill, else the reason it cannot."""

    def sellable(self, symbol: str) -> float:
        """Shares of ``symbol`` that may be sold now (T+1: bought before today)."""

    def pre_close(self, symbol: str) -> float:
        """The previous session's close of ``symbol`` (NaN if unknown): the base of price limits."""


@runtime_checkable
class Venue(Protocol):
    """Where orders go: entry and cancel, market data in, working orders out, reports to the bound sink.

    ``working`` is a read-only, live view: symbol -> its working orders, holding only symbols that
    have some. The engine's loop tests membership on it at every event, so it must be a mapping
    (a ``types.MappingProxyType`` of the venue's own dict), never a copy made per read.
    """

    @property
    def working(self) -> Mapping[str, Sequence[Order]]: ...

    def bind(self, sink: FillSink, account: Account) -> None:
        """Report to ``sink`` and ask ``account`` from now on (the engine binds itself)."""

    def submit(self, order: Order, ts: int) -> None:
        """Take an order that passed risk; what becomes of it is reported to the sink."""

    def cancel(self, order: Order, ts: int, reason: str = "cancelled") -> bool:
        """Cancel (or ask to cancel) a working order; False if it is not working here."""

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """The working orders (of ``symbol``, or all), as a new list."""

    def on_bar(self, symbol: str, ts: int, o: float, h: float, l: float, c: float, v: float) -> None:
        """Market data: a bar (or a tick as o=h=l=c) of a symbol with working orders."""

    def on_close(self, symbol: str, ts: int, c: float, v: float) -> None:
        """Market data: the close of the bar at ``ts``, for orders placed at ``ts`` (``fill_at="close"``)."""


@runtime_checkable
class ResumableVenue(Protocol):
    """A venue that matches in process and keeps state of its own beyond each :class:`Order` (when an order
    reaches it, its place in a queue, a DAY order's first day; the latency sampler): it hands that state out
    and takes it back, so an order whose handling is undone, or that is reloaded from a state file (the
    exchange simulator), works on exactly as before: same arrival, same queue place, no new latency draw.
    """

    def order_state(self, order_id: str) -> tuple | None:
        """The venue's own state of an order: a tuple of plain values (comparable, msgpack-able; a state file
        may hold it as a list), or None where it keeps none; for :meth:`restore_order_state`."""

    def restore_order_state(self, order_id: str, state: Sequence | None) -> None:
        """Set an order's state back (None forgets it); a later ``submit`` of that order keeps it."""

    def venue_state(self) -> bytes | None:
        """The venue-wide state later orders depend on (a seeded latency sampler's RNG); None if none."""

    def restore_venue_state(self, state: bytes | None) -> None:
        """Put back what :meth:`venue_state` gave (None: leave it as it is)."""
