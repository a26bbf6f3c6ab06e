"""Issue 19, part 1: what a request bills beyond its messages, per provider family.

Each test pins one rule the recorded corpus (tests/corpus, bench/bench_corpus.py)
calibrated, by the adapter's request as an instrumented client builds it: the
rule applies where it should, and only there.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import budgetguard as bg
from budgetguard._core.records import LLMRequest
from budgetguard._engine.estimate import estimate_of
from budgetguard.pricing.calibration import CLAUDE_THINKING_TOKENS, bound_for
from budgetguard.pricing.media import unbounded_reason
from budgetguard.pricing.tokens import count_text_tokens, estimate_input
from budgetguard.providers.anthropic import (
    ADAPTER as ANTHROPIC,
)
from budgetguard.providers.anthropic import (
    CLIENT_TOOL_TOKENS,
    CONTEXT_EDIT_TOKENS,
    TASK_BUDGET_TOKENS,
)
from budgetguard.providers.gemini import GENERATE
from budgetguard.providers.openai_chat import ADAPTER as CHAT
from budgetguard.providers.openai_responses import ADAPTER as RESPONSES

ASK = [{"role": "user", "content": "What is 2+2?"}]


def held(request: LLMRequest) -> int:
    return estimate_of(bg.current(), request, request.model).input_tokens


def claude(**kwargs: Any) -> LLMRequest:
    return ANTHROPIC.request({"model": "claude-sonnet-4-5", "max_tokens": 100, **kwargs})


# -- Anthropic ------------------------------------------------------------------------


def test_context_management_and_task_budgets_add_their_prompts() -> None:
    plain = claude(messages=ASK).overhead_tokens
    edits = {"edits": [{"type": "clear_tool_uses_20250919"}]}
    assert claude(messages=ASK, context_management=edits).overhead_tokens == (
        plain + CONTEXT_EDIT_TOKENS
    )
    budget = {"task_budget": {"type": "tokens", "total": 20_000}}
    assert claude(messages=ASK, output_config=budget).overhead_tokens == (
        plain + TASK_BUDGET_TOKENS
    )


def test_anthropic_defined_client_tools_add_their_prompts() -> None:
    plain = claude(messages=ASK).overhead_tokens
    for prefix, tokens in CLIENT_TOOL_TOKENS:
        request = claude(messages=ASK, tools=[{"type": f"{prefix}20250124", "name": "t"}])
        assert request.overhead_tokens == plain + tokens, prefix
        assert not request.unbounded  # the client runs them: nothing hidden


def test_the_advisor_and_unknown_tool_types_are_unbounded_server_tools() -> None:
    advisor = {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-8"}
    assert claude(messages=ASK, tools=[advisor]).unbounded
    assert claude(messages=ASK, tools=[advisor | {"max_uses": 2}]).server_tool_uses == 2
    newer = claude(messages=ASK, tools=[{"type": "hologram_20270101", "name": "h"}])
    assert newer.unbounded == ("tool type 'hologram_20270101' (not known to budgetguard)",)
    custom = claude(messages=ASK, tools=[{"name": "f", "input_schema": {"type": "object"}}])
    assert not custom.unbounded


def test_each_claude_tool_costs_its_json_and_a_wrapper() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    tools = [{"name": f"t{i}", "input_schema": schema} for i in range(2)]
    one = held(claude(messages=ASK, tools=tools[:1]))
    two = held(claude(messages=ASK, tools=tools))
    as_json = count_text_tokens("claude-sonnet-4-5", json.dumps(tools[1]))
    assert two - one == as_json + bound_for("claude-sonnet-4-5").per_tool
    assert bound_for("claude-sonnet-4-5").per_tool == 20  # 15 tools recorded: 231 over


def test_earlier_thinking_is_not_billed_before_opus_4_5_but_a_tool_loops_is() -> None:
    thinking = {"type": "thinking", "thinking": "a long chain of thought " * 200, "signature": "s"}
    call = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    answered = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": [thinking, {"type": "text", "text": "A"}]},
        {"role": "user", "content": "Q2"},
    ]
    in_loop = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": [thinking, call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]},
    ]
    old, new = "claude-sonnet-4-0", "claude-opus-4-5"
    stripped = ANTHROPIC.request({"model": old, "max_tokens": 9, "messages": answered})
    assert held(stripped) < 100
    for model, messages in ((old, in_loop), (new, answered), (new, in_loop)):
        request = ANTHROPIC.request({"model": model, "max_tokens": 9, "messages": messages})
        assert held(request) > 1_000, (model, messages is in_loop)


# -- OpenAI-compatible hosts ----------------------------------------------------------


def test_claude_behind_a_gateway_keeps_claudes_prompts() -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    model = "databricks-claude-3-7-sonnet"
    plain = CHAT.request({"model": model, "messages": ASK})
    formatted = CHAT.request({"model": model, "messages": ASK, "response_format": schema})
    thinking = CHAT.request({"model": model, "messages": ASK, "reasoning_effort": "low"})
    assert formatted.overhead_tokens - plain.overhead_tokens >= bound_for(model).tools_prompt
    assert thinking.overhead_tokens - plain.overhead_tokens == CLAUDE_THINKING_TOKENS
    suffixed = CHAT.request({"model": "anthropic/claude-3.7-sonnet:thinking", "messages": ASK})
    assert suffixed.overhead_tokens - plain.overhead_tokens == CLAUDE_THINKING_TOKENS
    # Not Claude: no Claude prompts.
    gpt = CHAT.request({"model": "gpt-4o", "messages": ASK, "response_format": schema})
    assert gpt.overhead_tokens < bound_for(model).tools_prompt


def test_a_gateway_preset_is_input_no_request_shows() -> None:
    request = CHAT.request({"model": "google/gemini-2.5-flash-lite", "messages": ASK})
    assert not request.unbounded
    preset = {"model": "google/gemini-2.5-flash-lite", "messages": ASK, "preset": "@preset/x"}
    assert CHAT.request(preset).unbounded == ("a gateway preset (a stored prompt)",)


def test_video_audio_and_document_urls_are_media_never_text() -> None:
    blob = "data:video/mp4;base64," + "QUFB" * 50_000
    video = {"type": "video_url", "video_url": {"url": blob}}
    request = CHAT.request(
        {"model": "google/gemini-2.5-flash", "messages": [{"role": "user", "content": [video]}]}
    )
    as_text = count_text_tokens("google/gemini-2.5-flash", blob)
    assert held(request) < as_text / 2  # timed at 6 kbit/s (no header), not read as text
    assert estimate_input(request.model, messages=request.messages).sound  # held at audio rate
    assert unbounded_reason({"type": "audio_url", "audio_url": {"url": "https://x/a.mp3"}})
    document = {"type": "document_url", "document_url": "https://x/a.pdf"}
    assert unbounded_reason(document) == "a document by URL"


# -- OpenAI ---------------------------------------------------------------------------


def test_function_tools_cost_their_declaration_and_the_tool_prompt() -> None:
    tool = {
        "type": "function",
        "name": "lookup",
        "description": "Look up an order.",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
    }
    plain = RESPONSES.request({"model": "gpt-4o", "input": ASK})
    loose = RESPONSES.request(
        {"model": "gpt-4o", "input": ASK, "tools": [tool | {"strict": False}]}
    )
    strict = RESPONSES.request({"model": "gpt-4o", "input": ASK, "tools": [tool]})  # default
    assert held(plain) < held(loose) < held(strict)  # Responses tools are strict by default
    added = [{"type": "additional_tools", "role": "developer", "tools": [tool]}]
    later = RESPONSES.request({"model": "gpt-4o", "input": [*ASK, *added]})
    assert later.overhead_tokens >= strict.overhead_tokens


def test_a_reasoning_mode_with_a_prompt_of_its_own_is_unbounded() -> None:
    base = {"model": "gpt-5.6-sol", "input": ASK}
    assert not RESPONSES.request({**base, "reasoning": {"effort": "low"}}).unbounded
    pro = RESPONSES.request({**base, "reasoning": {"mode": "pro"}})
    assert pro.unbounded == ("reasoning mode 'pro'",)


# -- Gemini ---------------------------------------------------------------------------


def test_gemini_tools_given_alone_and_schemas_with_references_are_counted() -> None:
    declaration = {"name": "get_capital", "description": "The capital of a country."}
    alone = GENERATE.request(
        {
            "model": "gemini-2.5-flash",
            "contents": "Hi",
            "config": {"tools": {"function_declarations": [declaration]}},
        }
    )
    assert alone.tools and held(alone) > held(
        GENERATE.request({"model": "gemini-2.5-flash", "contents": "Hi"})
    )
    node = {
        "type": "object",
        "properties": {
            "label": {"type": "string"},
            "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
        },
    }
    recursive = {
        **declaration,
        "parameters_json_schema": {"$defs": {"Node": node}, "$ref": "#/$defs/Node"},
    }
    flat = {**declaration, "parameters_json_schema": node}
    counted = [
        held(
            GENERATE.request(
                {
                    "model": "gemini-2.5-flash",
                    "contents": "Hi",
                    "config": {"tools": [{"function_declarations": [d]}]},
                }
            )
        )
        for d in (flat, recursive)
    ]
    assert counted[1] > counted[0] * 2  # the references are billed resolved, levels deep


def test_gemini_thought_signatures_are_held_by_length_not_as_text() -> None:
    signature = "Cq0BAdHtim9" * 1_000  # 11,000 characters of base64
    contents = [
        {"role": "user", "parts": [{"text": "Call f."}]},
        {
            "role": "model",
            "parts": [{"function_call": {"name": "f", "args": {}}, "thought_signature": signature}],
        },
    ]
    request = GENERATE.request({"model": "gemini-3-flash-preview", "contents": contents})
    assert request.overhead_tokens == len(signature) // 4
    assert held(request) < len(signature) // 3  # as text (digits one token each): far more


def test_a_requests_media_resolution_applies_to_parts_that_name_none() -> None:
    png = base64.b64encode(
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", 1000, 800)
    ).decode()
    image = {"inline_data": {"mime_type": "image/png", "data": png}}

    def hold(config: dict[str, Any], part: dict[str, Any] = image) -> int:
        contents = [{"role": "user", "parts": [part]}]
        return held(
            GENERATE.request(
                {"model": "gemini-3-flash-preview", "contents": contents, "config": config}
            )
        )

    high, low = hold({}), hold({"media_resolution": "MEDIA_RESOLUTION_LOW"})
    assert high - low == 1120 - 280
    own = {**image, "media_resolution": {"level": "MEDIA_RESOLUTION_HIGH"}}
    assert hold({"media_resolution": "MEDIA_RESOLUTION_LOW"}, own) == high  # the part's wins


def test_a_deployment_name_is_counted_with_its_models_tokenizer() -> None:
    # An Azure deployment or a proxy group was counted as an unknown model (1.4 x cl100k):
    # 1.5 x the hold of the model it runs.
    messages = [{"role": "user", "content": "Summarise the quarterly report in three bullets."}]
    direct = LLMRequest(model="gpt-4o-mini", messages=messages, max_tokens=10)
    deployed = LLMRequest(
        model="prod-chat", messages=messages, max_tokens=10, aliases={"prod-chat": "gpt-4o-mini"}
    )
    assert held(deployed) == held(direct)
