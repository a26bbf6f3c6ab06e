"""BudgetedModel: pydantic-ai agents over HTTP, against the local fake provider.

The real pydantic-ai package drives its real OpenAI chat, OpenAI Responses and
Anthropic models at ``FakeProvider`` on 127.0.0.1; budgetguard's charge must be
genai-prices' price of what the fake served, to the nano-dollar.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast

import pytest
from provider_support import genai_cost, genai_price
from test_images import png
from test_media import pdf

import budgetguard as bg
from budgetguard.testing import FakeProvider, Reply

pytest.importorskip("pydantic_ai")
pytest.importorskip("openai")
pytest.importorskip("anthropic")

import openai
from pydantic import BaseModel
from pydantic_ai import Agent, ModelRequest, NativeOutput, RunContext
from pydantic_ai.exceptions import ModelHTTPError, UnexpectedModelBehavior
from pydantic_ai.messages import (
    BinaryContent,
    ModelMessage,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.models.concurrency import ConcurrencyLimitedModel
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.anthropic import AnthropicProvider
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings
from pydantic_ai.usage import RequestUsage

from budgetguard.integrations.pydantic_ai import BudgetedModel
from budgetguard.providers import anthropic, openai_chat, openai_responses

LONG_PROMPT = "Summarise the following ticket for the on-call engineer. " + "word " * 150
"""About 160 tokens: the fake's scripted input (100) stays below the estimate."""
SMALL: ModelSettings = {"max_tokens": 50}
SMALL_RUN: dict[str, Any] = {"model_settings": SMALL}


def chat_model(fake: FakeProvider, name: str = "gpt-4o") -> OpenAIChatModel:
    provider = OpenAIProvider(base_url=fake.openai_base_url, api_key="test")
    return OpenAIChatModel(name, provider=provider)


def responses_model(fake: FakeProvider, name: str = "gpt-4o") -> OpenAIResponsesModel:
    provider = OpenAIProvider(base_url=fake.openai_base_url, api_key="test")
    return OpenAIResponsesModel(name, provider=provider)


def claude_model(fake: FakeProvider, name: str = "claude-sonnet-4-6") -> AnthropicModel:
    provider = AnthropicProvider(base_url=fake.anthropic_base_url, api_key="test")
    return AnthropicModel(name, provider=provider)


def no_retries(model: Model) -> Model:
    """The SDKs retry a 5xx twice by default: the fake should see each request once."""
    client = getattr(model, "client", None)
    if client is not None:
        client.max_retries = 0
    return model


def tenant() -> bg.BudgetStatus:
    return bg.status("tenant", "acme")


# -- settled from the served usage, to the nano-dollar ---------------------------------------
MAKERS: dict[str, tuple[Callable[[FakeProvider], Model], str, str]] = {
    "openai-chat": (chat_model, "openai", "gpt-4o-2024-08-06"),
    "openai-responses": (responses_model, "openai", "gpt-4o-2024-08-06"),
    "anthropic": (claude_model, "anthropic", "claude-sonnet-4-6"),
}
SERVED = {
    "openai": {"input_tokens": 1_200, "cache_read_tokens": 1_024, "output_tokens": 300},
    "anthropic": {
        "input_tokens": 3_200,
        "cache_read_tokens": 2_000,
        "cache_write_tokens": 800,
        "cache_write_1h_tokens": 300,
        "output_tokens": 150,
    },
}


