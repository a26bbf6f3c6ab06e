"""DESIGN.md's invariants on the embedded store, through the public engine."""

from __future__ import annotations

import asyncio
import random
import threading
from decimal import Decimal

import pytest

import budgetguard as bg
from budgetguard._engine.flow import aadmit_cost, admit_cost
from budgetguard.stores import MemoryStore

LIMIT = Decimal(1)
MAX_ESTIMATE = bg.Money.usd("0.01").nanos


def one_dollar_budget(store: MemoryStore | None = None) -> None:
    bg.configure(
        store=store or MemoryStore(),
        policy=bg.Policy(limits=[bg.Limit(scope="global", usd=LIMIT, window="total")]),
    )


def test_many_threads_never_overspend_and_leave_nothing_held() -> None:
    one_dollar_budget()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(150):
                estimate = rng.randint(1, MAX_ESTIMATE)
                try:
                    admission = admit_cost(estimate)
                except bg.BudgetExceeded:
                    continue
                admission.settle_nanos(rng.randint(0, estimate))
                admission.settle_nanos(estimate)  # a second settle changes nothing
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    status = bg.status("global")
    assert status.spent <= LIMIT
    assert status.held == 0
    assert status.spent >= LIMIT * Decimal("0.95")


async def test_many_tasks_never_overspend_and_leave_nothing_held() -> None:
    one_dollar_budget()

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(40):
            estimate = rng.randint(1, MAX_ESTIMATE)
            try:
                admission = await aadmit_cost(estimate)
            except bg.BudgetExceeded:
                await asyncio.sleep(0)
                continue
            await asyncio.sleep(0)  # other tasks reserve while this call is "in flight"
            if rng.random() < 0.1:
                await admission.arelease()  # a failed call
            else:
                await admission.asettle_nanos(rng.randint(0, estimate))

    await asyncio.gather(*(worker(n) for n in range(200)))
    status = await bg.astatus("global")
    assert status.spent <= LIMIT
    assert status.held == 0
    assert status.spent >= LIMIT * Decimal("0.95")


def test_a_reservation_is_a_lease_and_a_late_settle_still_charges_once() -> None:
    now = [1_000_000.0]
    store = MemoryStore(clock=lambda: now[0])
    bg.configure(
        store=store,
        policy=bg.Policy(
            limits=[bg.Limit(scope="global", usd=LIMIT, window="total")],
            lease_s=60,
            contention_wait_s=0,  # the clock is frozen: waiting for the crashed hold never ends
        ),
    )
    crashed = admit_cost(bg.Money.usd("0.9").nanos)  # its process "dies" here
    with pytest.raises(bg.BudgetExceeded):
        admit_cost(bg.Money.usd("0.2").nanos)
    now[0] += 61
    assert bg.status("global").held == 0  # swept after the lease
    admit_cost(bg.Money.usd("0.2").nanos).settle_nanos(bg.Money.usd("0.2").nanos)
    crashed.settle_nanos(bg.Money.usd("0.3").nanos)  # late, but the money was spent
    crashed.settle_nanos(bg.Money.usd("0.3").nanos)
    assert bg.status("global").spent == Decimal("0.5")


def test_settle_twice_and_release_after_settle_change_nothing() -> None:
    one_dollar_budget()
    admission = admit_cost(bg.Money.usd("0.4").nanos)
    assert admission.settle_nanos(bg.Money.usd("0.1").nanos) == Decimal("0.1")
    assert admission.settle_nanos(bg.Money.usd("0.3").nanos) == Decimal("0.1")
    admission.release()
    store = bg.current().require_store()
    assert store.settle(admission.reservation, 999) is False  # type: ignore[arg-type]
    assert bg.status("global").spent == Decimal("0.1")
    assert bg.status("global").held == 0


def test_failed_calls_release_their_hold() -> None:
    one_dollar_budget()

    @bg.budget(estimate="0.6")
    def flaky() -> None:
        raise TimeoutError("provider timed out")

    for _ in range(5):
        with pytest.raises(TimeoutError):
            flaky()
    status = bg.status("global")
    assert (status.spent, status.held) == (0, 0)


def test_bad_amounts_are_refused_and_nothing_recorded_is_lost() -> None:
    one_dollar_budget()
    admit_cost(bg.Money.usd("0.25").nanos).settle_nanos(bg.Money.usd("0.25").nanos)
    with pytest.raises(bg.ConfigurationError, match="amount"):
        admit_cost(-5)
    admission = admit_cost(10)
    with pytest.raises(bg.ConfigurationError, match="actual"):
        bg.current().require_store().settle(admission.reservation, -1)  # type: ignore[arg-type]
    with pytest.raises(bg.UsageError, match="output_tokens"):
        bg.Usage(input_tokens=1, output_tokens=-3)
    assert bg.status("global").spent == Decimal("0.25")
