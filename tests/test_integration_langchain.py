"""BudgetCallbackHandler on the real LangChain packages (langchain-openai, -anthropic,
-google-genai, langgraph), over HTTP, against the local fake provider.

Every settled cost is checked against genai-prices' price of the usage the fake served,
to the nano-dollar; every refusal against the fake's own request log (nothing sent).
"""

from __future__ import annotations

import asyncio
import logging
import operator
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, TypedDict

import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.caches import InMemoryCache
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeListLLM
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.outputs import LLMResult
from langchain_core.tools import tool
from langchain_google_genai import ChatGoogleGenerativeAI
from langchain_openai import ChatOpenAI
from provider_support import genai_cost

import budgetguard as bg
from budgetguard._core.errors import ConfigurationError
from budgetguard._core.money import nanos_to_usd
from budgetguard._core.usage import UsageDetails
from budgetguard.integrations.langchain import BudgetCallbackHandler
from budgetguard.testing import FakeProvider

PROMPT = "Summarize this in one line: " + "a fairly long sentence of words. " * 150
REPLY = "Hello from the fake provider."


@dataclass(frozen=True)
class Provider:
    """One LangChain chat model class, the usage the fake serves it, and its price list."""

    make: Callable[..., Any]
    model: str
    prices: str
    served: dict[str, int]

    def usage(self) -> bg.Usage:
        return bg.Usage(**self.served)


def _openai(fake: FakeProvider, **options: Any) -> Any:
    settings = {"model": "gpt-4o", "max_tokens": 300, "stream_usage": True, **options}
    return ChatOpenAI(base_url=fake.openai_base_url, api_key="t", max_retries=0, **settings)


def _claude(fake: FakeProvider, **options: Any) -> Any:
    return ChatAnthropic(
        model="claude-haiku-4-5",
        base_url=fake.anthropic_base_url,
        api_key="t",
        max_tokens=300,
        max_retries=0,
        **options,
    )


def _gemini(fake: FakeProvider, **options: Any) -> Any:
    return ChatGoogleGenerativeAI(
        model="gemini-2.5-flash", base_url=fake.url, api_key="t", max_output_tokens=300, **options
    )


PROVIDERS = {
    "openai": Provider(
        _openai,
        "gpt-4o",
        "openai",
        {
            "input_tokens": 900,
            "cache_read_tokens": 512,
            "output_tokens": 120,
            "reasoning_tokens": 40,
        },
    ),
    "anthropic": Provider(
        _claude,
        "claude-haiku-4-5",
        "anthropic",
        {
            "input_tokens": 900,
            "cache_read_tokens": 300,
            "cache_write_tokens": 250,
            "cache_write_1h_tokens": 100,
            "output_tokens": 120,
        },
    ),
    "google": Provider(
        _gemini,
        "gemini-2.5-flash",
        "google",
        {
            "input_tokens": 900,
            "cache_read_tokens": 400,
            "output_tokens": 120,
            "reasoning_tokens": 40,
        },
    ),
}


@pytest.fixture(autouse=True)
def _fresh_http_pools() -> Iterator[None]:
    """langchain-openai and langchain-anthropic share one pooled async HTTP client per
    base URL, process-wide; its connections belong to the event loop that opened them,
    and every async test runs on a loop of its own."""
    yield
    from langchain_anthropic import _client_utils as anthropic_pools
    from langchain_openai.chat_models import _client_utils as openai_pools

    anthropic_pools._get_default_async_httpx_client.cache_clear()
    openai_pools._cached_async_httpx_client.cache_clear()


@pytest.fixture
def records(fake: FakeProvider) -> list[bg.CallRecord]:
    """Every call's record, under a $10 / day limit per user."""
    fake.clear()
    seen: list[bg.CallRecord] = []
    bg.configure(
        policy=bg.Policy(limits=[bg.Limit(scope="user", usd=10, window="day")]),
        listeners=[seen.append],
    )
    return seen


def user(key: str | None = "u-42") -> bg.BudgetStatus:
    return bg.status("user", key, tenant=None)


def limit_users(usd: str, **policy: Any) -> None:
    bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="user", usd=usd, window="day")], **policy))


def config(handler: BudgetCallbackHandler, **metadata: Any) -> Any:
    return {"callbacks": [handler], "metadata": {"user": "u-42", **metadata}}


# -- settled exactly -------------------------------------------------------------------
@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
@pytest.mark.parametrize("name", PROVIDERS)
def test_each_call_is_charged_the_served_usage_to_the_nano_dollar(
    fake: FakeProvider, records: list[bg.CallRecord], name: str, streamed: bool
) -> None:
    spec = PROVIDERS[name]
    fake.reply(**spec.served)
    model, handler = spec.make(fake), BudgetCallbackHandler()
    if streamed:
        text = "".join(chunk.text for chunk in model.stream(PROMPT, config=config(handler)))
    else:
        text = model.invoke(PROMPT, config=config(handler)).text
    assert text == REPLY
    (record,) = records
    assert (record.outcome, record.user, record.model) == ("ok", "u-42", spec.model)
    assert record.usage == spec.usage()
    assert record.cost == genai_cost(spec.model, spec.usage(), provider=spec.prices) > 0
    assert 0 < record.cost <= record.estimate
    assert user().spent == record.cost_usd and user().held == 0