@pytest.mark.parametrize("wire", sorted(MAKERS))
@pytest.mark.parametrize("streamed", [False, True], ids=["run_sync", "run_stream"])
def test_a_run_is_charged_what_the_fake_served(
    fake: FakeProvider, records: list[bg.CallRecord], wire: str, streamed: bool
) -> None:
    make, provider, served_model = MAKERS[wire]
    usage = SERVED[provider]
    reasoning = {"reasoning_tokens": 200} if provider == "openai" else {}
    fake.reply(model=served_model, **usage, **reasoning)
    agent = Agent(BudgetedModel(make(fake)), instructions="Be brief.")
    with bg.spend_limit(usd=1, tenant="acme") as run:
        if streamed:

            async def stream() -> str:
                async with agent.run_stream(
                    "Summarise the ticket.", model_settings={"max_tokens": 400}
                ) as result:
                    return "".join([text async for text in result.stream_text(delta=True)])

            output = asyncio.run(stream())
        else:
            output = agent.run_sync(
                "Summarise the ticket.", model_settings={"max_tokens": 400}
            ).output
    expected = genai_price(provider, served_model, **usage)
    assert output == "Hello from the fake provider."
    [record] = records
    assert (record.outcome, record.model) == ("ok", served_model)
    assert record.cost_usd == expected == run.spent
    assert record.usage is not None
    assert record.usage.reasoning_tokens == reasoning.get("reasoning_tokens", 0)
    assert tenant().spent == expected and tenant().held == 0


