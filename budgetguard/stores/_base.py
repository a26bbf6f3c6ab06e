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

Sync and async shells call differently named methods (``reserve`` /
``areserve``), so one object may serve both, as ``MemoryStore`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .._windows import Window

__all__ = [
    "AsyncStore",
    "Counter",
    "CounterStatus",
    "Denial",
    "Reservation",
    "ReserveOutcome",
    "Store",
]


@dataclass(frozen=True, slots=True)
class Counter:
    """One limit as it applies to one call: e.g. tenant "acme", $100 a month.

    ``key`` identifies the counter across processes (without the window
    bucket, which the store adds). ``tag`` groups counters that must live in
    one Redis Cluster slot. ``scope`` and ``subject`` are for humans and errors.
    """

    key: str
    limit: int
    window: Window
    scope: str
    subject: str = ""
    tag: str = "global"
    tz: str = "UTC"


@dataclass(frozen=True, slots=True)
class Reservation:
    """A granted hold. ``buckets`` pins each counter to the window bucket
    (its start, epoch seconds) the hold was taken in, so a late settle still
    charges the bucket the call was admitted to."""

    id: str
    amount: int
    buckets: tuple[tuple[Counter, int], ...]
    expires_at: float


@dataclass(frozen=True, slots=True)
class Denial:
    """The first counter that could not take ``requested`` on top of spent + held."""

    counter: Counter
    spent: int
    held: int
    requested: int
    resets_at: int | None
    now: float


ReserveOutcome = Reservation | Denial


@dataclass(frozen=True, slots=True)
class CounterStatus:
    counter: Counter
    spent: int
    held: int
    window_start: int
    resets_at: int | None

    @property
    def remaining(self) -> int:
        return max(0, self.counter.limit - self.spent - self.held)


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

    def pin(self, reservation_id: str, counters: tuple[Counter, ...]) -> Reservation:
        """As ``Store.pin``: no I/O, so not a coroutine."""
        ...