@pytest.mark.parametrize("streamed", [False, True], ids=["ainvoke", "astream"])
@pytest.mark.parametrize("name", PROVIDERS)
async def test_async_calls_are_charged_exactly_inside_the_callers_frames(
    fake: FakeProvider, records: list[bg.CallRecord], name: str, streamed: bool
) -> None:
    """The handler's events are awaited in the caller's task: the frames it reads are the
    caller's, and no executor thread waits on the store."""
    spec = PROVIDERS[name]
    fake.reply(**spec.served)
    model, handler = spec.make(fake), BudgetCallbackHandler()
    settled_on: list[threading.Thread] = []
    bg.configure(
        listeners=[*bg.current().listeners, lambda _: settled_on.append(threading.current_thread())]
    )
    async with bg.spend_limit(usd=1, user="u-7", tenant="acme") as run:
        if streamed:
            async for _ in model.astream(PROMPT, config={"callbacks": [handler]}):
                pass
        else:
            await model.ainvoke(PROMPT, config={"callbacks": [handler]})
    (record,) = records
    assert (record.tenant, record.user) == ("acme", "u-7")
    assert record.cost == genai_cost(spec.model, spec.usage(), provider=spec.prices)
    assert run.spent == record.cost_usd and run.calls == 1
    assert bg.status("user", "u-7", tenant="acme").held == 0
    # settled on the event loop's thread: awaited, not run on LangChain's executor
    assert settled_on == [threading.current_thread()]


@pytest.mark.parametrize("streamed", [False, True], ids=["invoke", "stream"])
def test_claude_web_searches_are_charged(
    fake: FakeProvider, records: list[bg.CallRecord], streamed: bool
) -> None:
    """Invoked, the provider's own usage block counts the searches; a stream's
    usage_metadata does not, so it is charged the most the request allowed (max_uses)."""
    served = {"input_tokens": 900, "output_tokens": 120, "web_searches": 2}
    fake.reply(**served)
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    model = _claude(fake).bind_tools([search])
    if streamed:
        list(model.stream(PROMPT, config=config(BudgetCallbackHandler())))
    else:
        model.invoke(PROMPT, config=config(BudgetCallbackHandler()))
    assert fake.requests[0].body["tools"] == [search]
    (record,) = records
    searches = 3 if streamed else 2
    expected = bg.Usage(900, 120, details=UsageDetails(web_searches=searches))
    assert record.usage == expected
    assert record.cost == genai_cost("claude-haiku-4-5", expected, provider="anthropic")
    assert record.cost <= record.estimate


