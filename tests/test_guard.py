"""budget / spend_limit end to end on the embedded store, with the built-in fake model."""

from __future__ import annotations

import asyncio
import inspect
import re
import threading
import time
from decimal import Decimal
from typing import Any

import pytest

import budgetguard as bg
from budgetguard._core.records import LLMRequest
from budgetguard._engine.binder import Binder as _Binder
from budgetguard._engine.flow import admit, admit_cost
from budgetguard.testing import FakeChatModel

MESSAGES = [{"role": "user", "content": "Summarise the quarterly report in three bullet points."}]


def agent_loop(model: FakeChatModel, name: str = "gpt-4o", steps: int = 1000) -> int:
    done = 0
    for _ in range(steps):
        model.complete(name, MESSAGES, max_tokens=800)
        done += 1
    return done


def test_spend_limit_stops_a_runaway_loop_before_the_limit() -> None:
    with bg.spend_limit(usd="0.10") as run, pytest.raises(bg.BudgetExceeded) as stop:
        agent_loop(FakeChatModel(seed=1))
    assert stop.value.scope == "run"
    assert stop.value.limit == Decimal("0.1")
    assert run.calls > 3
    assert Decimal(0) < run.spent <= Decimal("0.10")
    assert run.remaining == Decimal("0.10") - run.spent
    # the call refused was the one whose worst case did not fit
    assert stop.value.spent + stop.value.requested > Decimal("0.10")
    assert stop.value.spent == run.spent


def test_inner_frames_never_spend_past_outer_ones() -> None:
    model = FakeChatModel(seed=2)
    with bg.spend_limit(usd="0.05") as outer:
        with bg.spend_limit(usd=5) as inner, pytest.raises(bg.BudgetExceeded) as stop:
            agent_loop(model)
        assert stop.value.limit == Decimal("0.05")
        assert inner.spent == outer.spent <= Decimal("0.05")

    with bg.spend_limit(usd=1) as outer:
        with bg.spend_limit(usd="0.02") as inner, pytest.raises(bg.BudgetExceeded):
            agent_loop(model)
        assert inner.spent <= Decimal("0.02")
        model.complete("gpt-4o", MESSAGES, max_tokens=100)  # the outer run goes on
        assert outer.calls == inner.calls + 1
        assert outer.spent > inner.spent


def test_budget_decorator_attributes_calls_from_the_arguments() -> None:
    bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="user", usd="0.02", window="day")]))
    model = FakeChatModel(seed=3)

    @bg.budget(feature="summarize", user=lambda user_id, **_: user_id)
    def summarize(user_id: str, text: str) -> str:
        reply = model.complete("gpt-4o", [{"role": "user", "content": text}], max_tokens=300)
        return str(reply["choices"][0]["message"]["content"])

    with pytest.raises(bg.BudgetExceeded) as stop:
        for _ in range(100):
            summarize("u-1", "hello")
    assert (stop.value.scope, stop.value.key, stop.value.window) == ("user", "u-1", "day")
    status = bg.status("user", "u-1", tenant=None)
    assert Decimal(0) < status.spent <= Decimal("0.02")
    assert status.held == 0 and status.remaining == Decimal("0.02") - status.spent
    assert status.resets_at is not None
    summarize("u-2", "hello")  # another user has their own budget
    assert bg.status("user", "u-2", tenant=None).spent > 0


async def test_async_decorator_and_async_with() -> None:
    model = FakeChatModel(seed=4)

    @bg.budget(feature="chat", usd="0.03")
    async def chat() -> int:
        calls = 0
        while True:
            await model.acomplete("gpt-4o-mini", MESSAGES, max_tokens=20_000)
            calls += 1

    with pytest.raises(bg.BudgetExceeded):
        await chat()

    async with bg.spend_limit(usd="0.01") as run:
        with pytest.raises(bg.BudgetExceeded):
            while True:
                await model.acomplete("gpt-4o", MESSAGES, max_tokens=200)
    assert run.calls > 0 and run.spent <= Decimal("0.01")


