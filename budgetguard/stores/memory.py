"""The embedded default store: one process, no server, same semantics as Redis."""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from .._core.counters import share
from .._core.errors import ConfigurationError
from .._core.limitbook import EMPTY_BOOK, LimitBook, LimitId
from .._core.money import check_nanos
from .._core.policy import Limit
from .._core.windows import SpanCache, window_span
from .base import Counter, CounterStatus, Denial, Reservation, ReserveOutcome
from .wakeups import Wakeups

__all__ = ["MemoryStore"]

_SWEEP_PER_CALL = 64
"""Expired leases freed per operation: bounded work, like the Redis scripts."""
_SWEEP_BEFORE_ANSWER = 10_240
"""Before a denial or a status, every due lease is swept (up to this many): neither
ever counts a hold whose lease is over."""


@dataclass(slots=True)
class _Bucket:
    spent: int = 0
    held: int = 0
    overrun: int = 0


@dataclass(slots=True)
class _Hold:
    buckets: tuple[tuple[str, int], ...]
    amount: int
    expires_at: float
    amounts: tuple[int, ...] | None = None
    """What it holds on each bucket (nano-USD, tokens or 1 request, by counter unit);
    None when every bucket counts dollars and holds ``amount`` (the common case, kept
    fast)."""

    def held(self) -> tuple[int, ...]:
        return self.amounts if self.amounts is not None else (self.amount,) * len(self.buckets)


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

    Memory stays bounded in a long-running process: a finished window's
    counter is dropped ``grace_s`` after its end (once nothing holds on it),
    and at most ``max_tombstones`` settled reservations are remembered (for
    ``tombstone_s``, oldest forgotten first). A duplicate settle of a
    forgotten reservation would charge again; the guard never sends one.
    """

    supports_units: ClassVar[bool] = True
    """Holds token, request and soft counters (``Counter.unit`` / ``soft`` / ``warn_at``)."""
    clock: Callable[[], float] = time.time
    tombstone_s: float = 86_400.0
    max_tombstones: int = 200_000
    grace_s: float = 86_400.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _buckets: dict[tuple[str, int], _Bucket] = field(default_factory=dict, repr=False)
    _holds: dict[str, _Hold] = field(default_factory=dict, repr=False)
    _leases: list[tuple[float, str]] = field(default_factory=list, repr=False)
    _tombstones: dict[str, _Tombstone] = field(default_factory=dict, repr=False)
    _tombstone_order: deque[str] = field(default_factory=deque, repr=False)
    _spans: SpanCache = field(default_factory=SpanCache, repr=False)
    _bucket_ends: list[tuple[float, tuple[str, int]]] = field(default_factory=list, repr=False)
    _wakeups: Wakeups = field(default_factory=Wakeups, repr=False)
    _freed: list[str] = field(default_factory=list, repr=False)  # counter keys, lock held
    _book: LimitBook = field(default=EMPTY_BOOK, repr=False)
    _book_writes: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if type(self.max_tombstones) is not int or self.max_tombstones < 1:
            raise ConfigurationError(
                f"max_tombstones: must be an int >= 1, got {self.max_tombstones!r}"
            )
        for name in ("tombstone_s", "grace_s"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name}: must be >= 0, got {getattr(self, name)!r}")

    # -- sync -------------------------------------------------------------
    def reserve(
        self,
        reservation_id: str,
        counters: tuple[Counter, ...],
        amount: int,
        lease_s: float,
        tokens: int = 0,
    ) -> ReserveOutcome:
        outcome = self._reserve(reservation_id, counters, amount, lease_s, tokens)
        if self._freed:  # leases this reserve swept: whoever waits on them may fit now
            self._wake()
        return outcome

    def _reserve(
        self,
        reservation_id: str,
        counters: tuple[Counter, ...],
        amount: int,
        lease_s: float,
        tokens: int,
    ) -> ReserveOutcome:
        check_nanos(amount, field="amount")
        if tokens:
            check_nanos(tokens, field="tokens", unit="tokens")
        for counter in counters:
            check_nanos(counter.limit, field="limit")
        with self._lock:
            now = self.clock()
            self._sweep(now)
            if reservation_id in self._holds or reservation_id in self._tombstones:
                raise ConfigurationError(f"reservation_id {reservation_id!r} was already used")
            checked = self._check(counters, amount, tokens, now)
            if isinstance(checked, Denial) and self._leases and self._leases[0][0] <= now:
                # Expired holds must not refuse anyone: sweep every due lease, look again.
                self._sweep(now, _SWEEP_BEFORE_ANSWER)
                checked = self._check(counters, amount, tokens, now)
            if isinstance(checked, Denial):
                return checked
            pinned, keys, found, amounts, over_soft = checked
            buckets = self._buckets
            span = self._spans.span
            shares = amounts if amounts is not None else (amount,) * len(keys)
            for (counter, _), key, seen, held in zip(pinned, keys, found, shares, strict=True):
                # Looked up again when it was missing: a key listed twice holds twice.
                bucket = seen if seen is not None else buckets.get(key)
                if bucket is None:
                    buckets[key] = _Bucket(0, held)
                    end = span(counter.window, now, counter.tz)[1]
                    if end is not None:
                        heapq.heappush(self._bucket_ends, (end + self.grace_s, key))
                else:
                    bucket.held += held
            expires_at = now + lease_s
            self._holds[reservation_id] = _Hold(
                tuple(keys), amount, expires_at, None if amounts is None else tuple(amounts)
            )
            heapq.heappush(self._leases, (expires_at, reservation_id))
            return Reservation(
                reservation_id,
                amount,
                tuple(pinned),
                expires_at,
                tokens,
                tuple(over_soft) if over_soft else (),
            )

    def _check(
        self, counters: tuple[Counter, ...], amount: int, tokens: int, now: float
    ) -> (
        Denial
        | tuple[
            list[tuple[Counter, int]],
            list[tuple[str, int]],
            list[_Bucket | None],
            list[int] | None,
            list[Counter],
        ]
    ):
        """The first hard counter that cannot take its share (one that never could, even
        with nothing held, before one refused only by holds in flight), else each
        counter's bucket, its share (None: all dollars, all ``amount``), and the soft
        counters the call takes past their limit."""
        buckets = self._buckets
        span = self._spans.span
        pinned: list[tuple[Counter, int]] = []
        keys: list[tuple[str, int]] = []
        found: list[_Bucket | None] = []
        amounts: list[int] = []
        dollars_only = True
        over_soft: list[Counter] = []
        contended: Denial | None = None
        for counter in counters:
            start, end = span(counter.window, now, counter.tz)
            key = (counter.key, start)
            bucket = buckets.get(key)
            if counter.unit == "usd":
                held = amount
            else:
                held = share(counter, amount, tokens)
                dollars_only = False
            if bucket is None:
                spent = holding = 0
            else:
                spent, holding = bucket.spent, bucket.held
            total = spent + holding + held
            if total > counter.limit:
                if counter.soft:
                    over_soft.append(counter)
                else:
                    denial = Denial(counter, spent, holding, held, end, now)
                    if spent + held > counter.limit:
                        return denial
                    contended = contended or denial
            elif counter.warn_at is not None and total > counter.warn_at:
                over_soft.append(counter)
            pinned.append((counter, start))
            keys.append(key)
            found.append(bucket)
            amounts.append(held)
        if contended is not None:
            return contended
        return pinned, keys, found, None if dollars_only else amounts, over_soft

    def settle(self, reservation: Reservation, actual: int, tokens: int | None = None) -> bool:
        """Charge ``actual`` nano-USD (and ``tokens``; None: the tokens held)."""
        check_nanos(actual, field="actual")
        used = reservation.tokens if tokens is None else tokens
        if used:
            check_nanos(used, field="tokens", unit="tokens")
        with self._lock:
            now = self.clock()
            self._sweep(now)
            hold = self._holds.pop(reservation.id, None)
            if hold is not None:
                if self._wakeups:
                    self._freed.extend(key for key, _ in hold.buckets)
                self._charge_held(hold, reservation, actual, used)
            else:
                tomb = self._tombstones.get(reservation.id)
                if tomb is not None and not tomb.expired:
                    return False
                # Lease expired (or its tombstone is long gone): the hold was
                # already freed, but the money was spent - charge it once.
                buckets = self._buckets
                for counter, start in reservation.buckets:
                    charge = share(counter, actual, used)
                    held_on = share(counter, reservation.amount, reservation.tokens)
                    overrun = max(0, charge - held_on)
                    bucket = buckets.get((counter.key, start))
                    if bucket is None:
                        buckets[counter.key, start] = _Bucket(charge, 0, overrun)
                        end = window_span(counter.window, start, counter.tz)[1]
                        if end is not None:
                            heapq.heappush(
                                self._bucket_ends, (end + self.grace_s, (counter.key, start))
                            )
                    else:
                        bucket.spent += charge
                        bucket.overrun += overrun
            self._bury(reservation.id, now, expired=False)
        self._wake()
        return True

    def _charge_held(self, hold: _Hold, reservation: Reservation, actual: int, used: int) -> None:
        """Replace a live hold by the charge on each of its buckets (lock held)."""
        buckets = self._buckets
        if hold.amounts is None:  # dollars only: every bucket held the amount
            held = hold.amount
            overrun = actual - held if actual > held else 0
            for key in hold.buckets:
                bucket = buckets.get(key)
                if bucket is None:
                    buckets[key] = _Bucket(actual, -held, overrun)
                else:
                    bucket.held -= held
                    bucket.spent += actual
                    bucket.overrun += overrun
        else:
            for key, held, (counter, _) in zip(
                hold.buckets, hold.amounts, reservation.buckets, strict=True
            ):
                charge = share(counter, actual, used)
                overrun = charge - held if charge > held else 0
                bucket = buckets.get(key)
                if bucket is None:
                    buckets[key] = _Bucket(charge, -held, overrun)
                else:
                    bucket.held -= held
                    bucket.spent += charge
                    bucket.overrun += overrun

    def release(self, reservation: Reservation) -> bool:
        with self._lock:
            now = self.clock()
            self._sweep(now)
            hold = self._holds.pop(reservation.id, None)
            if hold is None:
                return False
            if self._wakeups:
                self._freed.extend(key for key, _ in hold.buckets)
            for key, held in zip(hold.buckets, hold.held(), strict=True):
                self._buckets[key].held -= held
            self._bury(reservation.id, now, expired=False)
        self._wake()
        return True

    def wait_freed(self, counter: Counter, timeout: float) -> bool:
        """Wait until a hold on ``counter`` is settled, released or expires (True), or
        ``timeout`` seconds pass (False)."""
        return self._wakeups.wait(counter.key, timeout)

    def _wake(self) -> None:
        if self._freed:
            with self._lock:
                freed, self._freed = self._freed, []
            self._wakeups.notify(set(freed))

    def status(self, counter: Counter) -> CounterStatus:
        with self._lock:
            now = self.clock()
            self._sweep(now, _SWEEP_BEFORE_ANSWER)
            start, end = self._spans.span(counter.window, now, counter.tz)
            bucket = self._buckets.get((counter.key, start)) or _Bucket()
            return CounterStatus(counter, bucket.spent, bucket.held, start, end, bucket.overrun)

    def renew(self, reservation: Reservation, lease_s: float) -> float | None:
        """Extend a live hold's lease to ``lease_s`` from now: its new end, or None when
        the hold is gone (settled, released, or its lease already ran out)."""
        with self._lock:
            now = self.clock()
            self._sweep(now)
            hold = self._holds.get(reservation.id)
            if hold is None:
                return None
            hold.expires_at = now + lease_s
            heapq.heappush(self._leases, (hold.expires_at, reservation.id))
            return hold.expires_at

    def pin(self, reservation_id: str, counters: tuple[Counter, ...]) -> Reservation:
        with self._lock:
            now = self.clock()
            span = self._spans.span
            pinned = tuple((c, span(c.window, now, c.tz)[0]) for c in counters)
        return Reservation(reservation_id, 0, pinned, now)

    # -- limits held in the store (bg.set_limit, bg.set_plan) -------------------
    def limit_book(self) -> LimitBook:
        """The stored limits and plan assignments: always current in one process."""
        return self._book

    def cached_book(self) -> LimitBook:
        """``limit_book`` without I/O (there is none here): always fresh."""
        return self._book

    def put_limit(self, limit: Limit) -> None:
        with self._lock:
            self._book_writes += 1
            self._book = self._book.with_limit(limit, str(self._book_writes))

    def drop_limit(self, ident: LimitId) -> bool:
        with self._lock:
            self._book_writes += 1
            self._book, dropped = self._book.without_limit(ident, str(self._book_writes))
            return dropped

    def put_plan(self, subject: tuple[str, str], plan: str | None) -> None:
        with self._lock:
            self._book_writes += 1
            self._book = self._book.with_plan(subject, plan, str(self._book_writes))

    async def alimit_book(self) -> LimitBook:
        return self._book

    async def aput_limit(self, limit: Limit) -> None:
        self.put_limit(limit)

    async def adrop_limit(self, ident: LimitId) -> bool:
        return self.drop_limit(ident)

    async def aput_plan(self, subject: tuple[str, str], plan: str | None) -> None:
        self.put_plan(subject, plan)

    # -- async: the same critical sections, never awaited inside ------------
    async def areserve(
        self,
        reservation_id: str,
        counters: tuple[Counter, ...],
        amount: int,
        lease_s: float,
        tokens: int = 0,
    ) -> ReserveOutcome:
        return self.reserve(reservation_id, counters, amount, lease_s, tokens)

    async def asettle(
        self, reservation: Reservation, actual: int, tokens: int | None = None
    ) -> bool:
        return self.settle(reservation, actual, tokens)

    async def arelease(self, reservation: Reservation) -> bool:
        return self.release(reservation)

    async def astatus(self, counter: Counter) -> CounterStatus:
        return self.status(counter)

    async def arenew(self, reservation: Reservation, lease_s: float) -> float | None:
        return self.renew(reservation, lease_s)

    async def await_freed(self, counter: Counter, timeout: float) -> bool:
        return await self._wakeups.await_(counter.key, timeout)

    # -- internals (lock held) ---------------------------------------------
    def _sweep(self, now: float, batch: int = _SWEEP_PER_CALL) -> None:
        leases, order, ends = self._leases, self._tombstone_order, self._bucket_ends
        if (not leases or leases[0][0] > now) and (not ends or ends[0][0] > now):
            # the common case: nothing due, return early
            if not order:
                return
            first = self._tombstones.get(order[0])
            if first is not None and first.until > now:
                return
        for _ in range(batch):
            if not leases or leases[0][0] > now:
                break
            _, reservation_id = heapq.heappop(leases)
            hold = self._holds.get(reservation_id)
            if hold is None or hold.expires_at > now:  # settled, released, or renewed
                continue
            del self._holds[reservation_id]
            if self._wakeups:
                self._freed.extend(key for key, _ in hold.buckets)
            for key, held in zip(hold.buckets, hold.held(), strict=True):
                self._buckets[key].held -= held
            self._bury(reservation_id, now, expired=True)
        for _ in range(_SWEEP_PER_CALL):
            if not order:
                break
            tomb = self._tombstones.get(order[0])
            if tomb is not None and tomb.until > now:
                break
            self._tombstones.pop(order.popleft(), None)
        for _ in range(_SWEEP_PER_CALL):
            if not ends or ends[0][0] > now:
                break
            _, key = heapq.heappop(ends)
            bucket = self._buckets.get(key)
            if bucket is not None and bucket.held:  # a late lease still holds on it
                heapq.heappush(ends, (now + self.grace_s, key))
            else:
                self._buckets.pop(key, None)

    def _bury(self, reservation_id: str, now: float, *, expired: bool) -> None:
        tombstones, order = self._tombstones, self._tombstone_order
        if reservation_id not in tombstones:
            order.append(reservation_id)
            if len(tombstones) >= self.max_tombstones:
                tombstones.pop(order.popleft(), None)
        tombstones[reservation_id] = _Tombstone(expired, now + self.tombstone_s)
