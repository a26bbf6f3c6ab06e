"""instrument() on the real anthropic SDK clients, over HTTP, against the local fake provider."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from provider_support import configure_user_limit, genai_price, user

import budgetguard as bg
from budgetguard.testing import FakeProvider

anthropic = pytest.importorskip("anthropic")

OPUS, HAIKU = "claude-opus-4-5", "claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "Summarize the plot of Hamlet in one sentence."}]
LONG_TEXT = "word " * 200


@pytest.fixture(autouse=True)
def _policy(fake: FakeProvider) -> None:
    fake.clear()
    configure()


def configure(usd: float | str = 10, on_exceed: str = "raise", **extra: Any) -> None:
    configure_user_limit({OPUS: HAIKU}, usd, on_exceed, **extra)


def price(model: str, **usage: int) -> Decimal:
    return genai_price("anthropic", model, **usage)


@pytest.fixture
def client(fake: FakeProvider) -> Any:
    return bg.instrument(
        anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="test", max_retries=0)
    )


@pytest.fixture
def aclient(fake: FakeProvider) -> Any:
    return bg.instrument(
        anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key="test", max_retries=0)
    )


def script_cache(fake: FakeProvider, model: str = HAIKU) -> Decimal:
    """A reply with cache reads and writes (some for an hour, at a dearer rate):
    Anthropic's input_tokens excludes both."""
    counts = {
        "input_tokens": 3000,
        "cache_read_tokens": 2000,
        "cache_write_tokens": 500,
        "cache_write_1h_tokens": 200,
        "output_tokens": 250,
    }
    fake.reply(model=model, **counts)
    return price(model, **counts)


def test_create_settles_cache_reads_and_writes_exactly(fake: FakeProvider, client: Any) -> None:
    expected = script_cache(fake)
    with bg.spend_limit(usd=1, user="u1") as run:
        message = client.messages.create(model=HAIKU, max_tokens=300, messages=MESSAGES)
    assert message.usage.input_tokens == 500  # the wire shape: cache excluded
    assert run.spent == expected and run.calls == 1
    assert user().spent == expected and user().held == 0


async def test_async_create(fake: FakeProvider, aclient: Any) -> None:
    expected = script_cache(fake)
    async with bg.spend_limit(user="u1") as run:
        await aclient.messages.create(
            model=HAIKU, max_tokens=300, system="Be brief.", messages=MESSAGES
        )
    assert run.spent == expected
    assert user().held == 0


def test_instrumenting_twice_is_a_no_op(client: Any) -> None:
    create, stream = client.messages.create, client.messages.stream
    assert bg.instrument(client) is client
    assert client.messages.create is create and client.messages.stream is stream


def test_create_stream_settles_from_message_delta(fake: FakeProvider, client: Any) -> None:
    expected = script_cache(fake)
    with bg.spend_limit(user="u1") as run:
        stream = client.messages.create(model=HAIKU, max_tokens=300, messages=MESSAGES, stream=True)
        kinds = [event.type for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert run.spent == expected
    assert user().held == 0


async def test_async_create_stream(fake: FakeProvider, aclient: Any) -> None:
    expected = script_cache(fake)
    async with bg.spend_limit(user="u1") as run:
        stream = await aclient.messages.create(
            model=HAIKU, max_tokens=300, messages=MESSAGES, stream=True
        )
        async for _ in stream:
            pass
    assert run.spent == expected


def test_messages_stream_helper(fake: FakeProvider, client: Any) -> None:
    expected = script_cache(fake)
    with (
        bg.spend_limit(user="u1") as run,
        client.messages.stream(model=HAIKU, max_tokens=300, messages=MESSAGES) as stream,
    ):
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake provider."
    assert final.usage.output_tokens == 250
    assert run.spent == expected
    assert user().held == 0


async def test_async_messages_stream_helper(fake: FakeProvider, aclient: Any) -> None:
    expected = script_cache(fake)
    async with (
        bg.spend_limit(user="u1") as run,
        aclient.messages.stream(model=HAIKU, max_tokens=300, messages=MESSAGES) as stream,
    ):
        final = await stream.get_final_message()
    assert final.content[0].text == "Hello from the fake provider."
    assert run.spent == expected
    assert user().held == 0


def test_abandoned_stream_helper_charges_reported_input(fake: FakeProvider, client: Any) -> None:
    fake.reply(text=LONG_TEXT, input_tokens=40, output_tokens=200)
    with (
        bg.spend_limit(user="u1") as run,
        client.messages.stream(model=HAIKU, max_tokens=1000, messages=MESSAGES) as stream,
    ):
        held = user().held
        for _text in stream.text_stream:
            break
    # message_start reported the input, so at least that much is charged
    assert price(HAIKU, input_tokens=40) <= run.spent <= held
    assert user().held == 0


def test_abandoned_create_stream(fake: FakeProvider, client: Any) -> None:
    fake.reply(text=LONG_TEXT)
    with bg.spend_limit(user="u1") as run:
        stream = client.messages.create(
            model=HAIKU, max_tokens=1000, messages=MESSAGES, stream=True
        )
        held = user().held
        for _event in stream:
            break
        stream.close()
    assert 0 < run.spent <= held
    assert user().held == 0


async def test_async_abandoned_stream_helper(fake: FakeProvider, aclient: Any) -> None:
    fake.reply(text=LONG_TEXT)
    async with (
        bg.spend_limit(user="u1") as run,
        aclient.messages.stream(model=HAIKU, max_tokens=1000, messages=MESSAGES) as stream,
    ):
        held = user().held
        async for _event in stream:
            break
    assert 0 < run.spent <= held
    assert user().held == 0


def test_stream_cut_midway(fake: FakeProvider, client: Any) -> None:
    fake.reply(text=LONG_TEXT, cut_after=2)
    with bg.spend_limit(user="u1") as run:
        stream = client.messages.create(
            model=HAIKU, max_tokens=1000, messages=MESSAGES, stream=True
        )
        # anthropic lets the transport's error through (httpx's RemoteProtocolError)
        with pytest.raises(Exception, match="peer closed connection"):
            for _ in stream:
                pass
    assert run.spent > 0
    assert user().held == 0


def test_api_error_releases_the_hold(fake: FakeProvider, client: Any) -> None:
    fake.reply(status=500)
    with bg.spend_limit(user="u1") as run, pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=HAIKU, max_tokens=300, messages=MESSAGES)
    assert run.spent == 0
    assert user().held == 0 and user().spent == 0