async def test_concurrent_tasks_each_get_their_own_frames() -> None:
    model = FakeChatModel(seed=5)

    async def worker(user: str) -> tuple[str, int]:
        async with bg.spend_limit(usd="0.02", user=user) as run:
            try:
                while True:
                    await model.acomplete("gpt-4o", MESSAGES, max_tokens=300)
                    await asyncio.sleep(0)
            except bg.BudgetExceeded:
                pass
        return user, run.calls

    results = await asyncio.gather(*(worker(f"u{i}") for i in range(8)))
    assert all(calls > 0 for _, calls in results)
    assert bg.current().policy.limits == ()


def test_downgrade_walks_to_a_model_that_fits() -> None:
    bg.configure(policy=bg.Policy(on_exceed="downgrade", downgrade={"gpt-4o": "gpt-4o-mini"}))
    model = FakeChatModel(seed=6)
    with bg.spend_limit(usd="0.006") as run:
        first = model.complete("gpt-4o", MESSAGES, max_tokens=500)  # worst case ~$0.005
        assert first["model"] == "gpt-4o"
        second = model.complete("gpt-4o", MESSAGES, max_tokens=500)
        assert second["model"] == "gpt-4o-mini"
        admission = admit(LLMRequest(model="gpt-4o", messages=MESSAGES, max_tokens=500))
        assert admission.downgraded and admission.requested_model == "gpt-4o"
        admission.release()
        with pytest.raises(bg.BudgetExceeded):  # not even the cheapest fits
            model.complete("gpt-4o", MESSAGES, max_tokens=16_000)
    assert run.spent <= Decimal("0.006")


def test_block_waits_for_a_hold_to_settle() -> None:
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="global", usd="0.01", window="total")],
            on_exceed="block",
            block_timeout=10,
        )
    )
    first = admit_cost(bg.Money.usd("0.008").nanos)
    admitted_at: list[float] = []

    def second() -> None:
        admission = admit_cost(bg.Money.usd("0.005").nanos)
        admitted_at.append(time.monotonic())
        admission.settle_nanos(bg.Money.usd("0.005").nanos)

    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(0.3)
    assert not admitted_at  # still waiting: 0.008 held + 0.005 > 0.01
    settled_at = time.monotonic()
    first.settle_nanos(bg.Money.usd("0.002").nanos)  # refund frees budget
    waiter.join(5)
    assert admitted_at and admitted_at[0] >= settled_at
    assert bg.status("global").spent == Decimal("0.007")


def test_block_gives_up_at_once_when_waiting_cannot_help() -> None:
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="global", usd="0.01", window="total")], on_exceed="block"
        )
    )
    started = time.monotonic()
    with pytest.raises(bg.BudgetExceeded):
        admit_cost(bg.Money.usd("0.02").nanos)
    assert time.monotonic() - started < 1


def test_block_times_out() -> None:
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="global", usd="0.01", window="total")],
            on_exceed="block",
            block_timeout=0.3,
        )
    )
    held = admit_cost(bg.Money.usd("0.008").nanos)
    with pytest.raises(bg.BudgetExceeded) as stop:
        admit_cost(bg.Money.usd("0.005").nanos)
    assert stop.value.held == Decimal("0.008")
    held.release()


def test_per_request_cap_is_checked_before_anything_is_reserved() -> None:
    bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="request", usd="0.001")]))
    with pytest.raises(bg.BudgetExceeded) as stop:
        FakeChatModel().complete("gpt-4o", MESSAGES, max_tokens=1000)
    assert stop.value.scope == "request"
    assert stop.value.requested > Decimal("0.01")  # 1000 output tokens of gpt-4o
    assert "0.001" in str(stop.value)


