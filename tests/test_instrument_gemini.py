"""instrument() on the real google-genai client, over HTTP, against the local fake (Gemini's
wire format): generate, stream, embed, chats, automatic function calling, sync and async.
Every cost is checked against genai-prices on the usage the fake served, to the nano-dollar."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from provider_support import genai_cost

import budgetguard as bg
from budgetguard._core.usage import UsageDetails
from budgetguard.testing import FakeProvider

genai = pytest.importorskip("google.genai")


@pytest.fixture
def client(fake: FakeProvider) -> Any:
    return bg.instrument(genai.Client(api_key="t", http_options={"base_url": fake.url}))


def spent() -> Decimal:
    return bg.status("tenant", "acme").spent


RICH = {
    "model": "gemini-2.5-flash",
    "input_tokens": 1_000,
    "tool_use_prompt_tokens": 70,
    "cache_read_tokens": 400,
    "cache_audio_read_tokens": 100,
    "input_audio_tokens": 200,
    "input_image_tokens": 50,
    "output_tokens": 300,
    "reasoning_tokens": 120,
    "output_audio_tokens": 30,
    "web_searches": 2,
}


def test_generate_content_is_charged_exactly(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    """Gemini used to be unsupported: instrument() raised, @budget charged $0 silently."""
    fake.reply(**RICH)
    with bg.spend_limit(tenant="acme"):
        response = client.models.generate_content(
            model="gemini-2.5-flash",
            contents="hello",
            config={"system_instruction": "be brief", "max_output_tokens": 400},
        )
    assert response.text
    (record,) = records
    assert record.usage == bg.Usage(
        input_tokens=1_000,
        output_tokens=300,
        cache_read_tokens=400,
        reasoning_tokens=120,
        details=UsageDetails(
            input_audio_tokens=200,
            input_image_tokens=50,
            cache_audio_read_tokens=100,
            output_audio_tokens=30,
            web_searches=1,  # one grounded prompt
        ),
    )
    assert record.cost == genai_cost("gemini-2.5-flash", record.usage, provider="google") > 0
    assert spent() == record.cost_usd


def test_a_call_that_does_not_fit_sends_nothing(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd="0.0001", window="day")]))
    with bg.spend_limit(tenant="acme"), pytest.raises(bg.BudgetExceeded):
        client.models.generate_content(
            model="gemini-2.5-pro", contents="hi", config={"max_output_tokens": 2_000}
        )
    assert fake.requests == []


async def test_async_generate_and_stream(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    fake.reply(model="gemini-2.5-flash", input_tokens=90, output_tokens=15)
    fake.reply(model="gemini-2.5-flash", text="a b c d", input_tokens=80, output_tokens=12)
    async with bg.spend_limit(tenant="acme"):
        await client.aio.models.generate_content(model="gemini-2.5-flash", contents="hi")
        pieces = [
            chunk.text
            async for chunk in await client.aio.models.generate_content_stream(
                model="gemini-2.5-flash", contents="hi"
            )
        ]
    assert "".join(pieces) == "a b c d"
    assert [r.usage for r in records] == [
        bg.Usage(input_tokens=90, output_tokens=15),
        bg.Usage(input_tokens=80, output_tokens=12),  # the last chunk's running total
    ]
    assert all(r.cost == genai_cost("gemini-2.5-flash", r.usage) for r in records if r.usage)


def test_a_stream_is_settled_from_its_last_chunk_or_what_it_consumed(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    fake.reply(text="one two three four", input_tokens=60, output_tokens=8)
    fake.reply(text="one two three four five six", input_tokens=60, output_tokens=60)
    with bg.spend_limit(tenant="acme"):
        assert (
            len(list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="x")))
            == 4
        )
        stream = client.models.generate_content_stream(
            model="gemini-2.5-flash", contents="x", config={"max_output_tokens": 100}
        )
        next(iter(stream))
        stream.close()  # abandoned after one chunk: charged what it consumed
    full, partial = records
    assert full.usage == bg.Usage(input_tokens=60, output_tokens=8)
    assert partial.usage is not None and 0 < partial.cost <= partial.estimate
    assert bg.status("tenant", "acme").held == 0


def test_a_stream_that_fails_before_its_first_chunk_releases(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    fake.reply(status=429)
    errors = pytest.importorskip("google.genai.errors")
    with bg.spend_limit(tenant="acme"), pytest.raises(errors.ClientError):
        for _ in client.models.generate_content_stream(model="gemini-2.5-flash", contents="x"):
            pass
    (record,) = records
    assert record.outcome == "error" and record.cost == 0
    assert bg.status("tenant", "acme").held == 0


def test_embeddings_are_charged_their_input_tokens(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    fake.reply(input_tokens=6)
    with bg.spend_limit(tenant="acme"):
        result = client.models.embed_content(model="gemini-embedding-001", contents=["a b", "c"])
    assert len(result.embeddings) == 2
    (record,) = records
    assert record.usage == bg.Usage(input_tokens=6)
    assert record.cost == genai_cost("gemini-embedding-001", record.usage, provider="google") > 0


async def test_count_tokens_is_free_and_untouched(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    fake.reply(input_tokens=42)
    fake.reply(input_tokens=43)
    with bg.spend_limit(tenant="acme", usd="0.000000001"):  # nothing would fit
        counted = client.models.count_tokens(model="gemini-2.5-pro", contents="hi")
        counted_async = await client.aio.models.count_tokens(model="gemini-2.5-pro", contents="hi")
    assert (counted.total_tokens, counted_async.total_tokens) == (42, 43)
    assert records == [] and len(fake.requests) == 2


def test_chats_and_automatic_function_calling_charge_every_request(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    """Automatic function calling makes one HTTP request per step; the public method only
    returns the last one's usage. Each request is guarded on its own."""

    def get_weather(city: str) -> str:
        """The weather in ``city``."""
        return "sunny"

    fake.reply(tool_call="get_weather", input_tokens=100, output_tokens=10)
    fake.reply(text="It is sunny.", input_tokens=130, output_tokens=3)
    with bg.spend_limit(tenant="acme"):
        answer = client.models.generate_content(
            model="gemini-2.5-flash", contents="weather?", config={"tools": [get_weather]}
        )
        assert answer.text == "It is sunny."
        chat = client.chats.create(model="gemini-2.5-flash")
        fake.reply(input_tokens=40, output_tokens=5)
        fake.reply(input_tokens=60, output_tokens=6)
        chat.send_message("hi")
        chat.send_message("again")
    assert [r.usage.input_tokens for r in records if r.usage] == [100, 130, 40, 60]
    assert spent() == sum(r.cost_usd for r in records)


