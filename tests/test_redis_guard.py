"""The public API on real Redis: configure(store="redis://..."), the guard, block, status."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

import budgetguard as bg
from budgetguard.testing import FakeChatModel

MESSAGES = [{"role": "user", "content": "Plan the next step of the research task."}]
TENANT_LIMIT = Decimal("0.40")


def tenant_policy(on_exceed: str = "raise") -> bg.Policy:
    return bg.Policy(
        limits=[bg.Limit(scope="tenant", usd=TENANT_LIMIT, window="day")],
        on_exceed=on_exceed,  # type: ignore[arg-type]
        block_timeout=10,
    )


@pytest.fixture
def redis_store_url(redis_url: str, redis_client: object) -> str:
    return redis_url


def run_agent_until_stopped(url: str, seed: int) -> int:
    """One worker process: its own configure, its own connections, the shared budget."""
    bg.configure(store=url, policy=tenant_policy())
    model = FakeChatModel(seed=seed)
    calls = 0
    with bg.budget(tenant="acme"):
        try:
            while True:
                model.complete("gpt-4o", MESSAGES, max_tokens=600)
                calls += 1
        except bg.BudgetExceeded:
            return calls


def test_configure_by_url_guards_calls_and_status_reads_redis(redis_store_url: str) -> None:
    bg.configure(store=redis_store_url, policy=tenant_policy())
    assert type(bg.current().store).__name__ == "RedisStore"
    model = FakeChatModel(seed=7)
    with bg.budget(tenant="acme"), pytest.raises(bg.BudgetExceeded) as stop:
        while True:
            model.complete("gpt-4o", MESSAGES, max_tokens=600)
    assert stop.value.scope == "tenant" and stop.value.key == "acme"

    status = bg.status("tenant", "acme")
    assert status.held == 0
    assert 0 < status.spent <= TENANT_LIMIT
    assert status.spent == stop.value.spent
    assert status.remaining == TENANT_LIMIT - status.spent
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date()
    assert status.resets_at is not None and status.resets_at.date() == tomorrow

    bg.configure(store="memory://")  # another store sees none of it
    assert bg.status("tenant", "acme").spent == 0


def test_processes_sharing_a_redis_budget_never_overspend(redis_store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        calls = pool.starmap(run_agent_until_stopped, [(redis_store_url, n) for n in range(4)])
    bg.configure(store=redis_store_url, policy=tenant_policy())
    status = bg.status("tenant", "acme")
    assert sum(calls) > 4
    assert status.held == 0
    assert status.spent <= TENANT_LIMIT
    # a call's worst case is ~$0.0062: whatever is left must be less than one more call
    assert status.spent >= TENANT_LIMIT - Decimal("0.0063")


def test_block_on_redis_waits_for_another_process_hold(redis_store_url: str) -> None:
    bg.configure(store=redis_store_url, policy=tenant_policy("block"))
    with bg.budget(tenant="acme"):
        first = bg.admit_cost(bg.Money.usd("0.30").nanos)
    admitted_at: list[float] = []

    def second() -> None:
        with bg.budget(tenant="acme"):
            admission = bg.admit_cost(bg.Money.usd("0.20").nanos)
        admitted_at.append(time.monotonic())
        admission.settle_nanos(bg.Money.usd("0.20").nanos)

    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(0.4)
    assert not admitted_at  # 0.30 held + 0.20 > 0.40
    freed_at = time.monotonic()
    first.settle_nanos(bg.Money.usd("0.10").nanos)
    waiter.join(10)
    assert admitted_at and admitted_at[0] >= freed_at
    assert bg.status("tenant", "acme").spent == Decimal("0.30")


async def test_async_guard_on_redis(redis_store_url: str) -> None:
    bg.configure(store=redis_store_url, policy=tenant_policy())
    assert type(bg.current().async_store).__name__ == "AsyncRedisStore"
    model = FakeChatModel(seed=11)

    async def agent(n: int) -> int:
        calls = 0
        async with bg.spend_limit(usd=1, tenant="acme"):
            try:
                while True:
                    await model.acomplete("gpt-4o", MESSAGES, max_tokens=600)
                    calls += 1
            except bg.BudgetExceeded:
                return calls

    calls = await asyncio.gather(*(agent(n) for n in range(16)))
    status = await bg.astatus("tenant", "acme")
    assert sum(calls) > 16
    assert status.held == 0
    assert TENANT_LIMIT - Decimal("0.0063") <= status.spent <= TENANT_LIMIT


def test_an_unreserved_response_is_charged_on_redis(redis_store_url: str) -> None:
    bg.configure(store=redis_store_url, policy=tenant_policy())

    @bg.budget(tenant="acme")
    def raw_call() -> dict[str, object]:  # returns a provider response, reserved nothing
        return {"model": "gpt-4o", "usage": {"prompt_tokens": 1000, "completion_tokens": 100}}

    raw_call()
    cost = bg.current().prices.cost("gpt-4o", bg.Usage(input_tokens=1000, output_tokens=100))
    status = bg.status("tenant", "acme")
    assert status.spent == bg.Money(cost).usd_amount and status.held == 0
