"""OpenAI function tools rendered as the model reads them (``pricing.tool_text``)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetguard.pricing.tokens import count_message_tokens, count_text_tokens
from budgetguard.pricing.tool_text import openai_tool_text

ASK = [{"role": "user", "content": "Hi"}]

WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Get the weather.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city."},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "array", "items": {"type": "integer"}},
            "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
}


def test_a_chat_tool_renders_as_a_typescript_declaration() -> None:
    assert openai_tool_text({"type": "function", "function": WEATHER}) == "\n".join(
        [
            "// Get the weather.",
            "type get_weather = (_: {",
            "// The city.",
            "city: string,",
            'unit?: "c" | "f",',
            "days?: number[],",
            "where?: {",
            "  lat?: number,",
            "},",
            "}) => any;",
        ]
    )


def test_a_responses_tool_renders_the_same() -> None:
    chat = openai_tool_text({"type": "function", "function": WEATHER})
    assert openai_tool_text({"type": "function", **WEATHER}) == chat


def test_what_the_rendering_cannot_express_is_kept_as_json() -> None:
    tool = {
        "type": "function",
        "name": "pick",
        "parameters": {
            "type": "object",
            "properties": {"choice": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "$defs": {"Big": {"type": "object", "description": "kept"}},
        },
    }
    text = openai_tool_text(tool)
    assert text is not None
    assert '"anyOf"' in text and '"$defs"' in text and "kept" in text


def test_a_tool_without_parameters_is_a_bare_function() -> None:
    assert openai_tool_text({"type": "function", "name": "ping"}) == "type ping = () => any;"


def test_other_tools_are_left_to_json() -> None:
    assert openai_tool_text({"type": "web_search"}) is None
    assert openai_tool_text({"type": "custom", "name": "grammar"}) is None
    assert openai_tool_text({"type": "function", "function": {"description": "no name"}}) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(parameters=_json, properties=_json, required=_json)
def test_a_malformed_schema_never_crashes_the_rendering(
    parameters: Any, properties: Any, required: Any
) -> None:
    schema = {"type": "object", "properties": properties, "required": required}
    for value in (parameters, schema, {"type": "object", "properties": {"x": parameters}}):
        text = openai_tool_text({"type": "function", "name": "f", "parameters": value})
        assert text is None or text.startswith("type f")  # None: counted as its JSON


def test_a_tool_that_is_no_schema_is_counted_as_its_json_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = {"type": "function", "function": {"name": "odd", "parameters": "a string"}}
    with caplog.at_level(logging.WARNING, logger="budgetguard"):
        counted = [count_message_tokens("gpt-4o", ASK, tools=[bad]) for _ in range(3)]
    plain = count_message_tokens("gpt-4o", ASK)
    as_json = count_text_tokens("gpt-4o", json.dumps(bad))
    assert counted[0] - plain >= as_json
    assert [r.getMessage() for r in caplog.records].count(
        "function tool 'odd': parameters is not a JSON schema object; counted as its JSON"
    ) == 1