def test_the_requested_service_tier_sets_the_price(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    model = "gemini-4-argon"
    fake.reply(model=model, input_tokens=1_000, output_tokens=1_000)
    with bg.spend_limit(tenant="acme"):
        client.models.generate_content(
            model=model, contents="x", config={"service_tier": "flex", "max_output_tokens": 1_000}
        )
    (record,) = records
    assert record.usage is not None
    flex = genai_cost(model, record.usage, provider="google", context={"service_tier": "flex"})
    assert record.cost == flex < genai_cost(model, record.usage, provider="google")


def test_the_200k_tier_of_gemini_2_5_pro(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord]
) -> None:
    fake.reply(model="gemini-2.5-pro", input_tokens=250_000, output_tokens=2_000)
    with bg.spend_limit(tenant="acme"):
        client.models.generate_content(
            model="gemini-2.5-pro", contents="x", config={"max_output_tokens": 3_000}
        )
    (record,) = records
    assert record.usage is not None
    assert record.cost == genai_cost("gemini-2.5-pro", record.usage, provider="google")


@pytest.mark.parametrize(
    "usage",
    [
        {"promptTokenCount": -5, "candidatesTokenCount": 3},
        {"candidatesTokenCount": 3},
        {"promptTokenCount": 5, "candidatesTokenCount": 3, "cachedContentTokenCount": 9},
    ],
)
def test_a_bad_usage_keeps_the_response_and_charges_the_reservation(
    fake: FakeProvider, client: Any, records: list[bg.CallRecord], usage: dict[str, Any]
) -> None:
    fake.reply(text="kept", raw_usage=usage)
    with bg.spend_limit(tenant="acme"):
        response = client.models.generate_content(
            model="gemini-2.5-flash", contents="x", config={"max_output_tokens": 50}
        )
    assert response.text == "kept"
    (record,) = records
    assert record.outcome == "unpriced" and record.cost == record.estimate > 0
    assert bg.status("tenant", "acme").held == 0


def test_sixteen_threads_never_spend_past_a_gemini_budget(fake: FakeProvider, client: Any) -> None:
    limit = Decimal("0.002")
    bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd=limit, window="day")]))
    # What Gemini bills for this prompt: within the estimate, so the budget holds exactly.
    fake.default = fake.default.__class__(input_tokens=4, output_tokens=150)
    billed: list[Decimal] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            try:
                with bg.spend_limit(tenant="acme") as run:
                    client.models.generate_content(
                        model="gemini-2.5-flash",
                        contents="summarise this",
                        config={"max_output_tokens": 150},
                    )
                with lock:
                    billed.append(run.spent)
            except bg.BudgetExceeded:
                pass

    threads = [threading.Thread(target=worker) for _ in range(16)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        fake.default = fake.default.__class__()
    status = bg.status("tenant", "acme")
    assert status.spent == sum(billed) <= limit
    assert status.held == 0
    assert len(billed) == 5  # every call that fits: 5 x $0.0003762 of $0.002


def test_an_uninstrumented_gemini_response_is_charged_after_the_fact(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    """@budget around a Gemini call used to charge $0 with no warning."""
    plain = genai.Client(api_key="t", http_options={"base_url": fake.url})
    fake.reply(model="gemini-2.5-flash", input_tokens=500, output_tokens=80)

    @bg.budget(tenant="acme")
    def ask() -> Any:
        return plain.models.generate_content(model="gemini-2.5-flash", contents="x")

    ask()
    (record,) = records
    assert record.usage == bg.Usage(input_tokens=500, output_tokens=80)
    assert record.cost == genai_cost("gemini-2.5-flash", record.usage) > 0
    assert spent() == record.cost_usd