def test_unknown_models_are_never_free() -> None:
    model = FakeChatModel()
    with pytest.raises(bg.UnknownModel, match="my-private-llm"):
        model.complete("my-private-llm", MESSAGES, max_tokens=100)
    bg.configure(fallback_price=bg.Price(input=10, output=30, max_output_tokens=4096))
    with bg.spend_limit(usd=1) as run:
        model.complete("my-private-llm", MESSAGES, max_tokens=100)
    assert run.spent > 0


def test_custom_prices_are_used() -> None:
    bg.configure(prices={"house-model": {"input": "1", "output": "2"}})
    with bg.spend_limit() as run:
        FakeChatModel(cached_share=0).complete("house-model", MESSAGES, max_tokens=1000)
    assert run.calls == 1
    assert Decimal(0) < run.spent <= Decimal("0.002") + Decimal("0.0001")


def openai_shaped(prompt: int, completion: int, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "model": model,
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": 0},
    }


def test_estimate_path_settles_from_the_returned_response() -> None:
    @bg.budget(usd=1, estimate="0.05")
    def raw_call() -> dict[str, Any]:
        return openai_shaped(1000, 500)

    with bg.spend_limit() as run:
        raw_call()
    expected = bg.current().prices.cost(
        "gpt-4o-mini", bg.Usage(input_tokens=1000, output_tokens=500)
    )
    assert run.spent == bg.Money(expected).usd_amount


def test_an_unreserved_provider_response_is_charged_after_the_fact() -> None:
    bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="feature", usd="0.01", window="day")]))

    @bg.budget(feature="raw")
    def raw_call() -> dict[str, Any]:  # no estimate=, no instrumented client
        return openai_shaped(1000, 500)

    @bg.budget(feature="raw")
    def not_llm() -> dict[str, Any]:
        return {"usage": "a field of some other kind", "model": "gpt-4o"}

    cost = bg.current().prices.cost("gpt-4o-mini", bg.Usage(input_tokens=1000, output_tokens=500))
    with bg.spend_limit() as run:
        raw_call()
        assert not_llm()["usage"]  # untouched, uncharged, unbroken
    assert run.spent == bg.Money(cost).usd_amount and run.calls == 1
    feature = bg.status("feature", "raw")
    assert feature.spent == run.spent and feature.held == 0
    for _ in range(30):  # after the fact means no limit check: counted past the limit
        raw_call()
    assert bg.status("feature", "raw").spent == 31 * bg.Money(cost).usd_amount > Decimal("0.01")
    with bg.budget(feature="raw"), pytest.raises(bg.BudgetExceeded):
        admit_cost(1)  # and the next reserved call sees it


async def test_an_unreserved_async_response_is_charged_after_the_fact() -> None:
    @bg.budget(feature="raw")
    async def raw_call() -> dict[str, Any]:
        return openai_shaped(2000, 100)

    async with bg.spend_limit() as run:
        await raw_call()
    cost = bg.current().prices.cost("gpt-4o-mini", bg.Usage(input_tokens=2000, output_tokens=100))
    assert run.spent == bg.Money(cost).usd_amount


def test_estimate_path_releases_on_error_and_charges_the_estimate_otherwise() -> None:
    bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="feature", usd="0.10", window="total")]))

    @bg.budget(feature="ocr", estimate=lambda pages: Decimal("0.01") * pages)
    def ocr(pages: int) -> str:
        if pages > 5:
            raise RuntimeError("provider down")
        return "text"

    with pytest.raises(RuntimeError):
        ocr(7)
    assert bg.status("feature", "ocr").spent == 0
    assert bg.status("feature", "ocr").held == 0
    ocr(3)
    assert bg.status("feature", "ocr").spent == Decimal("0.03")
    with pytest.raises(bg.BudgetExceeded):
        for _ in range(10):
            ocr(4)
    assert bg.status("feature", "ocr").spent <= Decimal("0.10")


