"""The store interface: the only place budgetguard does I/O.

A store keeps, per limit *counter* and window bucket, two integers in nano-USD:
``spent`` (settled, final) and ``held`` (reserved by calls in flight). Its
whole job is three atomic operations with the same meaning in every backend:

``reserve``
    Check every counter of a call and hold ``amount`` on all of them, or on
    none (all-or-nothing). The window bucket is decided by the store's own
    clock. The hold is a *lease*: if nobody settles or releases it before
    ``lease_s`` it is swept and its amount freed.
``settle``
    Replace the hold by the actual cost. Idempotent by reservation id: a second
    settle is a no-op; a settle after the lease expired still charges the
    actual cost, once.
``release``
    Drop the hold without charging (the call failed before costing anything).
``renew``
    Extend a live hold's lease while its call is still in flight.

Every amount is an int of nano-USD in [0, ``MAX_NANOS``]; a store refuses any
other before changing anything (``_core.money.check_nanos``).

Sync and async shells call differently named methods (``reserve`` /
``areserve``), so one object may serve both, as ``MemoryStore`` does.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .._core.counters import Counter, CounterStatus, Denial, Reservation, ReserveOutcome

__all__ = [
    "AsyncStore",
    "Counter",
    "CounterStatus",
    "Denial",
    "Reservation",
    "ReserveOutcome",
    "Store",
]


@runtime_checkable
class Store(Protocol):
    def reserve(
        self, reservation_id: str, counters: tuple[Counter, ...], amount: int, lease_s: float
    ) -> ReserveOutcome: ...

    def settle(self, reservation: Reservation, actual: int) -> bool:
        """Charge ``actual``; True if this call applied it, False if it was already settled."""
        ...

    def release(self, reservation: Reservation) -> bool: ...

    def status(self, counter: Counter) -> CounterStatus: ...

    def renew(self, reservation: Reservation, lease_s: float) -> float | None:
        """Extend a live hold's lease to ``lease_s`` from now (a call still in flight):
        its new end, epoch seconds, or None when the hold is already gone."""
        ...

    def pin(self, reservation_id: str, counters: tuple[Counter, ...]) -> Reservation:
        """A reservation that holds nothing, pinned to the counters' current buckets
        (no I/O): settling it charges after the fact, once, with no limit check -
        for a call that already happened without a reservation."""
        ...


@runtime_checkable
class AsyncStore(Protocol):
    async def areserve(
        self, reservation_id: str, counters: tuple[Counter, ...], amount: int, lease_s: float
    ) -> ReserveOutcome: ...

    async def asettle(self, reservation: Reservation, actual: int) -> bool: ...

    async def arelease(self, reservation: Reservation) -> bool: ...

    async def astatus(self, counter: Counter) -> CounterStatus: ...

    async def arenew(self, reservation: Reservation, lease_s: float) -> float | None: ...

    def pin(self, reservation_id: str, counters: tuple[Counter, ...]) -> Reservation:
        """As ``Store.pin``: no I/O, so not a coroutine."""
        ...