async def test_async_run_with_tools_sends_what_it_reserved(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(input_tokens=100, output_tokens=20)
    agent = Agent(BudgetedModel(chat_model(fake)), instructions="Be brief.")

    @agent.tool_plain
    def weather(city: str) -> str:
        """Today's weather in a city."""
        return "sunny"

    async with bg.spend_limit(usd=1, tenant="acme") as run:
        result = await agent.run(LONG_PROMPT, model_settings=SMALL)
    assert result.output == "Hello from the fake provider."
    body = fake.requests[-1].body
    assert body["tools"][0]["function"]["name"] == "weather"
    assert body["max_completion_tokens"] == 50
    assert run.spent == genai_price("openai", "gpt-4o", input_tokens=100, output_tokens=20)
    assert records[0].estimate >= records[0].cost


class Forecast(BaseModel):
    city: str
    degrees: int


SDK_ADAPTERS = {
    "openai-chat": openai_chat.ADAPTER,
    "openai-responses": openai_responses.ADAPTER,
    "anthropic": anthropic.ADAPTER,
}


@pytest.mark.parametrize("wire", sorted(MAKERS))
@pytest.mark.parametrize(
    "output", [str, Forecast, NativeOutput(Forecast)], ids=["text", "output-tool", "native-output"]
)
def test_each_request_holds_what_the_sdk_call_it_sends_holds(
    fake: FakeProvider, records: list[bg.CallRecord], wire: str, output: Any
) -> None:
    """The hold is the one ``bg.instrument`` takes for the SDK call pydantic-ai sends:
    system prompt, instructions, tools, output tool or schema, retries included."""
    agent = Agent(
        BudgetedModel(MAKERS[wire][0](fake)),
        instructions="Be brief.",
        system_prompt="You are a weather bot.",
        output_type=output,
    )

    @agent.tool_plain
    def weather(city: str) -> str:
        """Today's weather in a city."""
        return "sunny"

    try:
        agent.run_sync(LONG_PROMPT, model_settings={"max_tokens": 200})
    except UnexpectedModelBehavior:  # the fake answers text, never a forecast
        assert output is not str
    assert len(records) == len(fake.requests) >= 1
    for record, sent in zip(records, fake.requests, strict=True):
        body = {key: value for key, value in sent.body.items() if key != "stream"}
        held_for_the_call = bg.estimate(SDK_ADAPTERS[wire].request(body)).nanos
        assert held_for_the_call <= record.estimate <= held_for_the_call * 1.01


HISTORY: list[ModelMessage] = [
    ModelRequest(
        parts=[SystemPromptPart("You are a weather bot."), UserPromptPart("Paris, Rome?")]
    ),
    ModelResponse(
        parts=[
            ThinkingPart("The user wants two forecasts: call the tool twice."),
            ToolCallPart("weather", {"city": "Paris"}, tool_call_id="call_1"),
            ToolCallPart("weather", {"city": "Rome"}, tool_call_id="call_2"),
        ]
    ),
    ModelRequest(
        parts=[
            ToolReturnPart("weather", "sunny, 21C", tool_call_id="call_1"),
            ToolReturnPart("weather", "unknown city", tool_call_id="call_2", outcome="retried"),
        ]
    ),
    ModelResponse(parts=[ToolCallPart("weather", {"city": "Roma"}, tool_call_id="call_3")]),
    ModelRequest(parts=[ToolReturnPart("weather", {"sky": "cloudy", "temp": 18}, "call_3")]),
    ModelResponse(parts=[TextPart("Paris is sunny, Rome cloudy.")]),
]


@pytest.mark.parametrize("wire", sorted(MAKERS))
def test_a_conversation_with_tool_calls_is_held_as_the_sdk_call_sends_it(
    fake: FakeProvider, records: list[bg.CallRecord], wire: str
) -> None:
    agent = Agent(BudgetedModel(MAKERS[wire][0](fake)), instructions="Be brief.")

    @agent.tool_plain
    def weather(city: str) -> str:
        """Today's weather in a city."""
        return "sunny"

    agent.run_sync("And tomorrow?", message_history=HISTORY, model_settings=SMALL)
    [record] = records
    [sent] = fake.requests
    body = {key: value for key, value in sent.body.items() if key != "stream"}
    held_for_the_call = bg.estimate(SDK_ADAPTERS[wire].request(body)).nanos
    assert held_for_the_call <= record.estimate <= held_for_the_call * 1.01


@pytest.mark.parametrize("wire", sorted(MAKERS))
def test_images_and_documents_are_held_as_the_sdk_call_sends_them(
    fake: FakeProvider, records: list[bg.CallRecord], wire: str
) -> None:
    prompt = [
        "Describe the chart, then summarise the report.",
        BinaryContent(png(1_024, 768), media_type="image/png"),
        BinaryContent(pdf(3, "Quarterly figures"), media_type="application/pdf"),
    ]
    Agent(BudgetedModel(MAKERS[wire][0](fake))).run_sync(prompt, model_settings=SMALL)
    [record] = records
    [sent] = fake.requests
    body = {key: value for key, value in sent.body.items() if key != "stream"}
    held_for_the_call = bg.estimate(SDK_ADAPTERS[wire].request(body))
    assert held_for_the_call.input_tokens > 1_000  # the image and pages, not their base64
    assert held_for_the_call.nanos <= record.estimate <= held_for_the_call.nanos * 1.01


@pytest.mark.parametrize("asked", [True, False], ids=["asked-for", "reported"])
def test_the_flex_tier_is_priced_at_its_own_rates(
    fake: FakeProvider, records: list[bg.CallRecord], asked: bool
) -> None:
    served = {"input_tokens": 1_000, "output_tokens": 400, "reasoning_tokens": 300}
    fake.reply(service_tier="flex", **served)
    settings: dict[str, Any] = {"max_tokens": 1_000}
    if asked:
        settings["openai_service_tier"] = "flex"
    agent = Agent(BudgetedModel(chat_model(fake, "gpt-5.4-mini")))
    agent.run_sync("Hi", model_settings=cast(ModelSettings, settings))
    assert fake.requests[-1].body.get("service_tier") == ("flex" if asked else None)
    usage = bg.Usage(**served)
    flex = genai_cost("gpt-5.4-mini", usage, provider="openai", context={"service_tier": "flex"})
    assert records[0].cost == flex < genai_cost("gpt-5.4-mini", usage, provider="openai")
    assert records[0].estimate >= flex


# -- refused before sending -----------------------------------------------------------------
@pytest.mark.parametrize("wire", sorted(MAKERS))
def test_a_request_that_does_not_fit_raises_budget_exceeded_unsent(
    fake: FakeProvider, records: list[bg.CallRecord], wire: str
) -> None:
    agent = Agent(BudgetedModel(MAKERS[wire][0](fake)))
    with pytest.raises(bg.BudgetExceeded) as refused, bg.spend_limit(usd="0.0001", tenant="acme"):
        agent.run_sync(LONG_PROMPT, model_settings={"max_tokens": 1_000})
    assert type(refused.value) is bg.BudgetExceeded  # not wrapped by pydantic-ai
    assert refused.value.scope == "run"
    assert fake.requests == []
    assert [record.outcome for record in records] == ["denied"]
    assert tenant().spent == 0 and tenant().held == 0


async def test_a_stream_that_does_not_fit_is_refused_unsent(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    agent = Agent(BudgetedModel(claude_model(fake)))
    settings: ModelSettings = {"max_tokens": 1_000}
    with pytest.raises(bg.BudgetExceeded):
        async with (
            bg.spend_limit(usd="0.0001", tenant="acme"),
            agent.run_stream(LONG_PROMPT, model_settings=settings) as result,
        ):
            await result.get_output()
    assert fake.requests == []
    assert tenant().held == 0


def test_an_unknown_model_is_refused_never_free(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    agent = Agent(BudgetedModel(chat_model(fake, "my-finetune-v3")))
    with pytest.raises(bg.UnknownModel):
        agent.run_sync("Hi", model_settings=SMALL)
    assert fake.requests == []


def test_models_prices_a_deployment_as_the_model_it_serves(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(input_tokens=20, output_tokens=10)
    model = BudgetedModel(chat_model(fake, "prod-chat"), models={"prod-chat": "gpt-4o-mini"})
    Agent(model).run_sync("Hi", model_settings=SMALL)
    assert records[0].cost_usd == genai_price(
        "openai", "gpt-4o-mini", input_tokens=20, output_tokens=10
    )


# -- what the policy chose is what is sent ---------------------------------------------------
def test_a_downgrade_sends_the_cheaper_model(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="tenant", usd="0.003", window="day")],
            on_exceed="downgrade",
            downgrade={"gpt-4o": "gpt-4o-mini"},
        ),
        listeners=[records.append],
    )
    fake.reply(input_tokens=100, output_tokens=20)
    agent = Agent(BudgetedModel(chat_model(fake)))
    with bg.spend_limit(tenant="acme"):
        agent.run_sync(LONG_PROMPT, model_settings={"max_tokens": 1_000})
    assert fake.requests[-1].body["model"] == "gpt-4o-mini"
    [record] = records
    assert (record.outcome, record.requested_model, record.model) == (
        "downgraded",
        "gpt-4o",
        "gpt-4o-mini",
    )
    assert record.cost_usd == genai_price(
        "openai", "gpt-4o-mini", input_tokens=100, output_tokens=20
    )


def test_a_downgrade_can_send_a_model_of_its_own(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="tenant", usd="0.01", window="day")],
            on_exceed="downgrade",
            downgrade={"claude-opus-4-6": "gpt-4o-mini"},
        ),
        listeners=[records.append],
    )
    cheap = chat_model(fake, "gpt-4o-mini")
    model = BudgetedModel(claude_model(fake, "claude-opus-4-6"), downgrades={"gpt-4o-mini": cheap})
    with bg.spend_limit(tenant="acme"):
        Agent(model).run_sync(LONG_PROMPT, model_settings={"max_tokens": 1_000})
    [request] = fake.requests
    assert (request.path, request.body["model"]) == ("/v1/chat/completions", "gpt-4o-mini")