def test_estimate_block_records_what_it_actually_cost() -> None:
    with bg.spend_limit(estimate="0.05") as run:
        run.record(usd="0.0125")
    assert run.spent == Decimal("0.0125")
    with bg.spend_limit(estimate="0.05", model="gpt-4o") as run:
        run.record(usage=bg.Usage(input_tokens=1000, output_tokens=100))
    assert run.spent == Decimal("0.0035")


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(bg.ConfigurationError, match="usd"):
        bg.spend_limit(usd=-1)
    with pytest.raises(bg.ConfigurationError, match="user"):
        bg.budget(user=42)  # type: ignore[arg-type]
    with pytest.raises(bg.ConfigurationError, match="on_exceed"):
        bg.budget(on_exceed="explode")  # type: ignore[arg-type]
    with pytest.raises(bg.ConfigurationError, match="store"):
        bg.configure(store="mongodb://x")
    with pytest.raises(bg.ConfigurationError, match="limits"):
        bg.spend_limit(limits=[{"scope": "user"}])  # type: ignore[list-item]


def _plain(user_id: str, text: str = "", n: int = 3) -> None:
    return None


def _keyword_only(user_id: str, *, text: str = "") -> None:
    return None


def _variadic(user_id: str, *args: Any, **kwargs: Any) -> None:
    return None


def _positional_only(user_id: str, /, text: str = "") -> None:
    return None


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    (("u-1",), {}),
    (("u-1", "hi"), {}),
    (("u-1", "hi", 4), {}),
    (("u-1", "hi", 4, 5), {}),
    ((), {"user_id": "u-1"}),
    (("u-1",), {"n": 9, "text": "hi"}),
    (("u-1",), {"user_id": "u-2"}),
    (("u-1",), {"other": 1}),
    ((), {"text": "hi"}),
]


@pytest.mark.parametrize("fn", [_plain, _keyword_only, _variadic, _positional_only])
@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_arguments_bind_like_inspect(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    # Attribution callables get the decorated function's arguments by name;
    # the cached fast path must bind exactly as inspect does, errors included.
    binder = _Binder(fn)
    try:
        expected = inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as error:
        with pytest.raises(TypeError, match=re.escape(str(error))):
            binder.bind(args, kwargs)
        return
    expected.apply_defaults()
    for _ in range(2):  # the first call computes the signature, the second reuses it
        bound = binder.bind(args, kwargs)
        assert bound == dict(expected.arguments)
        assert list(bound) == list(expected.arguments)


def test_every_call_is_planned_for_its_own_attribution_frames_and_model() -> None:
    # The engine reuses the last plan while nothing it depends on changed.
    bg.configure(
        policy=bg.Policy(
            limits=[
                bg.Limit(scope="tenant", usd=1, window="day"),
                bg.Limit(scope="user", usd=1, window="day"),
                bg.Limit(scope="model", key="gpt-4o", usd=1, window="day"),
            ]
        )
    )

    def keys(**frame: Any) -> list[str]:
        model = frame.pop("model", None)
        with bg.budget(**frame):
            admission = admit_cost(10, model=model)
            admission.settle_nanos(10)
        return [counter.key for counter in admission.counters]

    assert keys(tenant="a", user="u1") == ["tenant=a:day", "tenant=a/user=u1:day"]
    assert keys(tenant="a", user="u2") == ["tenant=a:day", "tenant=a/user=u2:day"]
    assert keys(tenant="b", user="u1") == ["tenant=b:day", "tenant=b/user=u1:day"]
    assert keys(tenant="b", user="u1", model="gpt-4o") == [
        "tenant=b:day",
        "tenant=b/user=u1:day",
        "model=gpt-4o:day",
    ]
    assert keys(tenant="b") == ["tenant=b:day"]
    assert keys(tenant="b", limits=[bg.Limit(scope="feature", usd=1, window="total")]) == [
        "tenant=b:day"
    ]
    assert keys(
        tenant="b", feature="f", limits=[bg.Limit(scope="feature", usd=1, window="total")]
    ) == [
        "tenant=b:day",
        "feature=f:total",
    ]

    @bg.budget(tenant="c", user=lambda user_id: user_id, estimate="0.000001")
    def call(user_id: str) -> None:
        return None

    for user in ("u1", "u2", "u1"):
        call(user)
    assert bg.status("user", "u1", tenant="c").spent == Decimal("0.000002")
    assert bg.status("user", "u2", tenant="c").spent == Decimal("0.000001")
    assert bg.status("tenant", "c").spent == Decimal("0.000003")

    # A run limit of the policy: one counter per frame, never another frame's.
    bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="run", usd=1)]))
    for _ in range(3):
        with bg.budget(tenant="a") as run:
            admission = admit_cost(10)
            admission.settle_nanos(10)
        assert [counter.subject for counter in admission.counters] == [run.id]


