"""The store contract as properties: MemoryStore and RedisStore driven in lockstep by
hypothesis, through random interleavings of reserve, settle, release and lease expiry,
with amounts at the bounds (0, 1, 2**53-1) and out of range.

After every step both stores must answer the same, and:

- held >= 0 on every counter, and 0 once nothing is in flight;
- spent = the sum of the costs settled on that counter (once each);
- spent <= limit, as long as every cost settled was <= its reservation;
- an amount out of range is refused by both, before anything changes;
- a counter in tokens holds the call's tokens and one in requests holds 1, settled
  to the tokens used and 1; a soft counter never refuses, and both stores name the
  same soft counters a hold took past their limit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from budgetguard._core.counters import share as share_of
from budgetguard._core.errors import ConfigurationError
from budgetguard._core.money import MAX_NANOS
from budgetguard.stores import Counter, Denial, MemoryStore, RedisStore, Reservation

BOUNDS = [0, 1, 2, MAX_NANOS - 1, MAX_NANOS]
amounts = st.one_of(st.sampled_from(BOUNDS), st.integers(0, 1_000))
out_of_range = st.sampled_from([-1, MAX_NANOS + 1, 10**19])
limits = st.one_of(st.sampled_from([0, 1, 1_000, MAX_NANOS]), st.integers(0, 5_000))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Held:
    """One reservation, granted by both stores under the same id."""

    memory: Reservation
    redis: Reservation
    keys: tuple[str, ...]
    expired: bool = False


class StoreContract(RuleBasedStateMachine):
    redis_url: str = ""
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.memory = MemoryStore(clock=Clock())
        self.redis = RedisStore(self.redis_url, prefix=f"prop{uuid.uuid4().hex[:10]}")
        self.counters: list[Counter] = []
        self.settled: dict[str, int] = {}
        self.overran = False
        self.live: dict[str, Held] = {}

    @initialize(
        first=limits,
        second=limits,
        unit=st.sampled_from(["usd", "tokens", "requests"]),
        soft=st.booleans(),
    )
    def make_counters(self, first: int, second: int, unit: str, soft: bool) -> None:
        """A dollar counter, and a second one in any unit, hard or soft."""
        self.counters = [
            Counter(key="c0", limit=first, window="total", scope="tenant", subject="c0"),
            Counter(
                key="c1",
                limit=second,
                window="total",
                scope="tenant",
                subject="c1",
                unit=unit,
                soft=soft,
            ),
        ]
        self.settled = {c.key: 0 for c in self.counters}

    def _pick(self, which: int) -> tuple[Counter, ...]:
        return (
            (self.counters[0],)
            if which == 0
            else ((self.counters[1],) if which == 1 else tuple(self.counters))
        )

    @rule(target=holds, amount=amounts, tokens=amounts, which=st.integers(0, 2))
    def reserve(self, amount: int, tokens: int, which: int) -> Any:
        counters = self._pick(which)
        rid = uuid.uuid4().hex
        memory = self.memory.reserve(rid, counters, amount, 600, tokens)
        redis = self.redis.reserve(rid, counters, amount, 600, tokens)
        assert type(memory) is type(redis), (memory, redis)
        if isinstance(memory, Denial):
            assert isinstance(redis, Denial)
            assert (memory.counter.key, memory.spent, memory.held, memory.requested) == (
                redis.counter.key,
                redis.spent,
                redis.held,
                redis.requested,
            )
            return None
        assert isinstance(redis, Reservation)
        assert [c.key for c in memory.over_soft] == [c.key for c in redis.over_soft]
        for counter in memory.over_soft:
            assert counter.soft
        held = Held(memory, redis, tuple(c.key for c in counters))
        self.live[rid] = held
        return held

    @rule(amount=out_of_range, which=st.integers(0, 2))
    def reserve_out_of_range(self, amount: int, which: int) -> None:
        before = self.snapshot()
        for store in (self.memory, self.redis):
            with pytest.raises(ConfigurationError, match="amount"):
                store.reserve(uuid.uuid4().hex, self._pick(which), amount, 600)
        assert self.snapshot() == before

    @rule(held=consumes(holds), share=st.sampled_from([0, 1, 2, 3, 4]), over=st.booleans())
    def settle(self, held: Held | None, share: int, over: bool) -> None:
        if held is None:
            return
        amount, tokens = held.memory.amount, held.memory.tokens
        if over:
            actual, used = min(MAX_NANOS, amount + 1 + share), min(MAX_NANOS, tokens + 1)
        else:
            actual, used = amount * share // 4, tokens * share // 4
        applied = self.memory.settle(held.memory, actual, used)
        assert self.redis.settle(held.redis, actual, used) is applied
        assert applied  # each hold is settled or released once in this machine
        self.overran = self.overran or over
        for counter in self.counters:
            if counter.key in held.keys:
                self.settled[counter.key] += share_of(counter, actual, used)
        self.live.pop(held.memory.id, None)
        assert self.memory.settle(held.memory, actual, used) is False  # twice: no change
        assert self.redis.settle(held.redis, actual, used) is False

    @rule(held=holds, actual=out_of_range)
    def settle_out_of_range(self, held: Held | None, actual: int) -> None:
        if held is None or held.memory.id not in self.live:
            return
        before = self.snapshot()
        for store, reservation in ((self.memory, held.memory), (self.redis, held.redis)):
            with pytest.raises(ConfigurationError, match="actual"):
                store.settle(reservation, actual)
        assert self.snapshot() == before

    @rule(held=consumes(holds))
    def release(self, held: Held | None) -> None:
        if held is None:
            return
        released = self.memory.release(held.memory)
        assert self.redis.release(held.redis) is released
        assert released is not held.expired
        self.live.pop(held.memory.id, None)

    @rule(held=holds)
    def expire(self, held: Held | None) -> None:
        """The lease of ``held`` runs out now, in both stores (a crashed caller)."""
        if held is None or held.memory.id not in self.live or held.expired:
            return
        held.expired = True
        clock = self.memory.clock
        hold = self.memory._holds[held.memory.id]
        hold.expires_at = clock() - 1  # type: ignore[operator]
        self.memory._leases.append((hold.expires_at, held.memory.id))
        self.memory._leases.sort()
        tag = held.redis.buckets[0][0].tag
        self.redis.client.zadd(self.redis.index_key(tag), {held.redis.id: 1})

    def snapshot(self) -> list[tuple[int, int, int]]:
        return [
            (status.spent, status.held, status.overrun)
            for status in (self.memory.status(c) for c in self.counters)
        ]

    @invariant()
    def both_stores_agree_and_hold_the_invariants(self) -> None:
        if not self.counters:
            return
        memory = self.snapshot()
        redis = [
            (s.spent, s.held, s.overrun) for s in (self.redis.status(c) for c in self.counters)
        ]
        assert memory == redis
        live = [h for h in self.live.values() if not h.expired]
        for counter, (spent, held, _) in zip(self.counters, memory, strict=True):
            assert held >= 0
            assert spent == self.settled[counter.key]
            if not self.overran and not counter.soft:
                assert spent <= counter.limit
            holding = sum(
                share_of(counter, h.memory.amount, h.memory.tokens)
                for h in live
                if counter.key in h.keys
            )
            assert held == holding

    def teardown(self) -> None:
        keys = list(self.redis.client.scan_iter(match=f"{self.redis.prefix}:*"))
        if keys:
            self.redis.client.delete(*keys)
        self.redis.close()


def test_memory_and_redis_stores_keep_the_contract(redis_client: Any, redis_url: str) -> None:
    StoreContract.redis_url = redis_url
    machine = settings(
        max_examples=40,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )(StoreContract)
    machine.TestCase().runTest()
