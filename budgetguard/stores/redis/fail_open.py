"""``fail="open"``: bounded local budgets while Redis is down, reconciled when it returns.

Each process that cannot reach Redis may spend, per counter and window, at
most ``allowance`` (a share of the limit) on its own, and never more than
the limit minus what Redis last said was spent and held there. N processes
therefore overshoot a limit by at most N x ``allowance`` of it during an
outage, never by N limits. What was spent locally is written into Redis as
soon as it answers again (settle is idempotent by reservation id, so a
charge lands once), before any new reservation, and the local counts start
afresh once no local hold is left.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any

from ..._core.counters import Counter, Denial, Reservation, ReserveOutcome
from ..._core.errors import ConfigurationError, StoreUnavailable
from ..._core.money import format_usd
from ..._core.windows import SpanCache
from ..memory import MemoryStore

__all__ = ["FailOpen", "LocalReservation"]

log = logging.getLogger("budgetguard.stores.redis")

_MAX_KNOWN = 100_000


@dataclass(frozen=True, slots=True)
class LocalReservation(Reservation):
    """Granted by the in-process fallback while Redis was down (``fail="open"``).

    Its hold lives in the store's local ``MemoryStore``, so it settles there:
    the type is the mark, so nothing needs to be remembered per id.
    """


class FailOpen:
    """The local side of a Redis store: last known spend, local budgets, what to reconcile."""

    def __init__(self, allowance: float) -> None:
        if not 0 <= allowance <= 1:
            raise ConfigurationError(
                f"open_allowance: a share of each limit between 0 and 1, got {allowance!r}"
            )
        self.allowance = allowance
        self.local = MemoryStore()
        self.local_calls = 0
        self._lock = threading.Lock()
        self._known: dict[tuple[str, int], int] = {}
        self._outstanding = 0
        self._unreconciled: list[tuple[LocalReservation, int, int]] = []
        self._spans = SpanCache()

    # -- what Redis said ----------------------------------------------------------
    def learn(self, counter: Counter, start: int, total: int) -> None:
        """Redis answered: ``counter``'s bucket at ``start`` holds ``total`` (spent + held)."""
        if len(self._known) >= _MAX_KNOWN:
            self._known.clear()
        self._known[counter.key, start] = total

    # -- while it is down ---------------------------------------------------------
    def _bounded(self, counter: Counter, now: float) -> Counter:
        if counter.soft:  # it refuses nothing: bounding it would only warn wrongly
            return counter
        start = self._spans.span(counter.window, now, counter.tz)[0]
        known = self._known.get((counter.key, start), 0)
        share = int(counter.limit * self.allowance)
        return replace(counter, limit=max(0, min(counter.limit - known, share)))

    def reserve(
        self,
        reservation_id: str,
        counters: tuple[Counter, ...],
        amount: int,
        lease_s: float,
        tokens: int = 0,
    ) -> ReserveOutcome:
        now = self.local.clock()
        bounded = tuple(self._bounded(counter, now) for counter in counters)
        outcome = self.local.reserve(reservation_id, bounded, amount, lease_s, tokens)
        if isinstance(outcome, Denial):
            return outcome
        with self._lock:
            self.local_calls += 1
            self._outstanding += 1
        buckets = tuple((c, start) for c, (_, start) in zip(counters, outcome.buckets, strict=True))
        soft = {counter.key for counter in outcome.over_soft}
        over_soft = tuple(counter for counter in counters if counter.key in soft)
        return LocalReservation(outcome.id, amount, buckets, outcome.expires_at, tokens, over_soft)

    def settle(self, reservation: LocalReservation, actual: int, tokens: int | None = None) -> bool:
        used = reservation.tokens if tokens is None else tokens
        applied = self.local.settle(reservation, actual, used)
        if applied:
            with self._lock:
                self._outstanding -= 1
                self._unreconciled.append((reservation, actual, used))
        return applied

    def release(self, reservation: LocalReservation) -> bool:
        released = self.local.release(reservation)
        if released:
            with self._lock:
                self._outstanding -= 1
        return released

    # -- when it is back ----------------------------------------------------------
    @property
    def pending(self) -> bool:
        return bool(self._unreconciled)

    def reconcile_plan(
        self, settle_plan: Callable[[Reservation, int, int], Generator[Any, Any, bool]]
    ) -> Generator[Any, Any, None]:
        """Charge into Redis what was spent locally; stops (keeping the rest) if Redis
        fails again."""
        with self._lock:
            items, self._unreconciled = self._unreconciled, []
        for n, (reservation, actual, tokens) in enumerate(items):
            try:
                yield from settle_plan(reservation, actual, tokens)
            except StoreUnavailable:
                with self._lock:
                    self._unreconciled[:0] = items[n:]
                raise
        if items:
            log.warning(
                "budgetguard: Redis answers again; %d calls (%s) spent locally during the "
                "outage are now counted in Redis",
                len(items),
                format_usd(sum(actual for _, actual, _ in items)),
            )
        with self._lock:
            if not self._outstanding and not self._unreconciled:
                self.local = MemoryStore()  # the outage is over: local counts start afresh
