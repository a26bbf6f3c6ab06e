"""instrument() on the real openai SDK clients, over HTTP, against the local fake provider."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from provider_support import configure_user_limit, genai_price, user

import budgetguard as bg
from budgetguard.testing import FakeProvider

openai = pytest.importorskip("openai")

MESSAGES = [{"role": "user", "content": "Summarize the plot of Hamlet in one sentence."}]
LONG_TEXT = "word " * 200


@pytest.fixture(autouse=True)
def _policy(fake: FakeProvider) -> None:
    fake.clear()
    configure()


def configure(usd: float | str = 10, on_exceed: str = "raise", **extra: Any) -> None:
    configure_user_limit({"gpt-4o": "gpt-4o-mini"}, usd, on_exceed, **extra)


def price(model: str, **usage: int) -> Decimal:
    return genai_price("openai", model, **usage)


@pytest.fixture
def client(fake: FakeProvider) -> Any:
    return bg.instrument(
        openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)
    )


@pytest.fixture
def aclient(fake: FakeProvider) -> Any:
    return bg.instrument(
        openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)
    )


def script_cached_reasoning(fake: FakeProvider) -> Decimal:
    fake.reply(
        model="gpt-4o-2024-08-06",
        input_tokens=1200,
        cache_read_tokens=1024,
        output_tokens=300,
        reasoning_tokens=200,
    )
    return price("gpt-4o-2024-08-06", input_tokens=1200, cache_read_tokens=1024, output_tokens=300)


# -- plain calls ------------------------------------------------------------------------
def test_chat_settles_the_exact_cost_with_cached_and_reasoning_tokens(
    fake: FakeProvider, client: Any
) -> None:
    expected = script_cached_reasoning(fake)
    with bg.spend_limit(usd=1, user="u1") as run:
        response = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=300)
    assert response.choices[0].message.content == "Hello from the fake provider."
    assert run.spent == expected and run.calls == 1
    assert user().spent == expected
    assert user().held == 0


async def test_async_chat_settles_the_exact_cost(fake: FakeProvider, aclient: Any) -> None:
    expected = script_cached_reasoning(fake)
    async with bg.spend_limit(usd=1, user="u1") as run:
        await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=300)
    assert run.spent == expected
    assert user().held == 0


def test_responses_settles_the_exact_cost(fake: FakeProvider, client: Any) -> None:
    expected = script_cached_reasoning(fake)
    with bg.spend_limit(user="u1") as run:
        response = client.responses.create(
            model="gpt-4o", input="Hi", instructions="Be brief.", max_output_tokens=300
        )
    assert response.output_text == "Hello from the fake provider."
    assert run.spent == expected
    assert user().held == 0


async def test_async_responses_with_message_list(fake: FakeProvider, aclient: Any) -> None:
    expected = script_cached_reasoning(fake)
    async with bg.spend_limit(user="u1") as run:
        await aclient.responses.create(model="gpt-4o", input=MESSAGES, max_output_tokens=300)
    assert run.spent == expected


def test_instrumenting_twice_is_a_no_op(client: Any) -> None:
    create = client.chat.completions.create
    assert bg.instrument(client) is client
    assert client.chat.completions.create is create


def test_other_clients_stay_unguarded(fake: FakeProvider) -> None:
    configure(usd=0.000001)
    plain = openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)
    with bg.spend_limit(user="u1") as run:
        plain.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert run.calls == 0 and len(fake.requests) == 1


# -- streaming ------------------------------------------------------------------------------
def test_chat_stream_injects_include_usage_and_settles_from_the_final_chunk(
    fake: FakeProvider, client: Any
) -> None:
    expected = script_cached_reasoning(fake)
    with bg.spend_limit(user="u1") as run:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=300, stream=True
        )
        chunks = list(stream)
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    # the usage-only chunk the caller did not ask for is hidden from it
    assert all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == (
        "Hello from the fake provider."
    )
    assert run.spent == expected
    assert user().held == 0


def test_chat_stream_keeps_the_callers_own_usage_chunk(fake: FakeProvider, client: Any) -> None:
    expected = script_cached_reasoning(fake)
    with bg.spend_limit(user="u1") as run:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert chunks[-1].usage.prompt_tokens == 1200 and chunks[-1].choices == []
    assert run.spent == expected


async def test_async_chat_stream(fake: FakeProvider, aclient: Any) -> None:
    expected = script_cached_reasoning(fake)
    async with bg.spend_limit(user="u1") as run:
        stream = await aclient.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=300, stream=True
        )
        async for _ in stream:
            pass
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    assert run.spent == expected
    assert user().held == 0


def test_responses_stream_settles_from_response_completed(fake: FakeProvider, client: Any) -> None:
    expected = script_cached_reasoning(fake)
    with (
        bg.spend_limit(user="u1") as run,
        client.responses.create(model="gpt-4o", input="Hi", stream=True) as stream,
    ):
        kinds = [event.type for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert run.spent == expected
    assert user().held == 0


async def test_async_responses_stream(fake: FakeProvider, aclient: Any) -> None:
    expected = script_cached_reasoning(fake)
    async with bg.spend_limit(user="u1") as run:
        stream = await aclient.responses.create(model="gpt-4o", input="Hi", stream=True)
        async with stream:
            async for _ in stream:
                pass
    assert run.spent == expected


def test_abandoned_stream_charges_what_was_consumed(fake: FakeProvider, client: Any) -> None:
    fake.reply(text=LONG_TEXT, output_tokens=200)
    with bg.spend_limit(user="u1") as run:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=500, stream=True
        )
        held = user().held
        for _chunk in stream:
            break
        stream.close()
    assert held > 0
    assert 0 < run.spent <= held
    assert user().held == 0 and user().spent == run.spent


def test_stream_dropped_without_close_settles_when_collected(
    fake: FakeProvider, client: Any
) -> None:
    import gc

    fake.reply(text=LONG_TEXT)
    with bg.spend_limit(user="u1") as run:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=500, stream=True
        )
        next(iter(stream))
        del stream
        gc.collect()
    assert run.spent > 0
    assert user().held == 0


async def test_async_abandoned_stream(fake: FakeProvider, aclient: Any) -> None:
    fake.reply(text=LONG_TEXT, output_tokens=200)
    async with bg.spend_limit(user="u1") as run:
        stream = await aclient.responses.create(
            model="gpt-4o", input="Hi", max_output_tokens=500, stream=True
        )
        held = user().held
        async for _event in stream:
            break
        await stream.close()
    assert 0 < run.spent <= held
    assert user().held == 0


def test_stream_cut_midway_charges_consumed_and_reraises(fake: FakeProvider, client: Any) -> None:
    fake.reply(text=LONG_TEXT, cut_after=3)
    with bg.spend_limit(user="u1") as run:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=500, stream=True
        )
        held = user().held
        with pytest.raises(openai.APIConnectionError):
            for _ in stream:
                pass
    assert 0 < run.spent <= held
    assert user().held == 0


# -- errors and policies ----------------------------------------------------------------------
def test_api_error_releases_the_hold_and_reraises(fake: FakeProvider, client: Any) -> None:
    fake.reply(status=500)
    with bg.spend_limit(user="u1") as run, pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert run.spent == 0
    assert user().held == 0 and user().spent == 0


async def test_async_api_error_releases_the_hold(fake: FakeProvider, aclient: Any) -> None:
    fake.reply(status=429)
    async with bg.spend_limit(user="u1") as run:
        with pytest.raises(openai.RateLimitError):
            await aclient.responses.create(model="gpt-4o", input="Hi")
    assert run.spent == 0
    assert user().held == 0 and user().spent == 0


def test_stream_rejected_before_any_output_releases(fake: FakeProvider, client: Any) -> None:
    fake.reply(status=400)
    with bg.spend_limit(user="u1"), pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert user().held == 0 and user().spent == 0


def test_downgrade_sends_the_cheaper_model(fake: FakeProvider, client: Any) -> None:
    # gpt-4o's worst case for 1000 output tokens is ~$0.01; gpt-4o-mini's ~$0.0006
    configure(usd=0.005, on_exceed="downgrade")
    with bg.spend_limit(user="u1") as run:
        response = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=1000
        )
    assert fake.requests[-1].body["model"] == "gpt-4o-mini"
    assert response.model == "gpt-4o-mini"
    assert run.spent == price("gpt-4o-mini", input_tokens=20, output_tokens=10)


async def test_async_downgrade(fake: FakeProvider, aclient: Any) -> None:
    configure(usd=0.005, on_exceed="downgrade")
    async with bg.spend_limit(user="u1"):
        stream = await aclient.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=1000, stream=True
        )
        async for _ in stream:
            pass
    assert fake.requests[-1].body["model"] == "gpt-4o-mini"


def test_raise_happens_before_any_request(fake: FakeProvider, client: Any) -> None:
    configure(usd=0.001, on_exceed="raise")
    with bg.spend_limit(user="u1"), pytest.raises(bg.BudgetExceeded) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1000)
    assert fake.requests == []
    assert caught.value.scope == "user"
    assert user().held == 0


async def test_async_raise_happens_before_any_request(fake: FakeProvider, aclient: Any) -> None:
    configure(usd=0.001, on_exceed="raise")
    async with bg.spend_limit(user="u1"):
        with pytest.raises(bg.BudgetExceeded):
            await aclient.responses.create(model="gpt-4o", input="Hi", max_output_tokens=1000)
    assert fake.requests == []


def test_request_cap_raises_with_the_estimate(fake: FakeProvider, client: Any) -> None:
    configure(limits=[bg.Limit(scope="request", usd="0.002")])
    with pytest.raises(bg.BudgetExceeded) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1000)
    error = caught.value
    assert error.scope == "request"
    assert error.requested > Decimal("0.002")
    assert str(error.requested) in str(error)
    assert fake.requests == []


def test_chat_stream_helper_goes_through_the_guard(fake: FakeProvider, client: Any) -> None:
    expected = script_cached_reasoning(fake)
    with (
        bg.spend_limit(user="u1") as run,
        client.chat.completions.stream(model="gpt-4o", messages=MESSAGES, max_tokens=300) as s,
    ):
        s.until_done()
        final = s.get_final_completion()
    assert final.choices[0].message.content == "Hello from the fake provider."
    assert run.spent == expected
    assert user().held == 0


def test_stream_helpers_settle_when_their_block_ends_early(fake: FakeProvider, client: Any) -> None:
    """The helpers close the HTTP response, not our stream: that must settle too."""
    opened = (
        lambda: client.responses.stream(model="gpt-4o", input="Summarize Hamlet."),
        lambda: client.chat.completions.stream(model="gpt-4o", messages=MESSAGES, max_tokens=500),
    )
    for open_stream in opened:
        fake.reply(text=LONG_TEXT, output_tokens=200)
        with bg.spend_limit(user="u1") as run:
            with open_stream() as stream:
                held = user().held
                for _event in stream:
                    break
            assert user().held == 0  # settled as the helper's block ended, not at collection
        assert held > 0
        assert 0 < run.spent <= held and run.calls == 1


async def test_async_stream_helper_settles_when_its_block_ends_early(
    fake: FakeProvider, aclient: Any
) -> None:
    fake.reply(text=LONG_TEXT, output_tokens=200)
    async with bg.spend_limit(user="u1") as run:
        async with aclient.responses.stream(model="gpt-4o", input="Summarize Hamlet.") as stream:
            async for _event in stream:
                break
        assert user().held == 0
    assert run.spent > 0 and run.calls == 1


def test_records_name_the_provider_the_call_was_priced_under(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    """Listeners (OpenTelemetry's gen_ai.provider.name) read the provider off the record,
    for a settled call and for a refused one."""
    fake.reply(input_tokens=10, output_tokens=5)
    with bg.spend_limit(tenant="acme"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=10)
    assert (records[-1].outcome, records[-1].provider) == ("ok", "openai")
    with bg.spend_limit(tenant="acme", usd="0.0000001"), pytest.raises(bg.BudgetExceeded):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=10)
    assert (records[-1].outcome, records[-1].provider) == ("denied", "openai")
