"""Usage extraction: SDK models and dicts of every provider shape, streams, bad input."""

from __future__ import annotations

from typing import Any

import pytest

from budgetguard._core.errors import UsageError
from budgetguard._core.usage import Usage
from budgetguard.providers.anthropic import AnthropicStreamTracker
from budgetguard.providers.openai_chat import OpenAIChatStreamTracker
from budgetguard.providers.openai_responses import OpenAIResponsesStreamTracker
from budgetguard.providers.registry import usage_from_response
from budgetguard.providers.tracking import estimate_output_tokens


def chat_completion(**usage: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "choices": [],
        "usage": usage,
    }


# -- OpenAI chat completions --------------------------------------------------------
def test_openai_chat_dict_with_cached_and_reasoning_tokens() -> None:
    response = chat_completion(
        prompt_tokens=1200,
        completion_tokens=300,
        total_tokens=1500,
        prompt_tokens_details={"cached_tokens": 1024, "audio_tokens": 0},
        completion_tokens_details={"reasoning_tokens": 200},
    )
    assert usage_from_response(response) == (
        "gpt-4o-2024-08-06",
        Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1024, reasoning_tokens=200),
    )


def test_openai_chat_sdk_model() -> None:
    from openai.types.chat import ChatCompletion

    completion = ChatCompletion.model_validate(
        chat_completion(
            prompt_tokens=50,
            completion_tokens=7,
            total_tokens=57,
            prompt_tokens_details={"cached_tokens": 0, "cache_write_tokens": 10},
            completion_tokens_details=None,
        )
    )
    assert usage_from_response(completion) == (
        "gpt-4o-2024-08-06",
        Usage(input_tokens=50, output_tokens=7, cache_write_tokens=10),
    )


def test_openai_chat_without_details() -> None:
    response = chat_completion(prompt_tokens=5, completion_tokens=2, total_tokens=7)
    assert usage_from_response(response) == ("gpt-4o-2024-08-06", Usage(5, 2))


# -- OpenAI Responses ------------------------------------------------------------------
RESPONSES_USAGE = {
    "input_tokens": 900,
    "input_tokens_details": {"cached_tokens": 512, "cache_write_tokens": 0},
    "output_tokens": 400,
    "output_tokens_details": {"reasoning_tokens": 350},
    "total_tokens": 1300,
}


def test_openai_responses_dict() -> None:
    response = {"id": "resp_1", "object": "response", "model": "o3", "usage": RESPONSES_USAGE}
    assert usage_from_response(response) == (
        "o3",
        Usage(input_tokens=900, output_tokens=400, cache_read_tokens=512, reasoning_tokens=350),
    )


def test_openai_responses_sdk_model() -> None:
    from openai.types.responses import ResponseUsage

    class Holder:  # any object with .usage and .model is read alike
        model = "o3-mini"
        usage = ResponseUsage.model_validate(RESPONSES_USAGE)

    found = usage_from_response(Holder())
    assert found is not None
    assert found[1].reasoning_tokens == 350


# -- Anthropic ---------------------------------------------------------------------------
def test_anthropic_input_excludes_cache_so_we_add_it() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "model": "claude-sonnet-4-5",
        "content": [],
        "usage": {
            "input_tokens": 30,
            "cache_read_input_tokens": 2000,
            "cache_creation_input_tokens": 500,
            "output_tokens": 120,
        },
    }
    assert usage_from_response(message) == (
        "claude-sonnet-4-5",
        Usage(input_tokens=2530, output_tokens=120, cache_read_tokens=2000, cache_write_tokens=500),
    )


def test_anthropic_one_hour_cache_writes_are_split_out() -> None:
    usage = {
        "input_tokens": 30,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 500,
        "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300},
        "output_tokens": 120,
    }
    found = usage_from_response({"model": "claude-sonnet-4-5", "usage": usage})
    assert found is not None
    assert found[1] == Usage(
        input_tokens=530, output_tokens=120, cache_write_tokens=500, cache_write_1h_tokens=300
    )
    usage["cache_creation"] = {"ephemeral_1h_input_tokens": 501}
    with pytest.raises(UsageError, match="cache_write_1h_tokens"):
        usage_from_response({"model": "claude-sonnet-4-5", "usage": usage})