def test_one_guard_object_entered_by_two_threads_exiting_first_in_first_out() -> None:
    """Each entry keeps its own state: the first thread in leaves first, and each
    thread's run counts only its own calls (a list on the guard mixed them up)."""
    shared = bg.spend_limit(usd=1, feature="shared")
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    runs: dict[str, bg.Run] = {}
    errors: list[BaseException] = []

    def worker(name: str, calls: int) -> None:
        try:
            with shared as run:
                runs[name] = run
                for _ in range(calls):
                    FakeChatModel(seed=calls).complete("gpt-4o-mini", MESSAGES, max_tokens=50)
                if name == "first":
                    first_in.set()
                    assert second_in.wait(5)
                else:
                    second_in.set()
                    assert first_out.wait(5)
            if name == "first":
                first_out.set()
        except BaseException as error:  # surfaced below, in the test's thread
            errors.append(error)
            first_in.set()
            second_in.set()
            first_out.set()

    first = threading.Thread(target=worker, args=("first", 2))
    first.start()
    assert first_in.wait(5)
    second = threading.Thread(target=worker, args=("second", 3))
    second.start()
    first.join(5)
    second.join(5)
    assert errors == []
    assert (runs["first"].calls, runs["second"].calls) == (2, 3)
    assert runs["first"].id != runs["second"].id


async def test_one_guard_object_entered_by_two_tasks_exiting_first_in_first_out() -> None:
    shared = bg.spend_limit(usd=1)
    first_in, second_in, first_out = asyncio.Event(), asyncio.Event(), asyncio.Event()
    model = FakeChatModel(seed=3)

    async def first() -> bg.Run:
        async with shared as run:
            await model.acomplete("gpt-4o-mini", MESSAGES, max_tokens=50)
            first_in.set()
            await second_in.wait()
        first_out.set()
        return run

    async def second() -> bg.Run:
        await first_in.wait()
        async with shared as run:
            second_in.set()
            await first_out.wait()
            await model.acomplete("gpt-4o-mini", MESSAGES, max_tokens=50)
            await model.acomplete("gpt-4o-mini", MESSAGES, max_tokens=50)
        return run

    one, two = await asyncio.wait_for(asyncio.gather(first(), second()), 5)
    assert (one.calls, two.calls) == (1, 2)


def test_leaving_a_guard_never_entered_here_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not entered"):
        bg.spend_limit(usd=1).__exit__(None, None, None)


def test_call_records_carry_decimal_dollars_beside_nanos() -> None:
    records: list[bg.CallRecord] = []
    bg.configure(listeners=[records.append])
    FakeChatModel(seed=2).complete("gpt-4o-mini", MESSAGES, max_tokens=40)
    (record,) = records
    assert record.cost > 0 and record.estimate >= record.cost
    assert record.cost_usd == bg.Money(record.cost).usd_amount
    assert record.estimate_usd == bg.Money(record.estimate).usd_amount
    assert isinstance(record.cost_usd, Decimal)