@pytest.mark.parametrize("wire", sorted(MAKERS))
def test_the_policy_output_cap_is_sent(
    fake: FakeProvider, records: list[bg.CallRecord], wire: str
) -> None:
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="tenant", usd=1, window="day")], max_output_tokens=123
        ),
        listeners=[records.append],
    )
    Agent(BudgetedModel(MAKERS[wire][0](fake))).run_sync("Hi")
    body = fake.requests[-1].body
    sent = (
        body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
    )
    assert sent == 123 == records[0].output_cap


def test_a_failure_applying_the_policys_cap_releases_the_hold(
    fake: FakeProvider, records: list[bg.CallRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by review: the cap was applied after the guarded block, so a failure there left
    # the reservation held (renewed until its lease lapsed).
    import budgetguard.integrations.pydantic_ai as adapter

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cap failed")

    monkeypatch.setattr(adapter, "cap_settings", broken)
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="tenant", usd=1, window="day")], max_output_tokens=123
        ),
        listeners=[records.append],
    )
    with bg.spend_limit(tenant="acme"), pytest.raises(RuntimeError, match="cap failed"):
        Agent(no_retries(BudgetedModel(chat_model(fake)))).run_sync("Hi")
    assert tenant().held == 0 and fake.requests == []


def test_a_request_that_timed_out_is_released_but_never_silently(
    fake: FakeProvider, records: list[bg.CallRecord], caplog: pytest.LogCaptureFixture
) -> None:
    # The provider may have billed a request that timed out: released, with a warning.
    client = openai.AsyncOpenAI(
        base_url=fake.openai_base_url, api_key="test", timeout=0.2, max_retries=0
    )
    model = OpenAIChatModel("gpt-4o", provider=OpenAIProvider(openai_client=client))
    fake.reply(delay_s=1.0)
    with (
        caplog.at_level(logging.WARNING, logger="budgetguard"),
        bg.spend_limit(tenant="acme"),
        pytest.raises(Exception),
    ):
        Agent(BudgetedModel(model)).run_sync("Hi", **SMALL_RUN)
    assert tenant().held == 0 and records[-1].outcome == "error"
    assert any("before it answered" in r.getMessage() for r in caplog.records)


