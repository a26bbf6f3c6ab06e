"""Defects an adversarial run found (issue 11), one fault test each, on the engine.

Store-level defects are in test_store_contract.py (both stores) and
test_redis_store.py; the ledger's, the alerts' and the CLI's in their own
files. Each test here failed on the code before its fix.
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from typing import Any

import pytest

import budgetguard as bg
from budgetguard._core.errors import StoreUnavailable
from budgetguard._core.money import MAX_NANOS, usd_to_nanos
from budgetguard._engine.flow import admit_cost
from budgetguard._engine.upkeep import OwedSettle, UnappliedSettles, unapplied, upkeep
from budgetguard.stores import MemoryStore, RedisStore, Reservation
from budgetguard.testing import FakeProvider

openai = pytest.importorskip("openai")

MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def client(fake: FakeProvider) -> Any:
    fake.clear()
    return bg.instrument(openai.OpenAI(base_url=fake.openai_base_url, api_key="t", max_retries=0))


@pytest.fixture
def records() -> list[bg.CallRecord]:
    seen: list[bg.CallRecord] = []
    bg.configure(
        policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd=10, window="day")]),
        listeners=[seen.append],
    )
    return seen


def tenant() -> bg.BudgetStatus:
    return bg.status("tenant", "acme")


# -- 6. malformed provider usage: the caller keeps the response ---------------------


BAD_USAGE = {"prompt_tokens": -1, "completion_tokens": "ten", "total_tokens": 9}


def test_malformed_usage_of_an_instrumented_call_returns_the_response(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord], caplog: Any
) -> None:
    fake.reply(text="the answer", raw_usage=BAD_USAGE)
    with bg.spend_limit(tenant="acme"):
        response = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=50
        )
    assert response.choices[0].message.content == "the answer"
    (record,) = records
    assert record.outcome == "unpriced"
    assert "prompt_tokens" in (record.error or "")
    assert record.cost == record.estimate > 0  # charged its reservation, never $0
    status = tenant()
    assert (status.spent, status.held) == (record.cost_usd, 0)
    assert "unpriced" in caplog.text


def test_malformed_usage_in_a_stream_never_breaks_the_stream(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    fake.reply(text="one two three", raw_usage=BAD_USAGE)
    with bg.spend_limit(tenant="acme"):
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=50, stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "one two three"
    (record,) = records
    assert record.outcome == "unpriced" and record.cost == record.estimate
    assert tenant().held == 0


def test_malformed_usage_with_estimate_returns_the_response_and_frees_the_hold(
    records: list[bg.CallRecord],
) -> None:
    @bg.budget(tenant="acme", estimate="0.05", model="gpt-4o-mini")
    def call() -> dict[str, Any]:
        return {"model": "gpt-4o-mini", "usage": BAD_USAGE}

    assert call()["usage"] is BAD_USAGE
    (record,) = records
    assert record.outcome == "unpriced"
    status = tenant()
    assert (status.spent, status.held) == (Decimal("0.05"), 0)


def test_malformed_usage_without_estimate_is_charged_the_models_worst_case(
    records: list[bg.CallRecord],
) -> None:
    @bg.budget(tenant="acme")
    def call() -> dict[str, Any]:
        return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 12, "completion_tokens": -3}}

    call()
    (record,) = records
    assert record.outcome == "unpriced" and "completion_tokens" in (record.error or "")
    rates = bg.current().prices.rates("gpt-4o-mini")
    worst = rates.worst_case(rates.context_window or 200_000, rates.max_output_tokens or 0)
    assert record.cost == worst > 0  # was $0 with no word
    assert tenant().spent == record.cost_usd


def test_something_else_with_a_usage_field_is_not_charged(records: list[bg.CallRecord]) -> None:
    @bg.budget(tenant="acme")
    def call() -> dict[str, Any]:
        return {"usage": "see the manual"}

    call()
    assert records == []


def test_an_unknown_model_in_the_response_keeps_the_response(
    records: list[bg.CallRecord],
) -> None:
    @bg.budget(tenant="acme", estimate="0.02")
    def call() -> dict[str, Any]:
        return {"model": "mystery-9000", "usage": {"prompt_tokens": 5, "completion_tokens": 5}}

    assert call()["model"] == "mystery-9000"  # raised UnknownModel after the call
    (record,) = records
    assert record.outcome == "unpriced" and "mystery-9000" in (record.error or "")
    assert tenant().spent == Decimal("0.02")


def test_a_cost_out_of_range_is_charged_the_reservation(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    fake.reply(output_tokens=10**15)  # $6e8 of output: more than any store holds
    with bg.spend_limit(tenant="acme"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
    (record,) = records
    assert record.outcome == "unpriced" and record.cost == record.estimate
    assert tenant().held == 0


def test_cost_above_the_hold_is_charged_logged_once_and_counted_as_overrun(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord], caplog: Any
) -> None:
    for _ in range(2):
        fake.reply(model="gpt-4o-mini", output_tokens=2_000)  # ignored max_tokens=10
        with bg.spend_limit(tenant="acme"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=10)
    assert [r.outcome for r in records] == ["ok", "ok"]
    assert all(r.overrun == r.cost - r.estimate > 0 for r in records)
    assert caplog.text.count("above the $") == 1
    status = tenant()
    assert status.spent == sum(r.cost_usd for r in records)
    assert status.overrun == sum(r.overrun for r in records) * Decimal("1e-9")


# -- 8. an empty id must not mean "unlimited" ---------------------------------------------


def test_empty_ids_are_refused_naming_the_field() -> None:
    bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="user", usd=1, window="day")]))
    for field in ("tenant", "user", "feature"):
        with pytest.raises(bg.ConfigurationError, match=f"{field}: an empty string"):
            bg.spend_limit(**{field: ""})

    @bg.budget(user=lambda header: header, estimate="0.01")
    def handle(header: str) -> str:
        return "served"

    assert handle("u-1") == "served"
    with pytest.raises(bg.ConfigurationError, match="user: an empty string"):
        handle("")
    assert bg.status("user", "u-1", tenant=None).spent == Decimal("0.01")


# -- 10. a bad settle amount records nothing ------------------------------------------------


def test_a_bad_settle_amount_records_nothing_and_the_right_one_still_lands(
    records: list[bg.CallRecord],
) -> None:
    with bg.spend_limit(tenant="acme"):
        admission = admit_cost(usd_to_nanos("0.10"))
    for bad in (-5, MAX_NANOS + 1, 1.5):
        with pytest.raises(bg.ConfigurationError, match="nanos"):
            admission.settle_nanos(bad)  # type: ignore[arg-type]
    assert records == []
    assert admission.settle_nanos(usd_to_nanos("0.04")) == Decimal("0.04")
    assert [(r.outcome, r.cost) for r in records] == [("ok", 40_000_000)]
    assert tenant().spent == Decimal("0.04")


# -- nested frames name the one that refused ------------------------------------------------


def test_a_named_frame_is_named_in_the_refusal() -> None:
    with (
        bg.spend_limit(usd="0.10", name="outer-agent"),
        bg.spend_limit(usd="1.00", name="tool-call"),
        pytest.raises(bg.BudgetExceeded, match="run='outer-agent'") as refused,
    ):
        admit_cost(usd_to_nanos("0.20"))
    assert (refused.value.scope, refused.value.key) == ("run", "outer-agent")
    with pytest.raises(bg.ConfigurationError, match="name"):
        bg.spend_limit(usd=1, name="")


# -- 11. leases: renewed while a call is in flight, a late settle logged --------------------


def _long_calls(store: object, lease_s: float, workers: int = 12, calls: int = 4) -> Decimal:
    bg.configure(
        store=store,
        policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd=1, window="day")], lease_s=lease_s),
    )
    cost = usd_to_nanos("0.10")

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(calls):
            try:
                with bg.spend_limit(tenant="acme"):
                    admission = admit_cost(cost)
            except bg.BudgetExceeded:
                time.sleep(0.01)
                continue
            time.sleep(rng.uniform(lease_s, 3 * lease_s))  # longer than the lease
            admission.settle_nanos(cost)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    status = bg.status("tenant", "acme")
    assert status.held == 0
    return status.spent


def test_calls_longer_than_their_lease_never_overspend_memory() -> None:
    assert _long_calls(MemoryStore(), lease_s=0.1) <= Decimal(1)


def test_calls_longer_than_their_lease_never_overspend_redis(
    redis_client: Any, redis_url: str
) -> None:
    store = RedisStore(redis_url, prefix="leases")
    try:
        assert _long_calls(store, lease_s=0.1) <= Decimal(1)
    finally:
        store.close()


class LostLeases(MemoryStore):
    """A store on which every renewal comes too late (the hold is already gone)."""

    def renew(self, reservation: Reservation, lease_s: float) -> float | None:
        return None


def test_a_lease_lost_in_flight_and_its_late_settle_are_logged(caplog: Any) -> None:
    bg.configure(store=LostLeases(), policy=bg.Policy(lease_s=0.05))
    with caplog.at_level(logging.WARNING, "budgetguard"), bg.spend_limit(usd=1, tenant="t"):
        admission = admit_cost(1_000)
        time.sleep(0.2)  # the upkeep thread tried to renew at 25 ms
        admission.settle_nanos(900)
    assert "ran out while it was still in flight" in caplog.text
    assert "settled after its lease had run out" in caplog.text


# -- 3. settles kept during an outage --------------------------------------------------------


class Outage(MemoryStore):
    """A MemoryStore whose settles fail while ``down`` (as a store in an outage)."""

    down = False

    def settle(self, reservation: Reservation, actual: int) -> bool:
        if self.down:
            raise bg.StoreUnavailable("simulated outage")
        return super().settle(reservation, actual)


def test_a_settle_kept_during_an_outage_lands_before_the_next_reserve() -> None:
    store = Outage()
    bg.configure(
        store=store,
        policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd=1, window="day")], lease_s=0.1),
    )
    with bg.spend_limit(tenant="acme"):
        first = admit_cost(usd_to_nanos("0.90"))
        store.down = True
        first.settle_nanos(usd_to_nanos("0.90"))  # kept to retry
        assert len(unapplied) == 1
        store.down = False
        with pytest.raises(bg.BudgetExceeded):  # was granted: $1.40 spent on $1
            admit_cost(usd_to_nanos("0.50"))
    assert len(unapplied) == 0
    assert bg.status("tenant", "acme").spent == Decimal("0.9")


def test_the_upkeep_thread_lands_kept_settles_on_its_own() -> None:
    store = Outage()
    bg.configure(
        store=store, policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd=1, window="total")])
    )
    with bg.spend_limit(tenant="acme"):
        admission = admit_cost(500)
    store.down = True
    admission.settle_nanos(300)
    store.down = False
    deadline = time.monotonic() + 5
    while unapplied and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bg.status("tenant", "acme").spent == Decimal("3E-7")


def test_settles_kept_at_exit_are_flushed(redis_client: Any, redis_url: str) -> None:
    script = textwrap.dedent(
        f"""
        import budgetguard as bg
        from budgetguard._engine.flow import admit_cost
        from budgetguard.stores import RedisStore

        class Flaky(RedisStore):
            failures = 1
            def settle(self, reservation, actual):
                if self.failures:
                    self.failures -= 1
                    raise bg.StoreUnavailable("simulated")
                return super().settle(reservation, actual)

        bg.configure(store=Flaky({redis_url!r}, prefix="atexit"),
                     policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd=1)]))
        with bg.spend_limit(tenant="acme"):
            admit_cost(700).settle_nanos(700)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "kept" in done.stderr  # the failed settle was logged
    bg.configure(
        store=RedisStore(redis_url, prefix="atexit"),
        policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd=1, window="total")]),
    )
    assert bg.status("tenant", "acme").spent == Decimal("7E-7")  # flushed at exit


