"""bg_litellm.completion / acompletion and the proxy's BudgetHook, on the real litellm package.

LiteLLM drives its own OpenAI, Anthropic and Gemini code over HTTP at the local
fake provider (``api_base``); budgetguard's charge must be genai-prices' price of
what the fake served, to the nano-dollar - never LiteLLM's ``response_cost``. The
proxy cannot run here (its extra, FastAPI, is not installed): its hook methods
are driven directly, with LiteLLM's own ``UserAPIKeyAuth`` and real LiteLLM
responses and streams.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map fetch at import

import asyncio
import logging
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from provider_support import genai_price

import budgetguard as bg
from budgetguard.testing import FakeProvider

litellm = pytest.importorskip("litellm")

from litellm.integrations.custom_logger import CustomLogger  # noqa: E402
from litellm.proxy._types import ProxyException, UserAPIKeyAuth  # noqa: E402

from budgetguard.integrations import litellm as bg_litellm  # noqa: E402
from budgetguard.integrations._litellm_wire import LiteLLMCall  # noqa: E402
from budgetguard.integrations.litellm_proxy import BudgetHook  # noqa: E402

pytestmark = [  # LiteLLM's own, from inside LiteLLM: its types as pydantic reads them
    pytest.mark.filterwarnings("ignore:.*`ReadOnly` qualifier:UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:litellm"),
]

PROMPT = [{"role": "user", "content": "Summarise this ticket for on-call. " + "word " * 60}]
"""About 70 tokens: the fake's scripted input (40) stays below the estimate."""


@pytest.fixture(autouse=True)
def _fresh(fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.clear()
    monkeypatch.setattr(litellm, "suppress_debug_info", True)  # its banner on provider errors


def openai_kw(fake: FakeProvider, **extra: Any) -> dict[str, Any]:
    return {"api_base": fake.openai_base_url, "api_key": "t", "num_retries": 0, **extra}


def anthropic_kw(fake: FakeProvider, **extra: Any) -> dict[str, Any]:
    return {"api_base": fake.anthropic_base_url, "api_key": "t", "num_retries": 0, **extra}


def limit(usd: str, on_exceed: str = "raise", **policy: Any) -> list[bg.CallRecord]:
    seen: list[bg.CallRecord] = []
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="tenant", usd=usd, window="day")], on_exceed=on_exceed, **policy
        ),
        listeners=[seen.append],
    )
    return seen


def tenant(name: str = "acme") -> bg.BudgetStatus:
    return bg.status("tenant", name)


def hold(model: str, max_tokens: int) -> Decimal:
    """What a call of PROMPT holds (its estimate), in USD."""
    request = LiteLLMCall.of({"model": model}).request(
        {"model": model, "messages": PROMPT, "max_tokens": max_tokens}
    )
    return bg.estimate(request).usd