# -- failures and missing usage -----------------------------------------------------------------
def test_a_failed_request_releases_its_hold_and_raises_the_providers_error(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(status=500)
    agent = Agent(BudgetedModel(no_retries(chat_model(fake))))
    with pytest.raises(ModelHTTPError), bg.spend_limit(tenant="acme"):
        agent.run_sync("Hi", model_settings=SMALL)
    assert [record.outcome for record in records] == ["error"]
    assert tenant().spent == 0 and tenant().held == 0


@pytest.mark.parametrize(
    ("wire", "streamed"),
    [
        ("openai-chat", False),
        ("openai-chat", True),
        ("openai-responses", False),
        ("openai-responses", True),
        ("anthropic", False),  # a stream reports its usage in message_start, always
    ],
)
def test_a_response_without_usage_is_charged_its_reservation(
    fake: FakeProvider, records: list[bg.CallRecord], wire: str, streamed: bool
) -> None:
    fake.reply(include_usage=False)
    agent = Agent(BudgetedModel(MAKERS[wire][0](fake)))

    async def stream() -> str:
        async with agent.run_stream("Hi", model_settings=SMALL) as result:
            return await result.get_output()

    output: str | Exception
    with bg.spend_limit(tenant="acme"):
        try:
            output = asyncio.run(stream()) if streamed else agent.run_sync("Hi", **SMALL_RUN).output
        except AttributeError as error:  # pydantic-ai 2.78 reading Anthropic's missing usage
            output = error
    if wire != "anthropic":
        assert output == "Hello from the fake provider."  # the caller gets its answer
    [record] = records  # billed either way: never $0
    assert record.outcome == "unpriced" and record.usage is None
    assert record.cost == record.estimate > 0
    assert tenant().held == 0


@pytest.mark.parametrize(
    "usage",
    [
        RequestUsage(unmeasured_requests=1, input_tokens=12),  # omitted: counts are a floor
        RequestUsage(details={"requests": 1}),  # no tokens at all
        RequestUsage(input_tokens=12, output_tokens=3, audio_seconds=4.5),  # billed by the second
    ],
    ids=["unmeasured", "no-tokens", "audio-seconds"],
)
def test_usage_that_does_not_say_what_was_billed_is_charged_its_reservation(
    records: list[bg.CallRecord], usage: RequestUsage
) -> None:
    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart("ok")], usage=usage, model_name="gpt-4o-mini")

    agent = Agent(BudgetedModel(FunctionModel(answer, model_name="gpt-4o-mini")))
    assert agent.run_sync("Hi", model_settings=SMALL).output == "ok"
    [record] = records
    assert record.outcome == "unpriced" and record.error
    assert record.cost == record.estimate > 0