async def test_async_stream_helper_error_releases_the_hold(
    fake: FakeProvider, aclient: Any
) -> None:
    fake.reply(status=529)
    async with bg.spend_limit(user="u1") as run:
        with pytest.raises(anthropic.APIStatusError):
            async with aclient.messages.stream(model=HAIKU, max_tokens=300, messages=MESSAGES):
                pass
    assert run.spent == 0
    assert user().held == 0 and user().spent == 0


def test_downgrade_sends_the_cheaper_model(fake: FakeProvider, client: Any) -> None:
    # opus's worst case for 2000 output tokens is ~$0.05, haiku's ~$0.01
    configure(usd="0.02", on_exceed="downgrade")
    with bg.spend_limit(user="u1"):
        message = client.messages.create(model=OPUS, max_tokens=2000, messages=MESSAGES)
    assert fake.requests[-1].body["model"] == HAIKU
    assert message.model == HAIKU


def test_downgrade_in_the_stream_helper(fake: FakeProvider, client: Any) -> None:
    configure(usd="0.02", on_exceed="downgrade")
    with (
        bg.spend_limit(user="u1"),
        client.messages.stream(model=OPUS, max_tokens=2000, messages=MESSAGES) as stream,
    ):
        stream.until_done()
    assert fake.requests[-1].body["model"] == HAIKU


async def test_async_raise_happens_before_any_request(fake: FakeProvider, aclient: Any) -> None:
    configure(usd="0.001", on_exceed="raise")
    async with bg.spend_limit(user="u1"):
        with pytest.raises(bg.BudgetExceeded):
            await aclient.messages.create(model=OPUS, max_tokens=2000, messages=MESSAGES)
    assert fake.requests == []


def test_raise_happens_before_any_request(fake: FakeProvider, client: Any) -> None:
    configure(usd="0.001", on_exceed="raise")
    with (
        bg.spend_limit(user="u1"),
        pytest.raises(bg.BudgetExceeded),
        client.messages.stream(model=OPUS, max_tokens=2000, messages=MESSAGES),
    ):
        pass
    assert fake.requests == []
    assert user().held == 0


def test_request_cap_raises_with_the_estimate(fake: FakeProvider, client: Any) -> None:
    configure(limits=[bg.Limit(scope="request", usd="0.005")])
    with pytest.raises(bg.BudgetExceeded) as caught:
        client.messages.create(model=OPUS, max_tokens=2000, messages=MESSAGES)
    assert caught.value.scope == "request"
    assert caught.value.requested > Decimal("0.005")
    assert str(caught.value.requested) in str(caught.value)
    assert fake.requests == []


def test_fields_sent_in_extra_body_are_estimated_as_sent(fake: FakeProvider, client: Any) -> None:
    # Newer API fields the SDK does not name yet go in extra_body: the hold must see them.
    schema = {"type": "json_schema", "schema": {"type": "object", "properties": {}}}
    seen: list[bg.CallRecord] = []
    bg.configure(listeners=[seen.append])
    with bg.spend_limit(user="u1"):
        client.messages.create(model=HAIKU, max_tokens=50, messages=MESSAGES)
        client.messages.create(
            model=HAIKU, max_tokens=50, messages=MESSAGES, extra_body={"output_format": schema}
        )
    plain, formatted = seen
    extra = bg.current().prices.rates(HAIKU).worst_case(420, 0, cache_write_tokens=0)
    assert formatted.estimate - plain.estimate >= extra  # the structured-output prompt
    assert fake.requests[-1].body["output_format"] == schema


def test_a_cap_in_extra_body_is_held_and_fitted_where_it_is_sent(
    fake: FakeProvider, client: Any
) -> None:
    # extra_body wins over the named argument on the wire: the hold is priced at its cap,
    # and a cap lowered to fit the budget goes there too.
    seen: list[bg.CallRecord] = []
    configure(usd="0.05", fit_output=True)
    bg.configure(listeners=[seen.append])
    big = {"max_tokens": 64_000}
    with bg.spend_limit(user="u1"):
        client.messages.create(model=HAIKU, max_tokens=50, messages=MESSAGES, extra_body=big)
    (record,) = seen
    assert record.outcome == "fitted"
    sent = fake.requests[-1].body["max_tokens"]
    assert sent == record.output_cap and 50 < sent < 64_000
    rates = bg.current().prices.rates(HAIKU)
    assert record.estimate > rates.worst_case(0, 50)  # not held at the named 50


def test_a_downgrade_rewrites_a_model_sent_in_extra_body(fake: FakeProvider, client: Any) -> None:
    configure(usd="0.02", on_exceed="downgrade")
    with bg.spend_limit(user="u1"):
        client.messages.create(
            model=HAIKU, max_tokens=2000, messages=MESSAGES, extra_body={"model": OPUS}
        )
    assert fake.requests[-1].body["model"] == HAIKU