# -- completion: exact settles ------------------------------------------------------------
def test_openai_call_settles_the_served_usage_exactly(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(
        model="gpt-4o-2024-08-06",
        input_tokens=1200,
        cache_read_tokens=1024,
        output_tokens=300,
        reasoning_tokens=200,
    )
    response = bg_litellm.completion(
        model="gpt-4o", messages=PROMPT, max_tokens=300, **openai_kw(fake)
    )
    assert response.choices[0].message.content == "Hello from the fake provider."
    expected = genai_price(
        "openai", "gpt-4o-2024-08-06", input_tokens=1200, cache_read_tokens=1024, output_tokens=300
    )
    record = records[-1]
    assert record.outcome == "ok" and record.cost_usd == expected
    assert record.usage is not None and record.usage.reasoning_tokens == 200
    assert response._hidden_params.get("response_cost") is not None  # LiteLLM's, not used


def test_anthropic_prefix_settles_cache_reads_and_both_write_lifetimes_exactly(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(
        input_tokens=1200,
        cache_read_tokens=100,
        cache_write_tokens=1000,
        cache_write_1h_tokens=400,
        output_tokens=30,
    )
    bg_litellm.completion(
        model="anthropic/claude-haiku-4-5", messages=PROMPT, max_tokens=50, **anthropic_kw(fake)
    )
    assert fake.requests[-1].path == "/v1/messages"
    assert fake.requests[-1].body["model"] == "claude-haiku-4-5"
    expected = genai_price(
        "anthropic",
        "claude-haiku-4-5",
        input_tokens=1200,
        cache_read_tokens=100,
        cache_write_tokens=1000,
        cache_write_1h_tokens=400,
        output_tokens=30,
    )
    assert records[-1].cost_usd == expected
    assert records[-1].usage == bg.Usage(
        input_tokens=1200,
        output_tokens=30,
        cache_read_tokens=100,
        cache_write_tokens=1000,
        cache_write_1h_tokens=400,
    )


def test_gemini_prefix_is_priced_as_google(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(input_tokens=40, cache_read_tokens=20, output_tokens=30, reasoning_tokens=10)
    bg_litellm.completion(
        model="gemini/gemini-2.5-flash",
        messages=PROMPT,
        max_tokens=50,
        api_base=fake.url,
        api_key="t",
        num_retries=0,
    )
    assert fake.requests[-1].path.endswith("/models/gemini-2.5-flash:generateContent")
    expected = genai_price(
        "google", "gemini-2.5-flash", input_tokens=40, cache_read_tokens=20, output_tokens=30
    )
    assert records[-1].cost_usd == expected


async def test_acompletion_positional_arguments_settle_exactly(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(input_tokens=40, output_tokens=30)
    async with bg.spend_limit(usd=1, tenant="acme") as run:
        await bg_litellm.acompletion("gpt-4o-mini", PROMPT, max_tokens=50, **openai_kw(fake))
    assert run.spent == genai_price("openai", "gpt-4o-mini", input_tokens=40, output_tokens=30)
    assert tenant().held == 0 and records[-1].tenant == "acme"


# -- refusals, downgrades, caps -----------------------------------------------------------
def test_a_call_that_does_not_fit_raises_and_sends_nothing(fake: FakeProvider) -> None:
    seen = limit("0.0001")
    with bg.spend_limit(tenant="acme"), pytest.raises(bg.BudgetExceeded) as refused:
        bg_litellm.completion(model="gpt-4o", messages=PROMPT, max_tokens=500, **openai_kw(fake))
    assert fake.requests == []
    assert refused.value.scope == "tenant" and refused.value.key == "acme"
    assert [r.outcome for r in seen] == ["denied"] and tenant().spent == 0 == tenant().held


def test_a_downgrade_keeps_the_provider_prefix(fake: FakeProvider) -> None:
    # Sonnet's 2,000-token hold does not fit; Haiku's does: sent to Anthropic as Haiku.
    seen = limit("0.02", "downgrade", downgrade={"claude-sonnet-4-5": "claude-haiku-4-5"})
    fake.reply(input_tokens=40, output_tokens=30)
    with bg.spend_limit(tenant="acme"):
        bg_litellm.completion(
            model="anthropic/claude-sonnet-4-5",
            messages=PROMPT,
            max_tokens=2000,
            **anthropic_kw(fake),
        )
    assert fake.requests[-1].path == "/v1/messages"
    assert fake.requests[-1].body["model"] == "claude-haiku-4-5"
    record = seen[-1]
    assert record.outcome == "downgraded" and record.requested_model == "claude-sonnet-4-5"
    assert record.cost_usd == genai_price(
        "anthropic", "claude-haiku-4-5", input_tokens=40, output_tokens=30
    )


def test_the_policy_output_cap_is_sent_as_max_tokens(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    limit("100", max_output_tokens=64)
    bg_litellm.completion(model="gpt-4o-mini", messages=PROMPT, **openai_kw(fake))
    assert fake.requests[-1].body["max_tokens"] == 64


def test_a_model_litellm_cannot_route_is_refused_naming_it(fake: FakeProvider) -> None:
    with pytest.raises(bg.ConfigurationError, match="model='no-such-model'"):
        bg_litellm.completion(model="no-such-model", messages=PROMPT, **openai_kw(fake))
    assert fake.requests == []


# -- what LiteLLM makes up is never charged -----------------------------------------------
def test_a_response_without_usage_is_charged_its_reservation(
    fake: FakeProvider, records: list[bg.CallRecord], caplog: pytest.LogCaptureFixture
) -> None:
    fake.reply(include_usage=False)  # LiteLLM answers usage 0 / 0: never a free call
    with caplog.at_level(logging.WARNING, "budgetguard"):
        response = bg_litellm.completion(
            model="gpt-4o-mini", messages=PROMPT, max_tokens=50, **openai_kw(fake)
        )
    assert response.usage.prompt_tokens == 0
    record = records[-1]
    assert record.outcome == "unpriced" and record.cost == record.estimate > 0
    assert "reported no usage" in caplog.text


def test_a_stream_without_provider_usage_is_charged_its_reservation(
    fake: FakeProvider, records: list[bg.CallRecord], caplog: pytest.LogCaptureFixture
) -> None:
    fake.reply(include_usage=False)  # LiteLLM then counts a usage itself: refused
    with caplog.at_level(logging.WARNING, "budgetguard"):
        chunks = list(
            bg_litellm.completion(
                model="gpt-4o-mini",
                messages=PROMPT,
                max_tokens=50,
                stream=True,
                stream_options={"include_usage": True},
                **openai_kw(fake),
            )
        )
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0  # LiteLLM's
    record = records[-1]
    assert record.outcome == "unpriced" and record.cost == record.estimate
    assert "LiteLLM counted" in caplog.text


# -- streams -------------------------------------------------------------------------------
def test_a_stream_settles_from_the_usage_chunk_it_asked_for_and_hides_it(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(input_tokens=40, output_tokens=30)
    stream = bg_litellm.completion(
        model="gpt-4o-mini", messages=PROMPT, max_tokens=50, stream=True, **openai_kw(fake)
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream)
    assert text == "Hello from the fake provider."
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    expected = genai_price("openai", "gpt-4o-mini", input_tokens=40, output_tokens=30)
    assert records[-1].outcome == "ok" and records[-1].cost_usd == expected


async def test_an_async_anthropic_stream_settles_exactly_and_keeps_the_asked_usage(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(input_tokens=1200, cache_read_tokens=1000, output_tokens=30)
    stream = await bg_litellm.acompletion(
        model="anthropic/claude-haiku-4-5",
        messages=PROMPT,
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
        **anthropic_kw(fake),
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage.prompt_tokens == 1200  # the caller asked: kept
    expected = genai_price(
        "anthropic",
        "claude-haiku-4-5",
        input_tokens=1200,
        cache_read_tokens=1000,
        output_tokens=30,
    )
    assert records[-1].cost_usd == expected


def test_a_stream_cut_midway_is_charged_what_it_consumed(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(cut_after=2)
    stream = bg_litellm.completion(
        model="gpt-4o-mini", messages=PROMPT, max_tokens=50, stream=True, **openai_kw(fake)
    )
    with pytest.raises(Exception, match=r"(?i)connection"):
        for _chunk in stream:
            pass
    record = records[-1]
    assert 0 < record.cost <= record.estimate and tenant().held == 0


def test_a_provider_error_releases_the_hold(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(status=400)
    with bg.spend_limit(tenant="acme"), pytest.raises(litellm.BadRequestError):
        bg_litellm.completion(model="gpt-4o-mini", messages=PROMPT, **openai_kw(fake))
    assert records[-1].outcome == "error" and tenant().spent == 0 == tenant().held


# -- concurrency -------------------------------------------------------------------------------
def _concurrent_setup(fake: FakeProvider) -> tuple[Decimal, Decimal]:
    """A budget for about five of sixteen 50-token calls; returns (limit, one call's bill)."""
    cap = hold("gpt-4o-mini", 50) * Decimal("5.5")
    limit(str(cap))
    for _ in range(16):
        fake.reply(input_tokens=40, output_tokens=50, delay_s=0.05)
    return cap, genai_price("openai", "gpt-4o-mini", input_tokens=40, output_tokens=50)


def _outcomes(sent: int, refused: int, cap: Decimal, bill: Decimal) -> None:
    status = tenant()
    assert sent + refused == 16 and 0 < sent < 16
    assert status.spent == bill * sent <= cap  # exactly what the fake billed, never past
    assert status.held == 0


def test_sixteen_threads_on_one_small_budget_never_overspend(fake: FakeProvider) -> None:
    cap, bill = _concurrent_setup(fake)

    def one(_: int) -> bool:
        with bg.spend_limit(tenant="acme"):
            try:
                bg_litellm.completion(
                    model="gpt-4o-mini", messages=PROMPT, max_tokens=50, **openai_kw(fake)
                )
            except bg.BudgetExceeded:
                return False
            return True

    with ThreadPoolExecutor(16) as pool:
        sent = sum(pool.map(one, range(16)))
    assert len(fake.requests) == sent
    _outcomes(sent, 16 - sent, cap, bill)


async def test_sixteen_tasks_on_one_small_budget_never_overspend(fake: FakeProvider) -> None:
    cap, bill = _concurrent_setup(fake)

    async def one() -> bool:
        async with bg.spend_limit(tenant="acme"):
            try:
                await bg_litellm.acompletion(
                    model="gpt-4o-mini", messages=PROMPT, max_tokens=50, **openai_kw(fake)
                )
            except bg.BudgetExceeded:
                return False
            return True

    sent = sum(await asyncio.gather(*(one() for _ in range(16))))
    assert len(fake.requests) == sent
    _outcomes(sent, 16 - sent, cap, bill)


# -- provider mapping ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "provider", "priced", "prefix"),
    [
        ("gpt-4o", "openai", "gpt-4o", ""),
        ("claude-haiku-4-5", "anthropic", "claude-haiku-4-5", ""),
        ("anthropic/claude-haiku-4-5", "anthropic", "claude-haiku-4-5", "anthropic/"),
        ("gemini/gemini-2.5-flash", "google", "gemini-2.5-flash", "gemini/"),
        (
            "openrouter/anthropic/claude-sonnet-4.5",
            "openrouter",
            "anthropic/claude-sonnet-4.5",
            "openrouter/",
        ),
        ("groq/llama-3.3-70b-versatile", "groq", "llama-3.3-70b-versatile", "groq/"),
        ("xai/grok-3", "x-ai", "grok-3", "xai/"),
        ("ollama/llama3", None, "llama3", "ollama/"),
    ],
)
def test_litellm_providers_map_to_genai_prices_ids(
    model: str, provider: str | None, priced: str, prefix: str
) -> None:
    call = LiteLLMCall.of({"model": model})
    assert (call.provider, call.model_name, call.prefix) == (provider, priced, prefix)


def test_openrouter_models_are_priced_at_openrouter() -> None:
    call = LiteLLMCall.of({"model": "openrouter/anthropic/claude-sonnet-4.5"})
    request = call.request({"model": "x", "messages": PROMPT, "max_tokens": 10})
    assert bg.estimate(request).provider == "openrouter"


def test_an_azure_deployment_is_priced_as_its_base_model() -> None:
    call = LiteLLMCall.of({"model": "azure/prod-chat"})
    request = call.request({"messages": PROMPT, "max_tokens": 10, "base_model": "azure/gpt-4o"})
    estimate = bg.estimate(request)
    assert (estimate.provider, request.priced_as(request.model)) == ("azure", "gpt-4o")


def test_litellm_fallbacks_count_as_unbounded_input() -> None:
    bg.configure(policy=bg.Policy(unbounded_input="refuse"))
    request = LiteLLMCall.of({"model": "gpt-4o"}).request(
        {"messages": PROMPT, "max_tokens": 10, "fallbacks": ["claude-opus-4-5"]}
    )
    with pytest.raises(bg.UnboundedInput, match="LiteLLM fallbacks"):
        bg.estimate(request)


def test_import_budgetguard_does_not_import_litellm() -> None:
    code = "import sys, budgetguard; sys.exit('litellm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- the proxy hook -------------------------------------------------------------------------------
AUTH = UserAPIKeyAuth(api_key="sk-test-0123456789", user_id="u1", team_id="acme", key_alias="ci")


def proxy_data(call_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "fast",
        "messages": PROMPT,
        "max_tokens": 50,
        "litellm_call_id": call_id,
        **extra,
    }


async def pre_call(hook: BudgetHook, data: dict[str, Any]) -> Any:
    return await hook.async_pre_call_hook(
        user_api_key_dict=AUTH, cache=None, data=data, call_type="acompletion"
    )


async def serve(fake: FakeProvider, data: dict[str, Any], **extra: Any) -> Any:
    """What the proxy's router would do: the group's deployment, called through LiteLLM."""
    body = {
        k: v for k, v in data.items() if k in ("messages", "max_tokens", "stream", "stream_options")
    }
    return await litellm.acompletion(model="openai/gpt-4o-mini", **body, **openai_kw(fake), **extra)


async def test_the_hook_settles_a_response_exactly_under_key_user_team_and_tags(
    fake: FakeProvider,
) -> None:
    seen = limit("1")
    hook = BudgetHook(models={"fast": "openai/gpt-4o-mini"})
    data = proxy_data("c1", metadata={"tags": ["env:prod", "beta"]})
    assert await pre_call(hook, data) is data
    fake.reply(input_tokens=40, output_tokens=30)
    response = await serve(fake, data)
    assert (
        await hook.async_post_call_success_hook(
            data=data, user_api_key_dict=AUTH, response=response
        )
        is None
    )
    record = seen[-1]
    assert record.cost_usd == genai_price(
        "openai", "gpt-4o-mini", input_tokens=40, output_tokens=30
    )
    assert (record.tenant, record.user, record.requested_model) == ("acme", "u1", "gpt-4o-mini")
    assert record.tags["litellm.model_group"] == "fast"
    assert record.tags["litellm.key_alias"] == "ci" and record.tags["litellm.key"] == AUTH.token
    assert record.tags["env"] == "prod" and record.tags["beta"] == "true"
    assert tenant().spent == record.cost_usd and tenant().held == 0


async def test_the_hook_refuses_with_a_429_the_proxy_answers_as_is(fake: FakeProvider) -> None:
    seen = limit("0.0001")
    hook = BudgetHook(models={"fast": "openai/gpt-4o-mini"})
    with pytest.raises(ProxyException) as refused:
        await pre_call(hook, proxy_data("c2", max_tokens=2000))
    error = refused.value
    # The proxy's exception handler answers int(code), to_dict() and the headers.
    assert int(error.code) == 429 and error.type == "budget_exceeded"
    assert error.to_dict()["message"].startswith("budget exceeded for tenant='acme'")
    assert error.headers == {"x-should-retry": "false"}  # the call alone exceeds the limit
    assert isinstance(error.__cause__, bg.BudgetExceeded)
    assert [r.outcome for r in seen] == ["denied"] and tenant().held == 0
    assert not hook._pending
    # The proxy then runs the failure hook with that exception: nothing to release.
    await hook.async_post_call_failure_hook(
        request_data=proxy_data("c2"), original_exception=error, user_api_key_dict=AUTH
    )


async def test_a_refusal_that_waiting_fixes_says_when(fake: FakeProvider) -> None:
    limit(str(hold("gpt-4o-mini", 20) * Decimal("1.5")), contention_wait_s=0.0)
    hook = BudgetHook(models={"fast": "openai/gpt-4o-mini"})
    await pre_call(hook, proxy_data("c3", max_tokens=20))  # held, not settled
    with pytest.raises(ProxyException) as refused:
        await pre_call(hook, proxy_data("c4", max_tokens=20))
    assert int(refused.value.code) == 429
    assert int(refused.value.headers["retry-after"]) > 0


async def test_the_hook_meters_a_stream_and_hides_the_usage_chunk_it_asked_for(
    fake: FakeProvider,
) -> None:
    seen = limit("1")
    hook = BudgetHook(models={"fast": "openai/gpt-4o-mini"})
    data = proxy_data("c5", stream=True)
    await pre_call(hook, data)
    assert data["stream_options"] == {"include_usage": True}
    fake.reply(input_tokens=40, output_tokens=30)
    stream = await serve(fake, data)
    chunks = [
        c
        async for c in hook.async_post_call_streaming_iterator_hook(
            user_api_key_dict=AUTH, response=stream, request_data=data
        )
    ]
    assert all(chunk.choices for chunk in chunks)  # no usage-only chunk for the client
    assert seen[-1].cost_usd == genai_price(
        "openai", "gpt-4o-mini", input_tokens=40, output_tokens=30
    )


async def test_the_hook_releases_a_failed_call(fake: FakeProvider) -> None:
    seen = limit("1")
    hook = BudgetHook(models={"fast": "openai/gpt-4o-mini"})
    data = proxy_data("c6")
    await pre_call(hook, data)
    assert tenant().held > 0
    fake.reply(status=500)
    with pytest.raises(litellm.InternalServerError) as failed:
        await serve(fake, data)
    await hook.async_post_call_failure_hook(
        request_data=data, original_exception=failed.value, user_api_key_dict=AUTH
    )
    assert seen[-1].outcome == "error" and tenant().held == 0 == tenant().spent


async def test_the_hook_downgrades_to_the_group_running_the_cheaper_model(
    fake: FakeProvider,
) -> None:
    limit("0.002", "downgrade", downgrade={"gpt-4o": "gpt-4o-mini"}, max_output_tokens=400)
    hook = BudgetHook(user="key", models={"smart": "openai/gpt-4o", "fast": "gpt-4o-mini"})
    data = proxy_data("c7", model="smart", max_tokens=None)
    await pre_call(hook, data)
    assert data["model"] == "fast" and data["max_tokens"] == 400
    data = proxy_data("c8", model="openai/gpt-4o", max_tokens=None)
    await pre_call(BudgetHook(), data)  # no group runs it: the same prefix
    assert data["model"] == "openai/gpt-4o-mini"


async def test_a_call_never_reported_is_charged_its_reservation(fake: FakeProvider) -> None:
    seen = limit("1")
    hook = BudgetHook(models={"fast": "openai/gpt-4o-mini"}, max_call_s=0.01)
    await pre_call(hook, proxy_data("c9"))
    await asyncio.sleep(0.02)
    await pre_call(hook, proxy_data("c10"))  # sweeps c9
    orphan = next(r for r in seen if r.outcome == "unpriced")
    assert orphan.cost == orphan.estimate > 0 and len(hook._pending) == 1


async def test_other_routes_pass_unguarded_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = BudgetHook()
    with caplog.at_level(logging.WARNING, "budgetguard"):
        data = {"model": "text-embedding-3-small", "input": "hi"}
        assert await hook.async_pre_call_hook(AUTH, None, data, "aembedding") is None
    assert "aembedding calls are not guarded" in caplog.text


def test_a_subclass_still_runs_every_hook_the_proxy_looks_for() -> None:
    class Mine(BudgetHook):
        pass

    # The proxy runs a pre-call hook only when the leaf class defines it.
    assert "async_pre_call_hook" in vars(Mine)
    assert Mine.async_pre_call_hook is not CustomLogger.async_pre_call_hook


def test_a_bad_attribution_source_names_the_scope() -> None:
    with pytest.raises(bg.ConfigurationError, match="tenant: expected one of"):
        BudgetHook(tenant="department")


def test_an_openrouter_downgrade_stays_on_openrouter(fake: FakeProvider) -> None:
    seen = limit("0.005", "downgrade", downgrade={"openai/gpt-4o": "openai/gpt-4o-mini"})
    fake.reply(input_tokens=40, output_tokens=30)
    with bg.spend_limit(tenant="acme"):
        bg_litellm.completion(
            model="openrouter/openai/gpt-4o",
            messages=PROMPT,
            max_tokens=1000,
            **openai_kw(fake),
        )
    assert fake.requests[-1].body["model"] == "openai/gpt-4o-mini"  # OpenRouter's name for it
    assert seen[-1].cost_usd == genai_price(
        "openrouter", "openai/gpt-4o-mini", input_tokens=40, output_tokens=30
    )


async def test_a_model_nobody_can_price_is_answered_400(fake: FakeProvider) -> None:
    hook = BudgetHook()
    with pytest.raises(ProxyException) as refused:
        await pre_call(hook, proxy_data("c11", model="ollama/my-own-model"))
    assert int(refused.value.code) == 400 and "unknown model 'my-own-model'" in str(refused.value)
    assert isinstance(refused.value.__cause__, bg.UnknownModel) and not hook._pending


# -- review fixes: ids of our own, calls served then failed, fallbacks, credentials ----------------
async def test_two_requests_reusing_a_client_call_id_are_each_settled(fake: FakeProvider) -> None:
    seen = limit("1")
    hook = BudgetHook(models={"fast": "openai/gpt-4o-mini"})
    first, second = proxy_data("same"), proxy_data("same")  # x-litellm-call-id, reused
    await pre_call(hook, first)
    await pre_call(hook, second)
    for data in (first, second):
        fake.reply(input_tokens=40, output_tokens=30)
        response = await serve(fake, data)
        await hook.async_post_call_success_hook(
            data=data, user_api_key_dict=AUTH, response=response
        )
    bill = genai_price("openai", "gpt-4o-mini", input_tokens=40, output_tokens=30)
    assert [r.outcome for r in seen] == ["ok", "ok"] and tenant().spent == 2 * bill
    assert tenant().held == 0 and not hook._pending


class _Blocked(Exception):
    """What a post-call guardrail raises (FastAPI's HTTPException, say): not the provider's."""


def _logging_obj(data: dict[str, Any]) -> Any:
    """The proxy's logging object, deferring its success log past post-call guardrails."""
    from datetime import datetime

    logging_obj, _ = litellm.utils.function_setup(
        original_function="acompletion",
        rules_obj=litellm.utils.Rules(),
        start_time=datetime.now(),
        **{k: v for k, v in data.items() if k in ("model", "messages", "litellm_call_id")},
    )
    logging_obj.defer_async_logging = True
    data["litellm_logging_obj"] = logging_obj
    return logging_obj


async def test_a_response_blocked_after_it_was_served_is_charged_its_usage(
    fake: FakeProvider,
) -> None:
    seen = limit("1")
    hook = BudgetHook(models={"fast": "openai/gpt-4o-mini"})
    data = proxy_data("c20", max_tokens=500)
    await pre_call(hook, data)
    logging_obj = _logging_obj(data)
    fake.reply(input_tokens=4000, output_tokens=400)
    await serve(fake, data, litellm_logging_obj=logging_obj)  # served and billed
    await hook.async_post_call_failure_hook(
        request_data=data, original_exception=_Blocked("guardrail"), user_api_key_dict=AUTH
    )
    bill = genai_price("openai", "gpt-4o-mini", input_tokens=4000, output_tokens=400)
    assert seen[-1].outcome == "ok" and tenant().spent == bill and tenant().held == 0


async def test_a_call_failed_with_no_sign_it_was_served_is_charged_its_reservation(
    fake: FakeProvider,
) -> None:
    seen = limit("1")
    hook = BudgetHook(models={"fast": "openai/gpt-4o-mini"})
    data = proxy_data("c21", max_tokens=500)
    await pre_call(hook, data)
    fake.reply(input_tokens=4000, output_tokens=400)
    await serve(fake, data)  # a client gone during post-call: a 499
    await hook.async_post_call_failure_hook(
        request_data=data, original_exception=_Blocked("499"), user_api_key_dict=AUTH
    )
    assert seen[-1].outcome == "unpriced" and seen[-1].cost == seen[-1].estimate > 0
    assert tenant().held == 0


async def test_a_call_refused_before_the_llm_was_called_is_released(fake: FakeProvider) -> None:
    seen = limit("1")
    hook = BudgetHook(models={"fast": "openai/gpt-4o-mini"})
    data = proxy_data("c22")
    await pre_call(hook, data)
    _logging_obj(data)  # a later pre-call guardrail blocks: the LLM is never called
    await hook.async_post_call_failure_hook(
        request_data=data, original_exception=_Blocked("input"), user_api_key_dict=AUTH
    )
    assert seen[-1].outcome == "error" and tenant().spent == 0 == tenant().held


def test_a_fallback_model_is_charged_at_its_own_provider(fake: FakeProvider) -> None:
    seen = limit("10")
    fake.reply(status=500)
    fake.reply(model="claude-opus-4-1-20250805", input_tokens=3000, output_tokens=280)
    fallback = {"model": "anthropic/claude-opus-4-1", **anthropic_kw(fake)}
    with bg.spend_limit(tenant="acme"):
        bg_litellm.completion(
            model="gpt-4o-mini",
            messages=PROMPT,
            max_tokens=300,
            fallbacks=[fallback],
            **openai_kw(fake),
        )
    bill = genai_price(
        "anthropic", "claude-opus-4-1-20250805", input_tokens=3000, output_tokens=280
    )
    assert seen[-1].model == "claude-opus-4-1-20250805" and tenant().spent == bill


async def test_a_raw_bearer_never_reaches_the_tags_nor_can_the_request_forge_them(
    fake: FakeProvider,
) -> None:
    seen = limit("1")
    hook = BudgetHook(models={"fast": "openai/gpt-4o-mini"})
    oauth = UserAPIKeyAuth(api_key="ya29.RAW-OAUTH-ACCESS-TOKEN", user_id="u1", team_id="acme")
    data = proxy_data("c23", tags=["litellm.team:other", "litellm.key:forged"])
    await hook.async_pre_call_hook(
        user_api_key_dict=oauth, cache=None, data=data, call_type="acompletion"
    )
    response = await serve(fake, data)
    await hook.async_post_call_success_hook(data=data, user_api_key_dict=oauth, response=response)
    tags = seen[-1].tags
    assert "ya29" not in str(tags) and tags["litellm.team"] == "acme"
    assert len(tags["litellm.key"]) == 64 and tags["litellm.key"] != "forged"


async def test_a_failure_after_admission_releases_the_hold(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from budgetguard.providers.prepared import PreparedCall

    seen = limit("1")
    hook = BudgetHook(models={"fast": "openai/gpt-4o-mini"})

    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(PreparedCall, "admitted", broken)
    with pytest.raises(RuntimeError):
        await pre_call(hook, proxy_data("c24"))
    assert seen[-1].outcome == "error" and tenant().held == 0 and not hook._pending