def test_owed_settles_are_never_dropped_without_a_word(caplog: Any) -> None:
    owed = UnappliedSettles(limit=2)
    for n in range(3):
        reservation = Reservation(f"r{n}", 0, (), 0.0)
        owed.keep(OwedSettle(reservation, 1_000 * (n + 1), None, None), StoreUnavailable("down"))
    assert len(owed) == 2
    assert owed.lost_nanos == 1_000
    assert "given up" in caplog.text and "$0.000001" in caplog.text
    owed.flush_at_exit(timeout=0.1)  # no sync store to take them: lost, and said so
    assert owed.lost_nanos == 6_000


def test_upkeep_forgets_a_settled_call() -> None:
    with bg.spend_limit(usd=1):
        admission = admit_cost(10)
    assert admission.reservation is not None
    assert admission.reservation.id in upkeep._live
    admission.settle_nanos(5)
    assert admission.reservation.id not in upkeep._live


def test_retry_after_is_also_given_in_seconds() -> None:
    bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd="0.01", window="hour")]))
    with bg.spend_limit(tenant="acme"), pytest.raises(bg.BudgetExceeded) as refused:
        admit_cost(usd_to_nanos("0.02") - 1)
    assert refused.value.retry_after is None  # the request alone exceeds the limit
    with bg.spend_limit(tenant="acme"):
        admit_cost(usd_to_nanos("0.01")).settle_nanos(usd_to_nanos("0.01"))
        with pytest.raises(bg.BudgetExceeded) as refused:
            admit_cost(1)
    seconds = refused.value.retry_after_s
    assert seconds is not None and 0 <= seconds <= 3600
    assert refused.value.retry_after is not None
    assert seconds == refused.value.retry_after.total_seconds()


