"""Settles the store could not take: kept, and applied once it answers again."""

from __future__ import annotations

import logging
import threading
from collections import deque

from .._core.counters import Reservation
from .._core.errors import StoreUnavailable
from .._core.money import nanos_to_usd
from ..stores.drive import Flow, Settle

__all__ = ["UnappliedSettles", "unapplied"]

log = logging.getLogger("budgetguard")


class UnappliedSettles:
    """Charges for calls that were made (the provider billed them) whose settle
    the store did not take. They are kept and re-sent after the next settle
    that goes through; settle is idempotent, so a re-send never double-charges."""

    def __init__(self, limit: int = 100_000) -> None:
        self._items: deque[tuple[Reservation, int]] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def keep(self, reservation: Reservation, nanos: int) -> None:
        log.error(
            "budgetguard: store unavailable; settle of %s ($%s) kept to retry",
            reservation.id,
            nanos_to_usd(nanos),
        )
        with self._lock:
            self._items.append((reservation, nanos))

    def _take(self) -> list[tuple[Reservation, int]]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    def flush(self) -> Flow[None]:
        """Re-send every kept settle, in order, until one fails again."""
        if not self._items:
            return
        items = self._take()
        for n, (reservation, nanos) in enumerate(items):
            try:
                yield Settle(reservation, nanos)
            except StoreUnavailable:
                with self._lock:
                    self._items.extendleft(reversed(items[n:]))
                return

    def __len__(self) -> int:
        return len(self._items)


unapplied = UnappliedSettles()
