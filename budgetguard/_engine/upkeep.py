"""The upkeep of calls in flight: their leases renewed, their failed settles re-sent.

Leases. A hold is a lease (``Policy.lease_s``) so that a crashed process
frees its budget; a *live* call that outlasts its lease must not. The
``Upkeep`` thread renews the lease of every call in flight once half of it
has passed, and logs a call whose lease ran out anyway (others may then have
spent its hold). It sleeps until the next renewal is due, so calls shorter
than half their lease cost a dict insert and delete, nothing more.

Unapplied settles.
A settle fails when the store is down (``StoreUnavailable``) although the
provider already billed the call. The charge is kept here with the store it
belongs to and re-sent:

- before the next reservation on that store (``flush``), so a call admitted
  after an outage sees the spend of the calls made before it;
- every second by the upkeep thread (``_engine/upkeep.py``), which also keeps
  renewing the kept reservations' leases so their holds stay in place until
  their settle lands;
- at interpreter exit (``flush_at_exit``), within a few seconds.

Settle is idempotent by reservation id, so a re-send never double-charges.
Nothing is dropped without an error in the log naming how much was lost.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from .._core.counters import Reservation
from .._core.errors import StoreUnavailable, describe_error
from .._core.money import format_usd
from ..stores.base import AsyncStore, Store
from ..stores.drive import Flow, Settle, counts_tokens

__all__ = ["OwedSettle", "UnappliedSettles", "Upkeep", "unapplied", "upkeep"]

log = logging.getLogger("budgetguard")


@dataclass(frozen=True, slots=True)
class OwedSettle:
    """A charge the store did not take. ``loop``: the event loop an async-only store's
    connections belong to, on which the upkeep thread re-sends it."""

    reservation: Reservation
    nanos: int
    store: Store | None
    async_store: AsyncStore | None
    loop: asyncio.AbstractEventLoop | None = None
    tokens: int | None = None

    @classmethod
    def of(
        cls,
        reservation: Reservation,
        nanos: int,
        store: Store | None,
        async_store: AsyncStore | None,
        tokens: int | None = None,
    ) -> OwedSettle:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        return cls(reservation, nanos, store, async_store, loop, tokens)

    def resend(self, timeout: float) -> None:
        """Send the settle again from a thread that is not the event loop's."""
        store = self.store if self.store is not None else self.async_store
        tokens = (self.tokens,) if counts_tokens(self.reservation, store) else ()
        if self.store is not None:
            self.store.settle(self.reservation, self.nanos, *tokens)
            return
        loop = self.loop
        if self.async_store is None or loop is None or loop.is_closed():
            raise StoreUnavailable("no store to re-send this settle to from here")
        settle = self.async_store.asettle(self.reservation, self.nanos, *tokens)
        asyncio.run_coroutine_threadsafe(settle, loop).result(timeout=timeout)

    def owed_to(self, store: Store | None, async_store: AsyncStore | None) -> bool:
        return (store is not None and store is self.store) or (
            async_store is not None and async_store is self.async_store
        )


