"""The store contract (budgetguard/stores/_base.py), proven on every backend.

Each test is written once against ``Backend``, an async facade over
MemoryStore (with a controllable clock), RedisStore and AsyncRedisStore on a
real Redis, so every backend answers the very same questions.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from budgetguard._core.errors import ConfigurationError
from budgetguard._core.money import MAX_NANOS
from budgetguard._core.windows import window_span
from budgetguard.stores import (
    AsyncRedisStore,
    Counter,
    CounterStatus,
    Denial,
    MemoryStore,
    RedisStore,
    Reservation,
    ReserveOutcome,
)

LEASE = 0.2  # seconds; Redis backends really wait for it


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """One store behind a uniform async API; ``wait`` lets time pass (fake or real)."""

    name: str
    store: Any
    wait: Callable[[float], Any]
    is_async: bool = False

    async def _do(self, method: str, *args: Any) -> Any:
        if self.is_async:
            return await getattr(self.store, "a" + method)(*args)
        return getattr(self.store, method)(*args)

    async def reserve(
        self, counters: tuple[Counter, ...], amount: int, lease_s: float = 60.0, rid: str = ""
    ) -> ReserveOutcome:
        result: ReserveOutcome = await self._do(
            "reserve", rid or uuid.uuid4().hex, counters, amount, lease_s
        )
        return result

    async def granted(self, counters: tuple[Counter, ...], amount: int, **kw: Any) -> Reservation:
        outcome = await self.reserve(counters, amount, **kw)
        assert isinstance(outcome, Reservation), outcome
        return outcome

    async def settle(self, reservation: Reservation, actual: int) -> bool:
        return bool(await self._do("settle", reservation, actual))

    async def release(self, reservation: Reservation) -> bool:
        return bool(await self._do("release", reservation))

    async def status(self, counter: Counter) -> CounterStatus:
        result: CounterStatus = await self._do("status", counter)
        return result

    async def renew(self, reservation: Reservation, lease_s: float) -> float | None:
        result: float | None = await self._do("renew", reservation, lease_s)
        return result


@pytest.fixture(params=["memory", "redis", "async-redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.now += seconds

        yield Backend("memory", MemoryStore(clock=clock), advance)
        return
    client = request.getfixturevalue("redis_client")  # flushed DB, before and after
    url = request.getfixturevalue("redis_url")
    prefix = f"contract-{uuid.uuid4().hex[:8]}"
    if request.param == "redis":
        store = RedisStore(client, prefix=prefix)
        yield Backend("redis", store, asyncio.sleep)
        return
    async_store = AsyncRedisStore(url, prefix=prefix)
    try:
        yield Backend("async-redis", async_store, asyncio.sleep, is_async=True)
    finally:
        await async_store.aclose()


def counter(key: str = "k", limit: int = 1_000, window: str = "day", tag: str = "t") -> Counter:
    return Counter(key=key, limit=limit, window=window, scope="tenant", subject=key, tag=tag)  # type: ignore[arg-type]


async def test_reserve_holds_on_every_counter(backend: Backend) -> None:
    a, b = counter("a"), counter("b", window="month")
    reservation = await backend.granted((a, b), 300)
    assert reservation.amount == 300
    assert [c for c, _ in reservation.buckets] == [a, b]
    for c in (a, b):
        status = await backend.status(c)
        assert (status.spent, status.held, status.remaining) == (0, 300, 700)


async def test_all_or_nothing_across_counters(backend: Backend) -> None:
    roomy, tight = counter("roomy", 1_000), counter("tight", 100)
    denial = await backend.reserve((roomy, tight), 150)
    assert isinstance(denial, Denial)
    assert denial.counter == tight
    assert (await backend.status(roomy)).held == 0  # nothing held where it would have fit


async def test_all_or_nothing_across_tags(backend: Backend) -> None:
    """Counters of different tags (Redis: one script per tag) still all-or-nothing."""
    first, second = counter("first", 1_000, tag="t1"), counter("second", 100, tag="t2")
    denial = await backend.reserve((first, second), 150)
    assert isinstance(denial, Denial) and denial.counter == second
    assert (await backend.status(first)).held == 0  # the first tag's hold was rolled back
    reservation = await backend.granted((first, second), 100)
    assert [c for c, _ in reservation.buckets] == [first, second]
    assert await backend.settle(reservation, 40)
    assert [(await backend.status(c)).spent for c in (first, second)] == [40, 40]


async def test_denial_reports_counter_spent_held_and_reset(backend: Backend) -> None:
    daily, total = counter("daily", 1_000), counter("total", 10_000, window="total")
    done = await backend.granted((daily, total), 400)
    await backend.settle(done, 250)
    await backend.granted((daily, total), 500)  # in flight
    denial = await backend.reserve((total, daily), 300)
    assert isinstance(denial, Denial)
    assert denial.counter == daily
    assert (denial.spent, denial.held, denial.requested) == (250, 500, 300)
    assert denial.resets_at == window_span("day", denial.now)[1]
    total_denial = await backend.reserve((counter("total", 100, window="total"),), 1_000)
    assert isinstance(total_denial, Denial) and total_denial.resets_at is None


async def test_exact_fit_is_granted(backend: Backend) -> None:
    c = counter(limit=1_000)
    await backend.granted((c,), 600)
    await backend.granted((c,), 400)
    assert isinstance(await backend.reserve((c,), 1), Denial)


async def test_settle_replaces_the_hold_by_the_actual_cost(backend: Backend) -> None:
    c = counter()
    reservation = await backend.granted((c,), 500)
    assert await backend.settle(reservation, 120)
    status = await backend.status(c)
    assert (status.spent, status.held) == (120, 0)


async def test_settle_twice_is_a_no_op(backend: Backend) -> None:
    c = counter()
    reservation = await backend.granted((c,), 500)
    assert await backend.settle(reservation, 120) is True
    assert await backend.settle(reservation, 480) is False
    status = await backend.status(c)
    assert (status.spent, status.held) == (120, 0)


async def test_a_pinned_reservation_charges_after_the_fact_once(backend: Backend) -> None:
    c, other = counter("a", limit=100), counter("b")
    pinned = backend.store.pin(uuid.uuid4().hex, (c, other))  # no I/O, holds nothing
    assert pinned.amount == 0 and [p[0] for p in pinned.buckets] == [c, other]
    assert (await backend.status(c)).held == 0
    assert await backend.settle(pinned, 150) is True  # past the limit: no check
    assert await backend.settle(pinned, 150) is False
    assert [(await backend.status(x)).spent for x in (c, other)] == [150, 150]
    assert isinstance(await backend.reserve((c,), 1), Denial)  # the overspend counts


async def test_release_frees_the_hold_and_charges_nothing(backend: Backend) -> None:
    c = counter()
    reservation = await backend.granted((c,), 500)
    assert await backend.release(reservation) is True
    assert await backend.release(reservation) is False
    assert await backend.settle(reservation, 100) is False  # released means done
    status = await backend.status(c)
    assert (status.spent, status.held) == (0, 0)


async def test_lease_expiry_frees_the_hold(backend: Backend) -> None:
    c = counter()
    await backend.granted((c,), 500, lease_s=LEASE)
    assert (await backend.status(c)).held == 500
    await backend.wait(LEASE + 0.15)
    status = await backend.status(c)  # the status call sweeps
    assert (status.spent, status.held) == (0, 0)


async def test_settle_after_expiry_still_charges_once(backend: Backend) -> None:
    c = counter()
    reservation = await backend.granted((c,), 500, lease_s=LEASE)
    await backend.wait(LEASE + 0.15)
    assert (await backend.status(c)).held == 0
    assert await backend.settle(reservation, 300) is True
    assert await backend.settle(reservation, 300) is False
    status = await backend.status(c)
    assert (status.spent, status.held) == (300, 0)


async def test_release_after_expiry_leaves_the_charge_owed(backend: Backend) -> None:
    c = counter()
    reservation = await backend.granted((c,), 500, lease_s=LEASE)
    await backend.wait(LEASE + 0.15)
    assert await backend.release(reservation) is False
    assert await backend.settle(reservation, 70) is True
    assert (await backend.status(c)).spent == 70


async def test_expiry_is_swept_by_the_next_reserve(backend: Backend) -> None:
    c = counter(limit=500)
    await backend.granted((c,), 500, lease_s=LEASE)
    assert isinstance(await backend.reserve((c,), 500), Denial)
    await backend.wait(LEASE + 0.15)
    await backend.granted((c,), 500)  # the expired hold no longer counts


async def test_negative_amounts_are_rejected(backend: Backend) -> None:
    c = counter()
    with pytest.raises(ConfigurationError, match="amount"):
        await backend.reserve((c,), -1)
    reservation = await backend.granted((c,), 10)
    with pytest.raises(ConfigurationError, match="actual"):
        await backend.settle(reservation, -5)
    assert (await backend.status(c)).held == 10  # nothing recorded was lost


async def test_a_reservation_id_is_used_once(backend: Backend) -> None:
    c = counter()
    await backend.granted((c,), 10, rid="same")
    with pytest.raises(ConfigurationError, match="already used"):
        await backend.reserve((c,), 10, rid="same")


async def test_reservations_in_one_window_share_the_bucket(backend: Backend) -> None:
    c = counter(window="minute", limit=10_000)
    first = await backend.granted((c,), 100)
    second = await backend.granted((c,), 200)
    assert (
        first.buckets[0][1] == second.buckets[0][1]
        or first.buckets[0][1] + 60
        == (
            second.buckets[0][1]  # a minute boundary fell between the two calls
        )
    )
    status = await backend.status(c)
    if status.window_start == first.buckets[0][1]:
        assert status.held == 300
    assert status.resets_at == status.window_start + 60


async def test_pinned_bucket_is_charged_even_after_the_window_moved(backend: Backend) -> None:
    """A settle charges the bucket the call was admitted to, whatever the time now."""
    c = counter(window="total")
    reservation = await backend.granted((c,), 100)
    assert reservation.buckets == ((c, 0),)
    assert await backend.settle(reservation, 60)
    assert (await backend.status(c)).window_start == 0


async def test_counters_are_separate(backend: Backend) -> None:
    a, b = counter("a"), counter("b")
    reservation = await backend.granted((a,), 100)
    await backend.settle(reservation, 100)
    assert (await backend.status(b)).spent == 0


# -- issue 11: defects found by an adversarial run, one test each ----------------------


async def test_a_zero_hold_expires_without_breaking_its_tag(backend: Backend) -> None:
    """A $0 reservation (a free model, estimate=0) used to make every later script of
    its hash tag fail once its lease expired ("-0" is no integer to HINCRBY)."""
    free, other = counter("free"), counter("other")
    await backend.granted((free,), 0, lease_s=LEASE)
    await backend.wait(LEASE + 0.15)
    reservation = await backend.granted((other,), 10)  # sweeps the expired $0 hold
    assert await backend.settle(reservation, 10)
    assert (await backend.status(free)).held == 0
    zero = await backend.granted((free,), 0)
    assert await backend.settle(zero, 0)
    assert (await backend.status(free)).spent == 0


@pytest.mark.parametrize("amount", [0, 1, MAX_NANOS])
async def test_amounts_at_the_bounds_are_exact(backend: Backend, amount: int) -> None:
    c = counter(limit=MAX_NANOS)
    reservation = await backend.granted((c,), amount)
    assert (await backend.status(c)).held == amount
    assert await backend.settle(reservation, amount)
    status = await backend.status(c)
    assert (status.spent, status.held, status.overrun) == (amount, 0, 0)


@pytest.mark.parametrize("bad", [MAX_NANOS + 1, 10**19, -1])
async def test_out_of_range_amounts_are_refused_before_anything_changes(
    backend: Backend, bad: int
) -> None:
    c = counter(limit=1_000)
    with pytest.raises(ConfigurationError, match="amount"):
        await backend.reserve((c,), bad)
    reservation = await backend.granted((c,), 10)
    with pytest.raises(ConfigurationError, match="actual"):
        await backend.settle(reservation, bad)
    with pytest.raises(ConfigurationError, match="limit"):
        await backend.reserve((counter("big", limit=bad),), 1)
    status = await backend.status(c)
    assert (status.spent, status.held) == (0, 10)  # the hold is intact, nothing charged
    assert await backend.settle(reservation, 7)  # and the right amount still settles
    assert (await backend.status(c)).spent == 7


async def test_cost_above_the_reservation_is_charged_and_counted_as_overrun(
    backend: Backend,
) -> None:
    c = counter(limit=1_000)
    reservation = await backend.granted((c,), 100)
    assert await backend.settle(reservation, 250)  # a provider that ignored max_tokens
    status = await backend.status(c)
    assert (status.spent, status.held, status.overrun) == (250, 0, 150)
    pinned = backend.store.pin(uuid.uuid4().hex, (c,))  # charged after the fact: all overrun
    assert await backend.settle(pinned, 40)
    assert (await backend.status(c)).overrun == 190


async def test_a_denial_and_a_status_never_count_expired_holds(backend: Backend) -> None:
    """After a mass crash the sweep used to free 64 leases per call: a call that fit the
    free budget was refused, and status showed phantom holds."""
    c = counter(limit=1_000)
    for _ in range(200):
        await backend.granted((c,), 5, lease_s=LEASE)
    await backend.wait(LEASE + 0.15)
    reservation = await backend.granted((c,), 900)  # would be refused by 136 phantom holds
    assert (await backend.status(c)).held == 900
    await backend.release(reservation)
    for _ in range(150):
        await backend.granted((c,), 5, lease_s=LEASE)
    await backend.wait(LEASE + 0.15)
    assert (await backend.status(c)).held == 0  # the status itself sweeps every due lease


async def test_renew_keeps_a_live_hold_past_its_first_lease(backend: Backend) -> None:
    c = counter(limit=1_000)
    reservation = await backend.granted((c,), 600, lease_s=LEASE)
    renewed = await backend.renew(reservation, 5.0)
    assert renewed is not None and renewed > reservation.expires_at
    await backend.wait(LEASE + 0.15)
    assert (await backend.status(c)).held == 600  # still held: others cannot spend it
    assert isinstance(await backend.reserve((c,), 500), Denial)
    assert await backend.settle(reservation, 200)
    assert await backend.renew(reservation, 5.0) is None  # settled: nothing to renew
    expired = await backend.granted((c,), 100, lease_s=LEASE)
    await backend.wait(LEASE + 0.15)
    assert await backend.renew(expired, 5.0) is None  # too late: the lease already ran out
