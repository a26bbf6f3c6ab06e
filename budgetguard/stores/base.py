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
other before changing anything (``_core.money.check_nanos``). A counter counts
dollars, tokens or requests (``Counter.unit``): a call holds its worst-case cost
on the first, its worst-case ``tokens`` on the second and 1 on the third
(``_core.counters.share``), and settles its cost, its tokens and 1. A soft
counter (``Counter.soft``) is held on and charged like any other but never
refuses: the reservation lists it in ``over_soft`` when the call takes it past
its limit - as it does a hard counter taken past its ``warn_at`` (a soft limit
beside the hard one). A store that handles units and soft counters says
``supports_units = True``; one written before them (``reserve`` without
``tokens=``) keeps serving dollar limits, and the others are refused before they
reach it.

A store may also hold limits (``StoredLimits``: ``bg.set_limit``, ``bg.set_plan``):
``limit_book`` returns them, at most ``LIMITS_STALE_S`` old, so a limit set by one
process binds every other one's reservations within that bound.

Sync and async shells call differently named methods (``reserve`` /
``areserve``), so one object may serve both, as ``MemoryStore`` does.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .._core.counters import Counter, CounterStatus, Denial, Reservation, ReserveOutcome
from .._core.limitbook import LimitBook, LimitId
from .._core.policy import Limit

__all__ = [
    "LIMITS_STALE_S",
    "AsyncStore",
    "AsyncStoredLimits",
    "Counter",
    "CounterStatus",
    "Denial",
    "Reservation",
    "ReserveOutcome",
    "Store",
    "StoredLimits",
]

LIMITS_STALE_S = 1.0
"""How old the stored limits a reservation is planned with may be, at most."""


@runtime_checkable
class Store(Protocol):
    def reserve(
        self,
        reservation_id: str,
        counters: tuple[Counter, ...],
        amount: int,
        lease_s: float,
        tokens: int = 0,
    ) -> ReserveOutcome: ...

    def settle(self, reservation: Reservation, actual: int, tokens: int | None = None) -> bool:
        """Charge ``actual`` (and ``tokens``; None: the tokens held); True if this call
        applied it, False if it was already settled."""
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
        self,
        reservation_id: str,
        counters: tuple[Counter, ...],
        amount: int,
        lease_s: float,
        tokens: int = 0,
    ) -> ReserveOutcome: ...

    async def asettle(
        self, reservation: Reservation, actual: int, tokens: int | None = None
    ) -> bool: ...

    async def arelease(self, reservation: Reservation) -> bool: ...

    async def astatus(self, counter: Counter) -> CounterStatus: ...

    async def arenew(self, reservation: Reservation, lease_s: float) -> float | None: ...

    def pin(self, reservation_id: str, counters: tuple[Counter, ...]) -> Reservation:
        """As ``Store.pin``: no I/O, so not a coroutine."""
        ...


@runtime_checkable
class StoredLimits(Protocol):
    """A store that holds limits and plan assignments for every process it serves."""

    def limit_book(self) -> LimitBook:
        """The stored limits, read at most ``LIMITS_STALE_S`` ago."""
        ...

    def put_limit(self, limit: Limit) -> None:
        """Store ``limit``, replacing any with the same scope, key and window."""
        ...

    def drop_limit(self, ident: LimitId) -> bool:
        """Remove the limit of that (scope, key, window); False if there was none."""
        ...

    def put_plan(self, subject: tuple[str, str], plan: str | None) -> None:
        """Put ``("tenant", "acme")`` on ``plan`` (None: off any plan)."""
        ...


@runtime_checkable
class AsyncStoredLimits(Protocol):
    async def alimit_book(self) -> LimitBook: ...

    async def aput_limit(self, limit: Limit) -> None: ...

    async def adrop_limit(self, ident: LimitId) -> bool: ...

    async def aput_plan(self, subject: tuple[str, str], plan: str | None) -> None: ...