def test_anthropic_sdk_model_with_null_cache_fields() -> None:
    from anthropic.types import Message

    message = Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "hi"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 3},
        }
    )
    assert usage_from_response(message) == ("claude-haiku-4-5", Usage(12, 3))


def test_anthropic_thinking_tokens_are_reasoning() -> None:
    message = {
        "type": "message",
        "model": "claude-opus-4-5",
        "usage": {
            "input_tokens": 10,
            "output_tokens": 90,
            "output_tokens_details": {"thinking_tokens": 60},
        },
    }
    found = usage_from_response(message)
    assert found is not None and found[1].reasoning_tokens == 60


# -- no usage, bad usage -------------------------------------------------------------------
@pytest.mark.parametrize("response", [None, "text", 3, {"id": "x"}, {"usage": None}, object()])
def test_no_usage_is_none(response: object) -> None:
    assert usage_from_response(response) is None


@pytest.mark.parametrize(
    ("usage", "field"),
    [
        ({"prompt_tokens": -1, "completion_tokens": 2}, "response.usage.prompt_tokens"),
        ({"prompt_tokens": "12", "completion_tokens": 2}, "response.usage.prompt_tokens"),
        ({"prompt_tokens": 1, "completion_tokens": 2.5}, "response.usage.completion_tokens"),
        ({"prompt_tokens": True, "completion_tokens": 2}, "response.usage.prompt_tokens"),
        ({"prompt_tokens": 1}, "response.usage.completion_tokens"),
        (
            {
                "prompt_tokens": 1,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": -3},
            },
            "response.usage.prompt_tokens_details.cached_tokens",
        ),
        (
            {
                "prompt_tokens": 10,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 30},
            },
            "response.usage",
        ),
        ({"input_tokens": 5, "output_tokens": -1}, "response.usage.output_tokens"),
        (
            {"input_tokens": 5, "cache_read_input_tokens": "x", "output_tokens": 1},
            "cache_read_input_tokens",
        ),
        ({"something": 1}, "response.usage"),
    ],
)
def test_malformed_usage_names_the_field(usage: dict[str, Any], field: str) -> None:
    with pytest.raises(UsageError, match=field.replace(".", r"\.")):
        usage_from_response({"model": "m", "usage": usage})


def test_usage_of_the_wrong_type() -> None:
    with pytest.raises(UsageError, match=r"response\.usage"):
        usage_from_response({"model": "m", "usage": 12})


def test_usage_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        usage_from_response({"usage": {"prompt_tokens": -1, "completion_tokens": 0}})


# -- streams -------------------------------------------------------------------------------
def chunk(content: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    return {
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": choices,
        "usage": usage,
    }


def test_openai_chat_stream_final_usage_chunk() -> None:
    tracker = OpenAIChatStreamTracker()
    for piece in ("Hel", "lo"):
        tracker.feed(chunk(piece))
    assert tracker.usage is None and not tracker.done
    assert tracker.output_text == "Hello" and tracker.output_text_chars == 5
    tracker.feed(
        chunk(
            usage={
                "prompt_tokens": 9,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 4},
            }
        )
    )
    assert tracker.usage == Usage(9, 2, cache_read_tokens=4)
    assert tracker.model == "gpt-4o-mini"
    assert tracker.consumed(1000) == tracker.usage  # final usage wins over any estimate


def test_openai_chat_stream_tool_call_arguments_count_as_output() -> None:
    tracker = OpenAIChatStreamTracker()
    tracker.feed(
        {
            "model": "gpt-4o",
            "choices": [
                {
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "function": {"name": "f", "arguments": '{"a": 1}'}}
                        ]
                    }
                }
            ],
        }
    )
    assert tracker.output_text == 'f{"a": 1}'


def test_abandoned_stream_is_charged_input_estimate_plus_output_seen() -> None:
    tracker = OpenAIChatStreamTracker()
    tracker.feed(chunk("héllo wörld"))
    consumed = tracker.consumed(input_estimate=40)
    assert consumed.input_tokens == 40
    # never under-counted: at least one token, at most the utf-8 byte length
    assert 1 <= consumed.output_tokens <= len("héllo wörld".encode())