async def test_async_events_hold_no_executor_thread(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    """Not even per streamed token: a plain handler's every event would be a thread hop
    (the SDK's own hops, e.g. its platform lookup, are not ours)."""
    from concurrent.futures import ThreadPoolExecutor

    hops: list[object] = []

    class Counting(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            hops.append(fn)
            return super().submit(fn, *args, **kwargs)

    asyncio.get_running_loop().set_default_executor(Counting(max_workers=2))
    fake.reply(text="one two three four five six seven eight nine ten")
    chunks = [
        c async for c in _openai(fake).astream(PROMPT, config=config(BudgetCallbackHandler()))
    ]
    ours = [hop for hop in hops if "BudgetCallbackHandler" in repr(hop)]
    assert len(chunks) > 10 and len(records) == 1 and ours == []


async def test_batch_and_abatch_guard_each_input(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    spec = PROVIDERS["openai"]
    for _ in range(4):
        fake.reply(**spec.served)
    model, handler = spec.make(fake), BudgetCallbackHandler()
    each = genai_cost(spec.model, spec.usage(), provider=spec.prices)
    await asyncio.to_thread(model.batch, [PROMPT, PROMPT], config=config(handler))
    await model.abatch([PROMPT, PROMPT], config=config(handler))
    assert [r.cost for r in records] == [each] * 4 and user().held == 0


def test_openai_flex_tier_is_priced_at_its_own_rates(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    served = {"input_tokens": 900, "cache_read_tokens": 512, "output_tokens": 120}
    handler = BudgetCallbackHandler()
    for streamed in (False, True):
        fake.reply(service_tier="flex", **served)
        model = _openai(fake, service_tier="flex", model="o4-mini")
        if streamed:
            list(model.stream(PROMPT, config=config(handler)))
        else:
            model.invoke(PROMPT, config=config(handler))
    flex = genai_cost(
        "o4-mini", bg.Usage(**served), provider="openai", context={"service_tier": "flex"}
    )
    assert flex < genai_cost("o4-mini", bg.Usage(**served), provider="openai")
    assert [r.cost for r in records] == [flex, flex]


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_the_hold_is_what_instrument_holds_for_the_payload_sent(
    fake: FakeProvider, records: list[bg.CallRecord], name: str
) -> None:
    """The messages and bound tools are read by instrument()'s own adapters: replaying the
    exact body LangChain sent through an instrumented SDK client holds the same amount. A
    cache mark (on the system prompt only) holds that prefix at Claude's write rate."""

    @tool
    def lookup(city: str, days: int) -> str:
        """Look up the weather forecast for a city."""
        return "sunny"

    spec = PROVIDERS[name]
    mark = {"cache_control": {"type": "ephemeral"}} if name == "anthropic" else {}
    system = SystemMessage([{"type": "text", "text": "You are terse. " * 40, **mark}])
    messages = [system, HumanMessage(PROMPT)]
    spec.make(fake).bind_tools([lookup]).invoke(messages, config=config(BudgetCallbackHandler()))
    sent = dict(fake.requests[0].body)
    assert ("cache_control" in str(sent)) == bool(mark)
    if name == "openai":
        import openai

        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="t")
        bg.instrument(client).chat.completions.create(**sent)
    else:
        import anthropic

        client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="t")
        bg.instrument(client).messages.create(**sent)
    by_langchain, by_instrument = records
    assert sent["tools"] and by_langchain.estimate == by_instrument.estimate > 0


def test_without_langchain_anthropics_formatter_a_marked_prompt_is_held_as_written(
    fake: FakeProvider,
    records: list[bg.CallRecord],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its formatter keeps the cache marks where they are; without it (here: a release
    whose formatter takes other arguments) the estimate cannot tell where a mark ends the
    written prefix, so all of the prompt may be written."""
    mark = {"type": "text", "text": "You are terse. " * 40, "cache_control": {"type": "ephemeral"}}
    messages = [SystemMessage([mark]), HumanMessage(PROMPT)]
    handler = BudgetCallbackHandler()
    _claude(fake).invoke(messages, config=config(handler))
    from langchain_anthropic import chat_models

    original = chat_models._format_messages

    def changed(messages: Any, *, model: Any, mid_conversation_system_messages: bool) -> Any:
        return original(
            messages, model=model, mid_conversation_system_messages=mid_conversation_system_messages
        )

    monkeypatch.setattr(chat_models, "_format_messages", changed)
    with caplog.at_level(logging.WARNING, logger="budgetguard"):
        _claude(fake).invoke(messages, config=config(handler))
    exact, whole = records
    rates = bg.current().prices.rates("claude-haiku-4-5")
    assert rates.cache_write_rate is not None and rates.cache_write_rate > rates.input_rate
    assert whole.estimate > exact.estimate and "formatter is unavailable" in caplog.text


# -- refused before anything is sent ----------------------------------------------------
MODES = ["invoke", "stream", "ainvoke", "astream"]


def call(model: Any, mode: str, handler: BudgetCallbackHandler) -> None:
    settings = config(handler)
    if mode == "invoke":
        model.invoke(PROMPT, config=settings)
    elif mode == "stream":
        list(model.stream(PROMPT, config=settings))
    else:

        async def go() -> None:
            if mode == "ainvoke":
                await model.ainvoke(PROMPT, config=settings)
            else:
                async for _ in model.astream(PROMPT, config=settings):
                    pass

        asyncio.run(go())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", PROVIDERS)
def test_a_call_that_does_not_fit_raises_and_sends_nothing(
    fake: FakeProvider, records: list[bg.CallRecord], name: str, mode: str
) -> None:
    seen: list[bg.CallRecord] = []
    limit_users("0.0001")
    bg.configure(listeners=[seen.append])
    with pytest.raises(bg.BudgetExceeded) as refused:
        call(PROVIDERS[name].make(fake), mode, BudgetCallbackHandler())
    assert (refused.value.scope, refused.value.key) == ("user", "u-42")
    assert fake.requests == []
    assert [r.outcome for r in seen] == ["denied"]
    assert user().spent == 0 and user().held == 0


@pytest.mark.parametrize("on_exceed", ["policy", "frame"])
def test_a_downgrade_the_callback_cannot_send_is_a_refusal(
    fake: FakeProvider, records: list[bg.CallRecord], on_exceed: str
) -> None:
    """instrument() would send gpt-4o-mini; a callback cannot change the model, so the
    call is refused instead of being sent to gpt-4o on a gpt-4o-mini hold."""
    policy: dict[str, Any] = {"downgrade": {"gpt-4o": "gpt-4o-mini"}}
    if on_exceed == "policy":
        policy["on_exceed"] = "downgrade"
    limit_users("0.004", **policy)
    frame = bg.spend_limit(on_exceed="downgrade" if on_exceed == "frame" else None)
    with frame, pytest.raises(bg.BudgetExceeded):
        _openai(fake).invoke(PROMPT, config=config(BudgetCallbackHandler()))
    assert fake.requests == []


def test_a_policy_output_cap_it_cannot_send_is_not_what_is_held(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    """Policy(max_output_tokens=...) and fit_output lower the cap instrument() sends; the
    model sends its own here, so that is what is held."""
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="user", usd=10, window="day")],
            max_output_tokens=50,
            fit_output=True,
        )
    )
    fake.reply(input_tokens=900, output_tokens=10)
    _openai(fake, max_tokens=None).invoke(PROMPT, config=config(BudgetCallbackHandler()))
    assert "max_tokens" not in fake.requests[0].body
    (record,) = records
    held_at_50 = bg.estimate(
        bg.LLMRequest("gpt-4o", messages=[{"role": "user", "content": PROMPT}])
    )
    assert record.output_cap is None and record.estimate > 10 * held_at_50.nanos


def test_bad_attribution_metadata_is_refused_naming_the_key(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    with pytest.raises(bg.ConfigurationError, match=r"metadata\['user'\]"):
        _openai(fake).invoke(PROMPT, config=config(BudgetCallbackHandler(), user=""))
    with pytest.raises(bg.ConfigurationError, match="metadata_keys"):
        BudgetCallbackHandler(metadata_keys={"team": "team_id"})
    assert fake.requests == []


# -- attribution ------------------------------------------------------------------------
def test_attribution_from_frames_handler_and_metadata_innermost_first(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    handler = BudgetCallbackHandler(
        tenant="from-handler",
        feature="chat",
        tags={"app": "bot"},
        metadata_keys={"user": "user_id"},
        tag_keys=["env"],
    )
    with bg.spend_limit(tenant="acme", user="u-frame"):
        fake.reply()
        _openai(fake).invoke(PROMPT, config={"callbacks": [handler]})
        fake.reply()
        _openai(fake).invoke(
            PROMPT,
            config={
                "callbacks": [handler],
                "metadata": {"user_id": 7, "env": "prod", "tenant": "t"},
            },
        )
    first, second = records
    assert (first.tenant, first.user, first.feature) == ("from-handler", "u-frame", "chat")
    assert (second.tenant, second.user, second.tags) == ("t", "7", {"app": "bot", "env": "prod"})


# -- what a call that did not end well costs ---------------------------------------------
@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_a_provider_error_releases_the_hold(
    fake: FakeProvider, records: list[bg.CallRecord], name: str
) -> None:
    fake.reply(status=500)
    with pytest.raises(Exception, match="the fake provider was told to fail"):
        PROVIDERS[name].make(fake).invoke(PROMPT, config=config(BudgetCallbackHandler()))
    assert len(fake.requests) == 1
    (record,) = records
    assert (record.outcome, record.cost) == ("error", 0)
    assert user().held == 0 and user().spent == 0


@pytest.mark.parametrize("name", ["openai", "anthropic"])
def test_a_stream_closed_early_is_charged_what_it_consumed(
    fake: FakeProvider, records: list[bg.CallRecord], name: str
) -> None:
    fake.reply(text="one two three four five six seven eight nine ten", input_tokens=900)
    stream = PROVIDERS[name].make(fake).stream(PROMPT, config=config(BudgetCallbackHandler()))
    assert "".join(next(stream).text for _ in range(3))
    stream.close()
    (record,) = records
    assert record.usage is not None and record.usage.output_tokens > 0
    assert 0 < record.cost <= record.estimate
    assert user().held == 0 and user().spent == record.cost_usd


def test_calls_started_and_never_ended_are_bounded(
    fake: FakeProvider,
    records: list[bg.CallRecord],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past MAX_OPEN_RUNS the oldest is dropped, loudly; its lease is no longer renewed,
    so its hold is freed when the lease runs out."""
    from budgetguard.integrations import langchain as integration

    monkeypatch.setattr(integration, "MAX_OPEN_RUNS", 1)
    limit_users("10", lease_s=0.4)
    bg.configure(listeners=[records.append])
    handler, model = BudgetCallbackHandler(), _openai(fake)
    first, second = (model.stream(PROMPT, config=config(handler)) for _ in range(2))
    with caplog.at_level(logging.WARNING, logger="budgetguard"):
        next(first), next(second)
    assert "never ended; dropping the oldest (LangChain ChatOpenAI)" in caplog.text
    first.close()
    second.close()
    assert [r.outcome for r in records] == ["ok"]  # the second's partial charge
    assert user().held > 0  # the first's hold, until its lease runs out
    time.sleep(0.5)
    fake.reply()
    model.invoke(PROMPT, config=config(handler))  # a reservation sweeps expired leases
    assert user().held == 0


class Strict(BaseCallbackHandler):
    """Another ``raise_error`` handler that fails after the budget handler reserved."""

    raise_error = True

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("tracing backend down")


def test_a_call_whose_end_never_comes_is_charged_its_reservation_after_max_call_s(
    fake: FakeProvider, records: list[bg.CallRecord], caplog: pytest.LogCaptureFixture
) -> None:
    handler = BudgetCallbackHandler(max_call_s=0.2)
    with pytest.raises(RuntimeError, match="tracing backend down"):
        _openai(fake).invoke(PROMPT, config={**config(handler), "callbacks": [handler, Strict()]})
    held = user().held
    assert held > 0 and not fake.requests
    time.sleep(0.3)
    fake.reply()
    with caplog.at_level(logging.WARNING, logger="budgetguard"):
        _openai(fake).invoke(PROMPT, config=config(handler))  # sweeps the overdue call
    assert "no end after max_call_s=0.2s" in caplog.text
    overdue, answered = records
    assert (overdue.outcome, overdue.cost_usd) == ("unpriced", held)
    assert answered.outcome == "ok"
    assert user().held == 0 and user().spent == held + answered.cost_usd
    assert not handler._open
    with pytest.raises(ConfigurationError, match="max_call_s"):
        BudgetCallbackHandler(max_call_s=0)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["generate", "agenerate"])
def test_a_generate_batch_refused_midway_frees_the_lists_reserved_before(
    fake: FakeProvider, records: list[bg.CallRecord], asynchronous: bool
) -> None:
    """LangChain starts every list of a generate() before it sends any: one refused, none
    is sent, and the ones reserved before it are released."""
    handler = BudgetCallbackHandler()
    _openai(fake).invoke("hi", config=config(BudgetCallbackHandler()))  # what one holds
    limit_users(str(records[0].estimate_usd * 3 / 2), contention_wait_s=0)
    batch = [[HumanMessage("hi")] for _ in range(3)]
    model = _openai(fake)
    with pytest.raises(bg.BudgetExceeded):
        if asynchronous:
            asyncio.run(model.agenerate(batch, callbacks=[handler], metadata={"user": "u-42"}))
        else:
            model.generate(batch, callbacks=[handler], metadata={"user": "u-42"})
    assert len(fake.requests) == 1 and user().held == 0 and not handler._open


def test_two_calls_open_under_one_run_id_are_never_undercharged(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    """The earlier is charged its reservation when the later starts; each end is then
    settled as it comes: nothing stays held, nothing is lost."""
    served = PROVIDERS["openai"].served
    fake.reply(**served)
    fake.reply(**served)
    barrier = threading.Barrier(2)

    class BothStarted(BaseCallbackHandler):
        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            barrier.wait(5)

    handler, run_id, model = BudgetCallbackHandler(), uuid.uuid4(), _openai(fake)
    settings = {**config(handler), "callbacks": [handler, BothStarted()], "run_id": run_id}
    threads = [threading.Thread(target=model.invoke, args=(PROMPT, settings)) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    each = nanos_to_usd(genai_cost("gpt-4o", bg.Usage(**served), provider="openai"))
    assert len(fake.requests) == 2 and user().held == 0 and not handler._open
    assert "unpriced" in [r.outcome for r in records]
    assert user().spent >= 2 * each


def test_a_structured_output_cut_at_its_cap_is_charged_its_usage(
    records: list[bg.CallRecord],
) -> None:
    """The openai SDK raises LengthFinishReasonError on a complete, billed response: it
    is charged the usage the error carries, not released."""
    import httpx
    from pydantic import BaseModel

    def reply(request: httpx.Request) -> httpx.Response:
        choice = {"index": 0, "finish_reason": "length"}
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-2024-08-06",
                "choices": [{**choice, "message": {"role": "assistant", "content": '{"a'}}],
                "usage": {"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300},
            },
        )

    class Answer(BaseModel):
        answer: str

    client = httpx.Client(transport=httpx.MockTransport(reply))
    model = ChatOpenAI(model="gpt-4o", max_tokens=300, api_key="t", http_client=client)
    with pytest.raises(Exception, match=r"[Ll]ength"):
        model.with_structured_output(Answer, method="json_schema").invoke(
            "hi", config=config(BudgetCallbackHandler())
        )
    (record,) = records
    expected = genai_cost("gpt-4o-2024-08-06", bg.Usage(1000, 300), provider="openai")
    assert (record.outcome, record.cost) == ("ok", expected)
    assert user().held == 0


@pytest.mark.parametrize("asynchronous", [False, True], ids=["invoke", "ainvoke"])
def test_a_stream_cut_inside_invoke_is_charged_what_it_delivered(
    fake: FakeProvider, records: list[bg.CallRecord], asynchronous: bool
) -> None:
    """A model that streams internally (streaming=True, LangGraph's "messages" mode) ends
    a cut stream with only its error: the tokens it delivered are charged."""
    fake.reply(text="word " * 200, cut_after=50)
    model, settings = _openai(fake, streaming=True), config(BudgetCallbackHandler())
    with pytest.raises(Exception):  # whatever the SDK makes of a cut
        if asynchronous:
            asyncio.run(model.ainvoke(PROMPT, config=settings))
        else:
            model.invoke(PROMPT, config=settings)
    (record,) = records
    assert record.outcome == "ok" and record.usage is not None
    assert record.usage.output_tokens >= 40
    assert 0 < record.cost <= record.estimate and user().held == 0


def test_a_generate_batch_that_fails_midway_leaves_no_hold(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    """generate() over several message lists stops at the first failure and ends none of
    the others: the one answered before is charged its reservation (its usage is lost),
    the one never sent is released."""
    fake.reply()
    fake.reply(status=500)
    batch = [[HumanMessage(PROMPT)] for _ in range(3)]
    with pytest.raises(Exception, match="the fake provider was told to fail"):
        _openai(fake).generate(
            batch, callbacks=[BudgetCallbackHandler()], metadata={"user": "u-42"}
        )
    assert len(fake.requests) == 2
    answered, failed, unsent = sorted(records, key=lambda r: r.outcome != "unpriced")
    assert answered.outcome == "unpriced" and answered.cost == answered.estimate > 0
    assert (failed.outcome, unsent.outcome, failed.cost, unsent.cost) == ("error", "error", 0, 0)
    assert user().held == 0 and user().spent == answered.cost_usd


def test_a_stream_cut_midway_is_charged_what_it_consumed(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(text="one two three four five six seven eight", cut_after=3)
    with pytest.raises(Exception):  # whatever the SDK makes of a cut
        list(_openai(fake).stream(PROMPT, config=config(BudgetCallbackHandler())))
    (record,) = records
    assert record.usage is not None and record.usage.output_tokens > 0
    assert 0 < record.cost <= record.estimate and user().held == 0


def test_a_stream_without_usage_is_charged_its_reservation_and_logged(
    fake: FakeProvider, records: list[bg.CallRecord], caplog: pytest.LogCaptureFixture
) -> None:
    fake.reply()
    with caplog.at_level(logging.WARNING, logger="budgetguard"):
        chunks = list(
            _openai(fake, stream_usage=False).stream(PROMPT, config=config(BudgetCallbackHandler()))
        )
    assert "".join(c.text for c in chunks) == REPLY
    (record,) = records
    assert record.outcome == "unpriced" and record.cost == record.estimate > 0
    assert "stream_usage=True" in caplog.text and "charging its reservation" in caplog.text


def test_a_malformed_usage_still_returns_the_response(
    fake: FakeProvider, records: list[bg.CallRecord], caplog: pytest.LogCaptureFixture
) -> None:
    fake.reply(raw_usage={"prompt_tokens": -5, "completion_tokens": 3, "total_tokens": 0})
    with caplog.at_level(logging.WARNING, logger="budgetguard"):
        answer = _openai(fake).invoke(PROMPT, config=config(BudgetCallbackHandler()))
    assert answer.text == REPLY
    (record,) = records
    assert record.outcome == "unpriced" and record.cost == record.estimate
    assert "token_usage.prompt_tokens" in caplog.text


def test_an_answer_from_langchains_cache_costs_nothing(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    served = PROVIDERS["openai"].served
    fake.reply(**served)
    model, handler = _openai(fake, cache=InMemoryCache()), BudgetCallbackHandler()
    first = model.invoke(PROMPT, config=config(handler))
    again = model.invoke(PROMPT, config=config(handler))
    assert first.text == again.text == REPLY and len(fake.requests) == 1
    assert [r.cost for r in records] == [
        genai_cost("gpt-4o", bg.Usage(**served), provider="openai"),
        0,
    ]
    assert user().held == 0


def test_a_usage_that_reports_no_input_is_charged_the_input_held(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(raw_usage={"input_tokens": 0, "output_tokens": 40})
    assert _claude(fake).invoke(PROMPT, config=config(BudgetCallbackHandler())).text == REPLY
    (record,) = records
    assert record.usage is not None and record.usage.input_tokens > 800
    assert record.cost == genai_cost("claude-haiku-4-5", record.usage, provider="anthropic")


class Instruct(FakeListLLM):
    """A completion model that reports its usage as langchain-openai's OpenAI does."""

    def _generate(self, prompts: list[str], *args: Any, **kwargs: Any) -> LLMResult:
        return self._with_usage(super()._generate(prompts, *args, **kwargs))

    async def _agenerate(self, prompts: list[str], *args: Any, **kwargs: Any) -> LLMResult:
        return self._with_usage(await super()._agenerate(prompts, *args, **kwargs))

    def _with_usage(self, result: LLMResult) -> LLMResult:
        tokens = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
        result.llm_output = {"token_usage": tokens, "model_name": "gpt-3.5-turbo-instruct"}
        return result


INSTRUCT_COST = genai_cost("gpt-3.5-turbo-instruct", bg.Usage(12, 3), provider="openai")


class Inline(BaseCallbackHandler):
    run_inline = True  # as LangSmith's LangChainTracer


async def test_an_inline_handler_does_not_hide_async_completion_calls(
    records: list[bg.CallRecord],
) -> None:
    """LangChain's async manager skips the non-inline handlers' on_llm_start when an inline
    handler is attached: the budget handler is inline, so its calls are still reserved,
    and refused."""
    llm, handler = Instruct(responses=["fine"]), BudgetCallbackHandler()
    settings = {
        "callbacks": [handler, Inline()],
        "metadata": {"user": "u-42", "ls_model_name": "gpt-3.5-turbo-instruct"},
    }
    assert await llm.ainvoke("Say something.", config=settings) == "fine"
    (record,) = records
    assert (record.outcome, record.user, record.cost) == ("ok", "u-42", INSTRUCT_COST)
    assert record.estimate > 0  # reserved before it was sent
    limit_users("0.00001")
    with pytest.raises(bg.BudgetExceeded):
        await llm.ainvoke("Say something.", config=settings)


async def test_other_handlers_still_see_async_completion_starts(
    records: list[bg.CallRecord],
) -> None:
    """The budget handler is inline only where LangChain would skip it: alone with
    non-inline handlers, it does not hide the async on_llm_start from them."""
    starts: list[str] = []

    class Watcher(BaseCallbackHandler):
        async def on_llm_start(self, *args: Any, **kwargs: Any) -> None:
            starts.append("watcher")

    settings = {
        "callbacks": [BudgetCallbackHandler(), Watcher()],
        "metadata": {"user": "u-42", "ls_model_name": "gpt-3.5-turbo-instruct"},
    }
    assert await Instruct(responses=["fine"]).ainvoke("Say something.", config=settings)
    (record,) = records
    assert starts == ["watcher"] and record.estimate > 0 and record.cost == INSTRUCT_COST


async def test_an_end_whose_start_was_not_seen_is_charged_with_its_attribution(
    records: list[bg.CallRecord],
) -> None:
    """An end with no start (a handler attached mid-run) is charged, never free, to the
    enclosing frames and the handler's own attribution."""
    result = Instruct(responses=["fine"]).generate(["Say something."])
    BudgetCallbackHandler(user="u-9", feature="chat").on_llm_end(result, run_id=uuid.uuid4())
    async with bg.spend_limit(tenant="acme"):
        BudgetCallbackHandler(user="u-7").on_llm_end(result, run_id=uuid.uuid4())
    first, second = records
    assert (first.user, first.feature, first.cost) == ("u-9", "chat", INSTRUCT_COST)
    assert (second.tenant, second.user, second.cost) == ("acme", "u-7", INSTRUCT_COST)


def test_a_completion_model_is_reserved_and_settled(
    records: list[bg.CallRecord],
) -> None:
    llm = FakeListLLM(responses=["fine"])
    settings = config(BudgetCallbackHandler(), ls_model_name="gpt-3.5-turbo-instruct")
    assert llm.invoke("Say something.", config=settings) == "fine"
    assert Instruct(responses=["fine"]).invoke("Say something.", config=settings) == "fine"
    unpriced, priced = records
    assert unpriced.outcome == "unpriced" and unpriced.cost == unpriced.estimate > 0
    assert priced.cost == INSTRUCT_COST and priced.user == "u-42"
    limit_users("0.00001")
    with pytest.raises(bg.BudgetExceeded):
        llm.invoke("Say something.", config=settings)


def test_a_completion_batch_is_charged_its_one_request_once(
    records: list[bg.CallRecord],
) -> None:
    """A completion model sends a batch of prompts as one request: LangChain gives its
    usage to the first prompt's run and an empty block to the others, already paid."""
    settings = config(BudgetCallbackHandler(), ls_model_name="gpt-3.5-turbo-instruct")
    llm = Instruct(responses=["fine"] * 3)
    llm.generate(
        ["Say something."] * 3, callbacks=settings["callbacks"], metadata=settings["metadata"]
    )
    assert sorted(r.cost for r in records) == [0, 0, INSTRUCT_COST]
    assert user().spent == nanos_to_usd(INSTRUCT_COST) and user().held == 0


# -- many at once, one small budget ------------------------------------------------------
CONCURRENT = 16
SMALL = {"input_tokens": 500, "output_tokens": 20}


def small_budget(fake: FakeProvider, calls: int) -> tuple[Decimal, Decimal]:
    """A user limit that fits a handful of the calls; (limit, what one served call costs)."""
    usd = Decimal("0.02")
    limit_users(str(usd))
    for _ in range(calls):
        fake.reply(delay_s=0.01, **SMALL)
    return usd, nanos_to_usd(genai_cost("gpt-4o", bg.Usage(**SMALL), provider="openai"))


def check_never_overspent(fake: FakeProvider, usd: Decimal, each: Decimal, sent: int) -> None:
    billed = each * len(fake.requests)
    assert len(fake.requests) == sent > 0
    assert billed <= usd and user().spent == billed and user().held == 0


def test_concurrent_threads_never_overspend_what_the_fake_billed(fake: FakeProvider) -> None:
    fake.clear()
    usd, each = small_budget(fake, CONCURRENT * 2)
    model, handler = _openai(fake, max_tokens=100), BudgetCallbackHandler()
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(2):
            try:
                model.invoke(PROMPT[:2000], config=config(handler))
                result = "sent"
            except bg.BudgetExceeded:
                result = "refused"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("refused") > 0
    check_never_overspent(fake, usd, each, outcomes.count("sent"))


async def test_concurrent_tasks_never_overspend_what_the_fake_billed(fake: FakeProvider) -> None:
    fake.clear()
    usd, each = small_budget(fake, CONCURRENT)
    model, handler = _openai(fake, max_tokens=100), BudgetCallbackHandler()

    async def one() -> str:
        try:
            await model.ainvoke(PROMPT[:2000], config=config(handler))
        except bg.BudgetExceeded:
            return "refused"
        return "sent"

    outcomes = await asyncio.gather(*(one() for _ in range(CONCURRENT)))
    assert outcomes.count("refused") > 0
    check_never_overspent(fake, usd, each, outcomes.count("sent"))


# -- LangGraph ---------------------------------------------------------------------------
class State(TypedDict):
    answers: Annotated[list[str], operator.add]


def graph_of(node: Callable[..., Any], names: tuple[str, ...] = ("left", "right")) -> Any:
    """Two nodes in parallel (LangGraph runs sync ones on its thread pool)."""
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(State)
    for name in names:
        builder.add_node(name, node)
        builder.add_edge(START, name)
        builder.add_edge(name, END)
    return builder.compile()


@pytest.fixture
def graph_records(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> Iterator[list[bg.CallRecord]]:
    pytest.importorskip("langgraph")
    for _ in range(2):
        fake.reply(**PROVIDERS["openai"].served)
    yield records


def test_langgraph_nodes_are_attributed_to_the_frames_around_them(
    fake: FakeProvider, graph_records: list[bg.CallRecord]
) -> None:
    model = _openai(fake)

    def node(state: State) -> dict[str, list[str]]:
        with bg.spend_limit(feature="graph-node"):
            return {"answers": [model.invoke(PROMPT).text]}

    handler = BudgetCallbackHandler(tag_keys=["langgraph_node"])
    with bg.spend_limit(tenant="acme", user="u-graph") as run:
        result = graph_of(node).invoke({"answers": []}, config={"callbacks": [handler]})
    assert result["answers"] == [REPLY, REPLY]
    assert sorted(r.tags["langgraph_node"] for r in graph_records) == ["left", "right"]
    for record in graph_records:
        assert (record.tenant, record.user, record.feature) == ("acme", "u-graph", "graph-node")
    each = genai_cost("gpt-4o", PROVIDERS["openai"].usage(), provider="openai")
    assert run.spent == nanos_to_usd(2 * each) and run.calls == 2


async def test_async_langgraph_nodes_are_attributed_and_refused(
    fake: FakeProvider, graph_records: list[bg.CallRecord]
) -> None:
    model = _openai(fake)

    async def node(state: State) -> dict[str, list[str]]:
        return {"answers": [(await model.ainvoke(PROMPT)).text]}

    handler = BudgetCallbackHandler()
    async with bg.spend_limit(user="u-graph"):
        await graph_of(node).ainvoke({"answers": []}, config={"callbacks": [handler]})
    assert [r.user for r in graph_records] == ["u-graph", "u-graph"]
    fake.clear()
    async with bg.spend_limit(usd="0.0001", user="u-graph"):
        with pytest.raises(bg.BudgetExceeded):
            await graph_of(node).ainvoke({"answers": []}, config={"callbacks": [handler]})
    assert fake.requests == []


def test_importing_budgetguard_does_not_import_langchain() -> None:
    code = "import sys, budgetguard; print(any(m.startswith('langchain') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_call_that_timed_out_is_released_but_never_silently(
    fake: FakeProvider, records: list[bg.CallRecord], caplog: pytest.LogCaptureFixture
) -> None:
    # The provider may have billed a request that timed out: released, with a warning.
    fake.reply(delay_s=1.0)
    model = _openai(fake, timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="budgetguard"), pytest.raises(Exception):
        model.invoke("Hi", config=config(BudgetCallbackHandler()))
    assert records[-1].outcome == "error" and user().held == 0
    assert any("before it answered" in r.getMessage() for r in caplog.records)