class UnappliedSettles:
    """Charges for calls that were made whose settle the store did not take."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.lost_nanos = 0
        self._items: list[OwedSettle] = []
        self._lock = threading.Lock()

    def keep(self, owed: OwedSettle, error: BaseException) -> None:
        log.error(
            "budgetguard: the store did not take the settle of %s (%s): %s; kept, "
            "re-sent until it does",
            owed.reservation.id,
            format_usd(owed.nanos),
            describe_error(error),
        )
        with self._lock:
            self._items.append(owed)
            overflow = self._items[: max(0, len(self._items) - self.limit)]
            del self._items[: len(overflow)]
        if overflow:
            self._lose(overflow, f"more than {self.limit} settles are waiting")

    def _lose(self, items: list[OwedSettle], why: str) -> None:
        nanos = sum(item.nanos for item in items)
        self.lost_nanos += nanos
        log.error(
            "budgetguard: %s; %d settles (%s) were given up and are not in the store's spend",
            why,
            len(items),
            format_usd(nanos),
        )

    def take(self, store: Store | None, async_store: AsyncStore | None) -> list[OwedSettle]:
        """Remove and return the settles owed to these stores (oldest first)."""
        with self._lock:
            mine = [item for item in self._items if item.owed_to(store, async_store)]
            if mine:
                self._items = [i for i in self._items if not i.owed_to(store, async_store)]
        return mine

    def put_back(self, items: list[OwedSettle]) -> None:
        with self._lock:
            self._items[:0] = items

    def reservations(self) -> list[OwedSettle]:
        with self._lock:
            return list(self._items)

    def flush(self, store: Store | None, async_store: AsyncStore | None) -> Flow[None]:
        """Re-send every settle owed to these stores, in order, until one fails again."""
        if not self._items:
            return
        items = self.take(store, async_store)
        for n, item in enumerate(items):
            try:
                yield Settle(item.reservation, item.nanos, item.tokens)
            except BaseException:
                self.put_back(items[n:])
                return  # a cancellation stops here too: the rest is re-sent later
            upkeep.untrack(item.reservation.id)

    def flush_now(self, deadline: float) -> None:
        """Re-send what is owed, until ``deadline`` (monotonic): to sync stores directly,
        to async-only ones on their event loop while it runs."""
        for item in self.reservations():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item.resend(timeout=left)
            except Exception:
                continue
            upkeep.untrack(item.reservation.id)
            with self._lock:
                if item in self._items:
                    self._items.remove(item)

    def flush_at_exit(self, timeout: float = 5.0) -> None:
        if not self._items:
            return
        self.flush_now(time.monotonic() + timeout)
        with self._lock:
            left, self._items = self._items, []
        if left:
            self._lose(left, "the process is exiting and the store still does not answer")

    def __len__(self) -> int:
        return len(self._items)


unapplied = UnappliedSettles()


@dataclass(slots=True)
class _Live:
    """A call in flight whose lease the upkeep thread renews."""

    reservation: Reservation
    lease_s: float
    store: Store | None
    async_store: AsyncStore | None
    loop: asyncio.AbstractEventLoop | None
    renew_at: float = field(default=0.0)


class Upkeep:
    """One daemon thread per process: renews leases of calls in flight, re-sends owed settles."""

    RETRY_S = 1.0
    """How often owed settles are re-sent, and a failed renewal retried."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._live: dict[str, _Live] = {}
        self._lost: dict[str, None] = {}
        self._wake = threading.Condition()
        self._next = float("inf")
        self._thread: threading.Thread | None = None

    def track(
        self,
        reservation: Reservation,
        lease_s: float,
        store: Store | None,
        async_store: AsyncStore | None,
    ) -> None:
        """Renew ``reservation``'s lease until ``untrack``: called when a call is admitted."""
        loop = None
        if store is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # an async-only store and no loop: nothing could renew it
        live = _Live(reservation, lease_s, store, async_store, loop, time.monotonic() + lease_s / 2)
        self._live[reservation.id] = live  # atomic; the thread copies the dict to read it
        if live.renew_at < self._next:  # sooner than the thread will wake: tell it
            with self._wake:
                if live.renew_at < self._next:
                    self._next = live.renew_at
                    self._start_or_wake()

    def untrack(self, reservation_id: str) -> bool:
        """Stop renewing; True if the lease had run out while the call was in flight."""
        self._live.pop(reservation_id, None)
        lost = reservation_id in self._lost
        if lost:
            self._lost.pop(reservation_id, None)
        return lost

    def wake_for_owed(self) -> None:
        with self._wake:
            self._next = min(self._next, time.monotonic() + self.RETRY_S)
            self._start_or_wake()

    def _start_or_wake(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="budgetguard-upkeep", daemon=True
            )
            self._thread.start()
        else:
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                delay = self._next - time.monotonic()
                if delay > 0:
                    self._wake.wait(min(delay, 3600.0))
                now = time.monotonic()
                due = [live for live in list(self._live.values()) if live.renew_at <= now]
            for live in due:
                self._renew(live)
            if unapplied:
                unapplied.flush_now(time.monotonic() + self.RETRY_S)
            with self._wake:
                pending = [live.renew_at for live in list(self._live.values())]
                if unapplied:
                    pending.append(time.monotonic() + self.RETRY_S)
                self._next = min(pending, default=float("inf"))

    def _renew(self, live: _Live) -> None:
        reservation = live.reservation
        try:
            if live.store is not None:
                expires = live.store.renew(reservation, live.lease_s)
            else:
                assert live.async_store is not None and live.loop is not None
                if live.loop.is_closed():  # its event loop is gone, and the call with it
                    self._live.pop(reservation.id, None)
                    return
                renewal = live.async_store.arenew(reservation, live.lease_s)
                future = asyncio.run_coroutine_threadsafe(renewal, live.loop)
                expires = future.result(timeout=max(live.lease_s / 2, 0.05))
        except Exception as error:
            log.debug("budgetguard: renewing %s failed (%r); retrying", reservation.id, error)
            live.renew_at = time.monotonic() + min(self.RETRY_S, live.lease_s / 4)
            return
        if expires is None:
            if self._live.pop(reservation.id, None) is not None:
                if len(self._lost) > 10_000:
                    self._lost.clear()
                self._lost[reservation.id] = None
                log.warning(
                    "budgetguard: the lease of call %s ran out while it was still in flight "
                    "(lease_s=%s): other calls may have spent its hold. Raise Policy.lease_s "
                    "above your longest call.",
                    reservation.id,
                    live.lease_s,
                )
            return
        live.renew_at = time.monotonic() + live.lease_s / 2


upkeep = Upkeep()
atexit.register(unapplied.flush_at_exit)