def test_estimate_output_tokens_upper_bound_without_a_model() -> None:
    assert estimate_output_tokens(None, "") == 0
    assert estimate_output_tokens(None, "abc") == 3
    assert estimate_output_tokens(None, "ü") == 2


def test_openai_responses_stream() -> None:
    tracker = OpenAIResponsesStreamTracker()
    tracker.feed({"type": "response.created", "response": {"model": "o3", "usage": None}})
    tracker.feed({"type": "response.output_text.delta", "delta": "Hi"})
    tracker.feed({"type": "response.output_text.done", "text": "Hi"})
    assert tracker.usage is None and tracker.model == "o3"
    tracker.feed(
        {"type": "response.completed", "response": {"model": "o3-2025", "usage": RESPONSES_USAGE}}
    )
    assert tracker.model == "o3-2025"
    assert tracker.usage == Usage(900, 400, cache_read_tokens=512, reasoning_tokens=350)
    assert tracker.output_text == "Hi"


def test_openai_responses_stream_bad_usage_names_the_event() -> None:
    tracker = OpenAIResponsesStreamTracker()
    with pytest.raises(UsageError, match=r"response\.completed\.response\.usage\.input_tokens"):
        tracker.feed(
            {
                "type": "response.completed",
                "response": {"usage": {"input_tokens": -5, "output_tokens": 1}},
            }
        )


ANTHROPIC_START = {
    "type": "message_start",
    "message": {
        "type": "message",
        "model": "claude-sonnet-4-5-20250929",
        "usage": {
            "input_tokens": 25,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 100,
            "output_tokens": 1,
        },
    },
}


def test_anthropic_stream_input_up_front_output_in_message_delta() -> None:
    tracker = AnthropicStreamTracker()
    tracker.feed(ANTHROPIC_START)
    tracker.feed(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    )
    tracker.feed(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"},
        }
    )
    assert tracker.usage is None
    assert tracker.input_usage is not None and tracker.input_usage.input_tokens == 1125
    partial = tracker.consumed(input_estimate=5)  # the reported input beats our estimate
    assert partial.input_tokens == 1125 and partial.cache_read_tokens == 1000
    assert partial.output_tokens >= 1
    tracker.feed({"type": "content_block_stop", "index": 0})
    tracker.feed(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 42},
        }
    )
    tracker.feed({"type": "message_stop"})
    assert tracker.usage == Usage(1125, 42, cache_read_tokens=1000, cache_write_tokens=100)
    assert tracker.model == "claude-sonnet-4-5-20250929"


def test_anthropic_message_delta_cumulative_input_counts_override_the_start() -> None:
    tracker = AnthropicStreamTracker()
    tracker.feed(ANTHROPIC_START)
    tracker.feed(
        {
            "type": "message_delta",
            "delta": {},
            "usage": {"input_tokens": 30, "cache_read_input_tokens": 1000, "output_tokens": 7},
        }
    )
    assert tracker.usage == Usage(1130, 7, cache_read_tokens=1000, cache_write_tokens=100)


def test_anthropic_stream_sdk_events() -> None:
    from anthropic.types import RawMessageDeltaEvent, RawMessageStartEvent

    tracker = AnthropicStreamTracker()
    start = dict(ANTHROPIC_START)
    start["message"] = {
        **ANTHROPIC_START["message"],  # type: ignore[dict-item]
        "id": "msg_1",
        "role": "assistant",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    tracker.feed(RawMessageStartEvent.model_validate(start))
    tracker.feed(
        RawMessageDeltaEvent.model_validate(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 9},
            }
        )
    )
    assert tracker.usage == Usage(1125, 9, cache_read_tokens=1000, cache_write_tokens=100)


def test_anthropic_bad_delta_usage() -> None:
    tracker = AnthropicStreamTracker()
    with pytest.raises(UsageError, match=r"message_delta\.usage\.output_tokens"):
        tracker.feed({"type": "message_delta", "usage": {"output_tokens": -1}})
