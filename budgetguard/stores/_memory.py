"""The embedded default store: one process, no server, same semantics as Redis."""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .._errors import ConfigurationError
from .._windows import window_span
from ._base import Counter, CounterStatus, Denial, Reservation, ReserveOutcome

__all__ = ["MemoryStore"]

_SWEEP_PER_CALL = 64
"""Expired leases freed per operation: bounded work, like the Redis scripts."""


@dataclass(slots=True)
class _Bucket:
    spent: int = 0
    held: int = 0


@dataclass(slots=True)
class _Hold:
    buckets: tuple[tuple[str, int], ...]
    amount: int
    expires_at: float


@dataclass(slots=True)
class _Tombstone:
    expired: bool  # lease ran out before settle: the hold is gone, the charge is still owed
    until: float


@dataclass
class MemoryStore:
    """Thread-safe, asyncio-safe in-process store.

    Every operation takes one lock for a few microseconds and never awaits
    while holding it, so the async methods are the sync ones: safe on an event
    loop and across threads at once. ``clock`` is injectable for tests of
    leases and windows.
    """

    clock: Callable[[], float] = time.time
    tombstone_s: float = 86_400.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _buckets: dict[tuple[str, int], _Bucket] = field(default_factory=dict, repr=False)
    _holds: dict[str, _Hold] = field(default_factory=dict, repr=False)
    _leases: list[tuple[float, str]] = field(default_factory=list, repr=False)
    _tombstones: dict[str, _Tombstone] = field(default_factory=dict, repr=False)
    _tombstone_order: deque[str] = field(default_factory=deque, repr=False)

    # -- sync -------------------------------------------------------------
    def reserve(
        self, reservation_id: str, counters: tuple[Counter, ...], amount: int, lease_s: float
    ) -> ReserveOutcome:
        _check_amount("amount", amount)
        with self._lock:
            now = self.clock()
            self._sweep(now)
            if reservation_id in self._holds or reservation_id in self._tombstones:
                raise ConfigurationError(f"reservation_id {reservation_id!r} was already used")
            pinned: list[tuple[Counter, int]] = []
            for counter in counters:
                start, end = window_span(counter.window, now, counter.tz)
                bucket = self._buckets.get((counter.key, start))
                spent, held = (bucket.spent, bucket.held) if bucket else (0, 0)
                if spent + held + amount > counter.limit:
                    return Denial(counter, spent, held, amount, end, now)
                pinned.append((counter, start))
            for counter, start in pinned:
                self._buckets.setdefault((counter.key, start), _Bucket()).held += amount
            expires_at = now + lease_s
            self._holds[reservation_id] = _Hold(
                tuple((c.key, start) for c, start in pinned), amount, expires_at
            )
            heapq.heappush(self._leases, (expires_at, reservation_id))
            return Reservation(reservation_id, amount, tuple(pinned), expires_at)

    def settle(self, reservation: Reservation, actual: int) -> bool:
        _check_amount("actual", actual)
        with self._lock:
            now = self.clock()
            self._sweep(now)
            hold = self._holds.pop(reservation.id, None)
            if hold is not None:
                for key in hold.buckets:
                    bucket = self._buckets.setdefault(key, _Bucket())
                    bucket.held -= hold.amount
                    bucket.spent += actual
            else:
                tomb = self._tombstones.get(reservation.id)
                if tomb is not None and not tomb.expired:
                    return False
                # Lease expired (or its tombstone is long gone): the hold was
                # already freed, but the money was spent - charge it once.
                for counter, start in reservation.buckets:
                    self._buckets.setdefault((counter.key, start), _Bucket()).spent += actual
            self._bury(reservation.id, now, expired=False)
            return True

    def release(self, reservation: Reservation) -> bool:
        with self._lock:
            now = self.clock()
            self._sweep(now)
            hold = self._holds.pop(reservation.id, None)
            if hold is None:
                return False
            for key in hold.buckets:
                self._buckets[key].held -= hold.amount
            self._bury(reservation.id, now, expired=False)
            return True

    def status(self, counter: Counter) -> CounterStatus:
        with self._lock:
            now = self.clock()
            self._sweep(now)
            start, end = window_span(counter.window, now, counter.tz)
            bucket = self._buckets.get((counter.key, start)) or _Bucket()
            return CounterStatus(counter, bucket.spent, bucket.held, start, end)

    # -- async: the same critical sections, never awaited inside ------------
    async def areserve(
        self, reservation_id: str, counters: tuple[Counter, ...], amount: int, lease_s: float
    ) -> ReserveOutcome:
        return self.reserve(reservation_id, counters, amount, lease_s)

    async def asettle(self, reservation: Reservation, actual: int) -> bool:
        return self.settle(reservation, actual)

    async def arelease(self, reservation: Reservation) -> bool:
        return self.release(reservation)

    async def astatus(self, counter: Counter) -> CounterStatus:
        return self.status(counter)

    # -- internals (lock held) ---------------------------------------------
    def _sweep(self, now: float) -> None:
        leases = self._leases
        for _ in range(_SWEEP_PER_CALL):
            if not leases or leases[0][0] > now:
                break
            _, reservation_id = heapq.heappop(leases)
            hold = self._holds.pop(reservation_id, None)
            if hold is None:  # settled or released in time
                continue
            for key in hold.buckets:
                self._buckets[key].held -= hold.amount
            self._bury(reservation_id, now, expired=True)
        order = self._tombstone_order
        for _ in range(_SWEEP_PER_CALL):
            if not order:
                break
            tomb = self._tombstones.get(order[0])
            if tomb is not None and tomb.until > now:
                break
            self._tombstones.pop(order.popleft(), None)

    def _bury(self, reservation_id: str, now: float, *, expired: bool) -> None:
        if reservation_id not in self._tombstones:
            self._tombstone_order.append(reservation_id)
        self._tombstones[reservation_id] = _Tombstone(expired, now + self.tombstone_s)


def _check_amount(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigurationError(f"{name}: expected a non-negative int of nano-USD, got {value!r}")
