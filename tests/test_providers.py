"""Issue 12 on the real openai and anthropic SDKs against the local fake: OpenAI-compatible
providers, Azure deployments, embeddings, copies, raw responses, service tiers, audio and
web-search fees, free models, and what is not guarded. Every cost is checked against
genai-prices on the usage the fake served, to the nano-dollar."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest
from provider_support import genai_cost

import budgetguard as bg
from budgetguard._core.usage import UsageDetails
from budgetguard.providers.routes import provider_for_url, route_for
from budgetguard.testing import FakeProvider

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

MESSAGES = [{"role": "user", "content": "Say hello."}]


def oai(fake: FakeProvider, **options: Any) -> Any:
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="t", max_retries=0)
    return bg.instrument(client, **options)


def spent() -> Decimal:
    return bg.status("tenant", "acme").spent


# -- OpenAI-compatible providers ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "provider"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://myres.openai.azure.com/openai/", "azure"),
        ("https://openrouter.ai/api/v1", "openrouter"),
        ("https://api.groq.com/openai/v1", "groq"),
        ("https://api.deepseek.com/v1", "deepseek"),
        ("https://api.x.ai/v1", "x-ai"),
        ("https://api.together.xyz/v1", "together"),
        ("https://api.mistral.ai/v1", "mistral"),
        ("https://api.fireworks.ai/inference/v1", "fireworks"),
        ("https://generativelanguage.googleapis.com/v1beta/openai/", "google"),
        ("http://localhost:8000/v1", None),
        ("http://127.0.0.1:11434/v1", None),
    ],
)
def test_the_provider_comes_from_the_base_url(url: str, provider: str | None) -> None:
    assert provider_for_url(url) == provider
    client = openai.OpenAI(base_url=url, api_key="t")
    assert route_for(client, None, None).provider == provider
    assert route_for(client, "openrouter", None).provider == "openrouter"  # naming it wins


def test_bedrock_and_vertex_clients_price_at_their_hosts_rates() -> None:
    book = bg.current().prices
    bedrock = anthropic.AnthropicBedrock(
        aws_region="us-east-1", aws_access_key="a", aws_secret_key="b"
    )
    vertex = anthropic.AnthropicVertex(region="us-east5", project_id="p", access_token="t")
    bedrock_route, vertex_route = route_for(bedrock, None, None), route_for(vertex, None, None)
    assert (bedrock_route.provider, vertex_route.provider) == ("aws", "google")
    bg.instrument(bedrock)
    with pytest.raises(bg.BudgetExceeded), bg.spend_limit(usd="0.001"):  # refused, never sent
        bedrock.messages.create(
            model="us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            max_tokens=1_000,
            messages=[{"role": "user", "content": "hi"}],
        )
    # Bedrock's regional endpoints charge 10 % over Anthropic's own price.
    regional = book.rates("us.anthropic.claude-sonnet-4-5-20250929-v1:0", bedrock_route.provider)
    direct = book.rates("claude-sonnet-4-5", "anthropic")
    usage = bg.Usage(input_tokens=100_000, output_tokens=1_000)
    assert regional.provider == "aws" and regional.cost(usage) == direct.cost(usage) * 11 // 10
    assert book.rates("claude-sonnet-4-5@20250929", vertex_route.provider).provider == "google"


def test_an_unknown_provider_or_a_bad_alias_is_refused() -> None:
    client = openai.OpenAI(base_url="http://localhost:1/v1", api_key="t")
    with pytest.raises(bg.ConfigurationError, match="unknown provider 'openrouterr'"):
        bg.instrument(client, provider="openrouterr")
    with pytest.raises(bg.ConfigurationError, match="models"):
        bg.instrument(client, models={"prod-chat": ""})


@pytest.mark.parametrize(
    "model",
    ["anthropic/claude-sonnet-4.5", "google/gemini-2.5-flash", "meta-llama/llama-3.3-70b-instruct"],
)
def test_openrouter_models_are_priced_at_openrouter(
    fake: FakeProvider, records: list[bg.CallRecord], model: str
) -> None:
    """An OpenAI client on OpenRouter used to refuse these as UnknownModel."""
    client = oai(fake, provider="openrouter")
    fake.reply(input_tokens=1_200, output_tokens=300, cache_read_tokens=200)
    with bg.spend_limit(tenant="acme"):
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=400)
    (record,) = records
    assert record.usage is not None
    assert record.cost == genai_cost(model, record.usage, provider="openrouter") > 0
    assert spent() == record.cost_usd


def test_azure_deployments_are_priced_as_the_models_they_map_to(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    azure = openai.AzureOpenAI(
        azure_endpoint=fake.url, api_key="t", api_version="2024-10-21", max_retries=0
    )
    client = bg.instrument(azure, provider="azure", models={"prod-chat": "gpt-4o"})
    fake.reply(model="gpt-4o-2024-08-06", input_tokens=800, output_tokens=120)
    with bg.spend_limit(tenant="acme"):
        client.chat.completions.create(model="prod-chat", messages=MESSAGES, max_tokens=200)
    assert fake.requests[-1].path.endswith("/openai/deployments/prod-chat/chat/completions")
    (record,) = records
    assert record.requested_model == "prod-chat" and record.model == "gpt-4o-2024-08-06"
    assert record.usage is not None
    assert record.cost == genai_cost("gpt-4o-2024-08-06", record.usage, provider="azure")
    copy = client.with_options(timeout=5)  # a copy keeps its client's route
    with bg.spend_limit(tenant="acme"):
        copy.chat.completions.create(model="prod-chat", messages=MESSAGES, max_tokens=10)
    unmapped = bg.instrument(
        openai.AzureOpenAI(azure_endpoint=fake.url, api_key="t", api_version="2024-10-21"),
        provider="azure",
    )
    with bg.spend_limit(tenant="acme"), pytest.raises(bg.UnknownModel, match="prod-chat"):
        unmapped.chat.completions.create(model="prod-chat", messages=MESSAGES, max_tokens=10)


def test_configured_providers_win_over_the_clients(fake: FakeProvider) -> None:
    """configure(providers=...) used to be ignored for instrumented clients."""
    bg.configure(providers={"gpt-4o-mini": "azure"})
    rates = bg.current().prices.rates("gpt-4o-mini", "openai")
    assert rates.provider == "azure"


# -- embeddings, copies, raw responses ----------------------------------------------


def test_embeddings_are_charged_their_input_tokens(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    client = oai(fake)
    fake.reply(input_tokens=3)  # what OpenAI counts for these two inputs
    with bg.spend_limit(tenant="acme"):
        result = client.embeddings.create(model="text-embedding-3-small", input=["a", "b c"])
    assert len(result.data) == 2
    (record,) = records
    assert record.usage == bg.Usage(input_tokens=3)
    assert record.cost == genai_cost("text-embedding-3-small", record.usage, provider="openai")
    assert record.estimate >= record.cost > 0  # was not guarded at all: $0, silently


def test_copies_of_a_client_stay_guarded(fake: FakeProvider, records: list[bg.CallRecord]) -> None:
    client = oai(fake)
    copies = [client.with_options(timeout=10), client.copy(max_retries=0)]
    for copy in copies:
        with bg.spend_limit(tenant="acme"):
            copy.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert len(records) == 2 and all(r.cost > 0 for r in records)
    bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd="0.000001", window="day")]))
    with bg.spend_limit(tenant="acme"), pytest.raises(bg.BudgetExceeded):
        copies[0].with_options(timeout=5).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=20
        )


def test_raw_responses_are_guarded_and_settled_from_their_body(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    early = openai.OpenAI(base_url=fake.openai_base_url, api_key="t", max_retries=0)
    early.chat.completions.with_raw_response  # noqa: B018 - cached before instrument()
    client = bg.instrument(early)
    fake.reply(model="gpt-4o-mini", input_tokens=50, output_tokens=7)
    with bg.spend_limit(tenant="acme"):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=20
        )
    assert raw.headers.get("x-request-id")
    assert raw.parse().usage.prompt_tokens == 50
    (record,) = records
    assert record.usage == bg.Usage(input_tokens=50, output_tokens=7)
    assert record.cost == genai_cost("gpt-4o-mini", record.usage, provider="openai")
    assert record.estimate < 40_000  # the real usage, not the 720x worst case


def test_a_raw_stream_is_metered(fake: FakeProvider, records: list[bg.CallRecord]) -> None:
    client = oai(fake)
    fake.reply(text="one two three", input_tokens=40, output_tokens=3)
    with bg.spend_limit(tenant="acme"):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=20, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse())
    assert text == "one two three"
    (record,) = records
    assert record.usage == bg.Usage(input_tokens=40, output_tokens=3)


def test_a_streaming_response_settles_when_parsed_or_closed(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    client = oai(fake)
    fake.reply(input_tokens=30, output_tokens=5)
    with (
        bg.spend_limit(tenant="acme"),
        client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=20
        ) as response,
    ):
        assert response.parse().usage.completion_tokens == 5
    fake.reply(input_tokens=30, output_tokens=5)
    with (
        bg.spend_limit(tenant="acme"),
        client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=20
        ) as response,
    ):
        assert b"chat.completion" in response.read()  # read raw: no usage seen
    first, second = records
    assert first.outcome == "ok" and first.usage == bg.Usage(input_tokens=30, output_tokens=5)
    assert second.outcome == "unpriced" and second.cost == second.estimate > 0
    assert bg.status("tenant", "acme").held == 0


async def test_async_raw_and_streaming_responses(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    client = bg.instrument(
        openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="t", max_retries=0)
    )
    fake.reply(input_tokens=21, output_tokens=4)
    fake.reply(input_tokens=22, output_tokens=5)
    async with bg.spend_limit(tenant="acme"):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=20
        )
        raw.parse()
        async with client.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=20
        ) as response:
            await response.parse()
    assert [r.usage.input_tokens for r in records if r.usage] == [21, 22]


def test_what_is_not_guarded_says_so_once(fake: FakeProvider, caplog: Any) -> None:
    client = oai(fake)
    for _ in range(2):
        with pytest.raises(openai.NotFoundError):  # the fake has no images endpoint
            client.images.generate(model="gpt-image-1", prompt="a cat")
    warnings = [r for r in caplog.records if "images.generate is not guarded" in r.getMessage()]
    assert len(warnings) == 1


# -- rates: service tiers, audio, web searches, free models -----------------------------


@pytest.mark.parametrize(("asked", "billed"), [("flex", "flex"), (None, "priority")])
def test_service_tiers_are_priced_at_their_rates(
    fake: FakeProvider, records: list[bg.CallRecord], asked: str | None, billed: str
) -> None:
    """priority used to be charged at standard (50% under), flex at standard (2x over)."""
    client = oai(fake)
    fake.reply(model="gpt-5", input_tokens=2_000, output_tokens=1_000, service_tier=billed)
    options = {"service_tier": asked} if asked else {}
    with bg.spend_limit(tenant="acme"):
        client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, max_completion_tokens=1_500, **options
        )
    (record,) = records
    assert record.usage is not None and record.usage.context == (("service_tier", billed),)
    standard = genai_cost("gpt-5", bg.Usage(input_tokens=2_000, output_tokens=1_000))
    assert record.cost == genai_cost("gpt-5", record.usage, provider="openai") != standard


def test_audio_tokens_are_priced_as_audio(fake: FakeProvider, records: list[bg.CallRecord]) -> None:
    client = oai(fake)
    fake.reply(
        model="gpt-audio",
        input_tokens=1_000,
        input_audio_tokens=800,
        output_tokens=500,
        output_audio_tokens=400,
    )
    with bg.spend_limit(tenant="acme"):
        client.chat.completions.create(model="gpt-audio", messages=MESSAGES, max_tokens=600)
    (record,) = records
    assert record.usage is not None
    assert record.usage.details == UsageDetails(input_audio_tokens=800, output_audio_tokens=400)
    text_only = bg.Usage(input_tokens=1_000, output_tokens=500)
    assert record.cost == genai_cost("gpt-audio", record.usage, provider="openai")
    assert record.cost > 3 * genai_cost("gpt-audio", text_only, provider="openai")


def test_anthropic_web_searches_are_charged(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    """3 searches on a $0.0495 call used to be dropped: the bill is $0.0795."""
    client = bg.instrument(anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="t"))
    fake.reply(model="claude-sonnet-4-5", input_tokens=10_000, output_tokens=1_300, web_searches=3)
    with bg.spend_limit(tenant="acme"):
        client.messages.create(model="claude-sonnet-4-5", messages=MESSAGES, max_tokens=2_000)
    (record,) = records
    assert record.usage is not None and record.usage.details == UsageDetails(web_searches=3)
    assert record.cost_usd == Decimal("0.0795")
    assert record.cost == genai_cost("claude-sonnet-4-5", record.usage, provider="anthropic")


def test_responses_web_search_calls_are_charged(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    client = oai(fake)
    fake.reply(model="gpt-5", input_tokens=500, output_tokens=200, web_searches=2)
    with bg.spend_limit(tenant="acme"):
        client.responses.create(model="gpt-5", input="news?", max_output_tokens=300)
    (record,) = records
    assert record.usage is not None and record.usage.details == UsageDetails(web_searches=2)
    assert record.cost == genai_cost("gpt-5", record.usage, provider="openai")


def test_anthropic_beta_messages_are_guarded(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    client = bg.instrument(anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="t"))
    fake.reply(model="claude-haiku-4-5", input_tokens=90, output_tokens=12)
    with bg.spend_limit(tenant="acme"):
        client.beta.messages.create(model="claude-haiku-4-5", messages=MESSAGES, max_tokens=50)
    (record,) = records
    assert record.usage is not None
    assert record.cost == genai_cost("claude-haiku-4-5", record.usage, provider="anthropic") > 0


def test_free_models_cost_nothing_said_once_or_are_refused(
    fake: FakeProvider, records: list[bg.CallRecord], caplog: Any
) -> None:
    client = oai(fake, provider="openrouter")
    model = "meta-llama/llama-3.3-70b-instruct:free"
    with caplog.at_level(logging.WARNING, "budgetguard"), bg.spend_limit(tenant="acme"):
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=10)
    assert records[0].cost == 0 and "priced $0 as free" in caplog.text
    bg.configure(free_models="refuse")
    with bg.spend_limit(tenant="acme"), pytest.raises(bg.UnknownModel, match="free"):
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=10)
