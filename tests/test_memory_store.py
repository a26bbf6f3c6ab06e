"""MemoryStore specifics: its memory stays bounded in a long-running process."""

from __future__ import annotations

import pytest

from budgetguard import ConfigurationError
from budgetguard.stores import Counter, MemoryStore, Reservation

MINUTE = Counter(key="tenant=acme", limit=10**12, window="minute", scope="tenant", subject="acme")
TOTAL = Counter(key="global", limit=10**12, window="total", scope="global")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def reserve(store: MemoryStore, rid: str, *counters: Counter, lease_s: float = 60) -> Reservation:
    outcome = store.reserve(rid, counters, 100, lease_s)
    assert isinstance(outcome, Reservation)
    return outcome


def test_tombstones_are_capped_oldest_first() -> None:
    store = MemoryStore(max_tombstones=10)
    reservations = [reserve(store, f"r{n}", TOTAL) for n in range(50)]
    for reservation in reservations:
        assert store.settle(reservation, 40)
    assert len(store._tombstones) == 10
    assert not store.settle(reservations[-1], 40)  # remembered: a no-op
    assert store.status(TOTAL).spent == 50 * 40


def test_finished_windows_are_dropped_after_the_grace_period() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock, grace_s=120)
    for minute in range(30):
        store.settle(reserve(store, f"m{minute}", MINUTE, TOTAL), 7)
        clock.now += 60
    # 30 minute buckets were made; those ended more than 2 minutes ago are gone
    assert len(store._buckets) <= 1 + 4
    assert store.status(TOTAL).spent == 30 * 7  # the total window is never dropped
    assert store.status(MINUTE).spent == 0


def test_a_bucket_still_held_outlives_its_grace() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock, grace_s=0)
    late = reserve(store, "late", MINUTE, lease_s=3600)
    clock.now += 600  # the minute is long over, the lease is not
    store.settle(reserve(store, "other", TOTAL), 1)  # sweeps
    assert store.release(late)  # its bucket was kept: no KeyError, nothing negative
    clock.now += 600
    store.status(TOTAL)
    assert all(bucket.held >= 0 for bucket in store._buckets.values())
    assert len(store._buckets) == 1  # only the total bucket remains


@pytest.mark.parametrize(
    ("options", "field"),
    [({"max_tombstones": 0}, "max_tombstones"), ({"grace_s": -1}, "grace_s")],
)
def test_bad_options_name_the_field(options: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{field}:"):
        MemoryStore(**options)  # type: ignore[arg-type]