def test_a_downgrade_to_a_model_with_no_price_fails_at_configure() -> None:
    """It used to be accepted, and only the first call that needed it failed."""
    with pytest.raises(bg.ConfigurationError, match=r"downgrade\['gpt-4o'\]: 'gpt-4o-mni'"):
        bg.configure(policy=bg.Policy(on_exceed="downgrade", downgrade={"gpt-4o": "gpt-4o-mni"}))
    bg.configure(
        policy=bg.Policy(on_exceed="downgrade", downgrade={"gpt-4o": "house-model"}),
        prices={"house-model": {"input": 1, "output": 2}},
    )


# -- a call that raised instead of answering -----------------------------------------


def test_a_timeout_after_sending_is_released_but_never_silently(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord], caplog: Any
) -> None:
    # The provider may have received (and billed) a request that timed out: nothing says
    # what it cost, so the hold is released - with a warning, never a silent $0.
    fake.reply(delay_s=1.0)
    with (
        caplog.at_level(logging.WARNING, logger="budgetguard"),
        bg.spend_limit(tenant="acme"),
        pytest.raises(openai.APITimeoutError),
    ):
        client.with_options(timeout=0.2).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=10
        )
    assert records[-1].outcome == "error" and tenant().held == 0
    assert any("before it answered" in r.getMessage() for r in caplog.records)


def test_an_error_status_from_the_provider_is_released_without_a_warning(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord], caplog: Any
) -> None:
    fake.reply(status=400)
    with (
        caplog.at_level(logging.WARNING, logger="budgetguard"),
        bg.spend_limit(tenant="acme"),
        pytest.raises(openai.BadRequestError),
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=10)
    assert records[-1].outcome == "error" and tenant().held == 0
    assert not any("before it answered" in r.getMessage() for r in caplog.records)