def test_an_answer_pydantic_ai_cannot_use_is_charged_its_reservation(
    records: list[bg.CallRecord],
) -> None:
    def unusable(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise UnexpectedModelBehavior("the provider's answer was empty")

    agent = Agent(BudgetedModel(FunctionModel(unusable, model_name="gpt-4o-mini")))
    with pytest.raises(UnexpectedModelBehavior), bg.spend_limit(tenant="acme"):
        agent.run_sync("Hi", model_settings=SMALL)
    [record] = records
    assert record.outcome == "unpriced" and "answer was empty" in (record.error or "")
    assert record.cost == record.estimate > 0


async def test_a_stream_closed_early_is_charged_what_it_consumed(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(text="one two three four five six seven eight", input_tokens=100, output_tokens=60)
    model = BudgetedModel(chat_model(fake))
    messages: list[ModelMessage] = [ModelRequest.user_text_prompt(LONG_PROMPT)]
    async with (
        bg.spend_limit(tenant="acme"),
        model.request_stream(messages, SMALL, ModelRequestParameters()) as stream,
    ):
        async for _event in stream:
            break  # abandoned before the usage chunk
    [record] = records
    assert record.usage is not None and record.usage.output_tokens >= 1
    assert 0 < record.cost <= record.estimate
    assert tenant().held == 0


async def test_a_stream_cut_midway_is_charged_what_it_consumed(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(text="one two three four five six", input_tokens=100, output_tokens=60, cut_after=2)
    agent = Agent(BudgetedModel(no_retries(claude_model(fake))))
    with pytest.raises(Exception):
        async with (
            bg.spend_limit(tenant="acme"),
            agent.run_stream(LONG_PROMPT, model_settings=SMALL) as result,
        ):
            await result.get_output()
    [record] = records
    assert record.usage is not None
    assert record.usage.input_tokens == 100  # Anthropic reported it at message_start
    assert 0 < record.cost <= record.estimate
    assert tenant().held == 0


# -- tools stay in the caller's frame ----------------------------------------------------------
def test_llm_calls_made_by_tools_spend_from_the_callers_frame(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.default = Reply(input_tokens=30, output_tokens=10)
    helper = Agent(BudgetedModel(chat_model(fake, "gpt-4o-mini")))
    client = bg.instrument(
        openai.OpenAI(base_url=fake.openai_base_url, api_key="test", max_retries=0)
    )

    wanted = {"max_tokens": 50}

    def plan(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        if len(messages) == 1:  # first turn: ask the helper agent and the plain client
            ask = {"question": "status?", **wanted}
            return ModelResponse(parts=[ToolCallPart("ask_helper", ask), ToolCallPart("ask", ask)])
        return ModelResponse(parts=[TextPart("All green.")])

    # A pydantic-ai FunctionModel named after a priced model: scripted tool calls.
    agent = Agent(BudgetedModel(FunctionModel(plan, model_name="gpt-4o-mini")))

    @agent.tool
    async def ask_helper(ctx: RunContext[None], question: str, max_tokens: int) -> str:
        return (await helper.run(question, model_settings={"max_tokens": max_tokens})).output

    @agent.tool_plain
    def ask(question: str, max_tokens: int) -> str:  # sync: run in a worker thread
        messages: Any = [{"role": "user", "content": question}]
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, max_tokens=max_tokens
        )
        return answer.choices[0].message.content or ""

    try:
        with bg.spend_limit(usd=1, tenant="acme", user="u-42") as run:
            assert agent.run_sync("How is production?", **SMALL_RUN).output == "All green."
        assert run.calls == 4 == len(records)  # two turns of the agent, one call per tool
        assert {record.user for record in records} == {"u-42"}
        assert run.spent == sum(record.cost_usd for record in records)
        assert len(fake.requests) == 2

        # The frame's limit refuses the tools' calls; the error reaches the run's caller.
        fake.clear()
        records.clear()
        wanted["max_tokens"] = 2_000  # $0.0012 each: the agent's own turn fits, they do not
        with pytest.raises(bg.BudgetExceeded), bg.spend_limit(usd="0.0002", tenant="acme"):
            agent.run_sync("How is production?", **SMALL_RUN)
        assert records[0].outcome == "ok" and "denied" in {r.outcome for r in records[1:]}
        assert fake.requests == []
    finally:
        fake.default = Reply()


# -- concurrency -------------------------------------------------------------------------------
PER_CALL = genai_price("openai", "gpt-4o-mini", input_tokens=150, output_tokens=40)


def _budget_for_five(records: list[bg.CallRecord]) -> Decimal:
    limit = PER_CALL * 5 + PER_CALL / 2
    bg.configure(
        policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd=limit, window="day")]),
        listeners=[records.append],
    )
    return limit


def _check_no_overspend(fake: FakeProvider, records: list[bg.CallRecord], limit: Decimal) -> None:
    served = len(fake.requests)
    ok = [record for record in records if record.outcome == "ok"]
    assert len(ok) == served and 1 <= served < 16
    assert sum(record.outcome == "denied" for record in records) == 16 - served
    billed = PER_CALL * served
    assert sum(record.cost_usd for record in ok) == billed == tenant().spent <= limit
    assert tenant().held == 0


async def test_sixteen_concurrent_runs_never_overspend(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    limit = _budget_for_five(records)
    fake.default = Reply(input_tokens=150, output_tokens=40, delay_s=0.05)
    agent = Agent(BudgetedModel(chat_model(fake, "gpt-4o-mini")))

    async def one() -> str | None:
        try:
            async with bg.spend_limit(tenant="acme"):
                return (await agent.run(LONG_PROMPT, model_settings=SMALL)).output
        except bg.BudgetExceeded:
            return None

    try:
        await asyncio.gather(*(one() for _ in range(16)))
    finally:
        fake.default = Reply()
    _check_no_overspend(fake, records, limit)


def test_sixteen_threads_never_overspend(fake: FakeProvider, records: list[bg.CallRecord]) -> None:
    limit = _budget_for_five(records)
    fake.default = Reply(input_tokens=150, output_tokens=40, delay_s=0.05)
    start = threading.Barrier(16)

    def one() -> None:
        # An HTTP client belongs to one event loop: each thread (each run_sync) its own.
        agent = Agent(BudgetedModel(chat_model(fake, "gpt-4o-mini")))
        start.wait()
        try:
            with bg.spend_limit(tenant="acme"):
                agent.run_sync(LONG_PROMPT, model_settings=SMALL)
        except bg.BudgetExceeded:
            pass

    threads = [threading.Thread(target=one) for _ in range(16)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        fake.default = Reply()
    _check_no_overspend(fake, records, limit)


# -- packaging ---------------------------------------------------------------------------------
def test_importing_budgetguard_does_not_import_pydantic_ai() -> None:
    code = "import sys, budgetguard; print('pydantic_ai' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_model_is_budgeted_once(fake: FakeProvider) -> None:
    budgeted = BudgetedModel(chat_model(fake))
    with pytest.raises(bg.ConfigurationError, match="already a BudgetedModel"):
        BudgetedModel(ConcurrencyLimitedModel(budgeted, limiter=2))
    not_a_model: Any = 42
    with pytest.raises(bg.ConfigurationError, match="wrapped: expected a pydantic-ai Model"):
        BudgetedModel(not_a_model)


def test_downgrades_must_be_models(fake: FakeProvider) -> None:
    bad: Any = {"gpt-4o-mini": "gpt-4o-mini"}
    with pytest.raises(bg.ConfigurationError, match=r"downgrades\['gpt-4o-mini'\]"):
        BudgetedModel(chat_model(fake), downgrades=bad)
