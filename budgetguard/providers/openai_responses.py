"""OpenAI Responses (``client.responses``).

Usage: ``input_tokens`` / ``output_tokens`` with ``input_tokens_details``
(cached) and ``output_tokens_details`` (reasoning), counted as in chat
completions. Each ``web_search_call`` output item is a web search, billed
per search; ``service_tier`` selects the price variant. A stream ends with
``response.completed`` (or ``.incomplete`` / ``.failed``), whose response
carries the usage.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .._core.records import LLMRequest
from .._core.usage import Usage, UsageDetails
from .base import Surface
from .fields import (
    ServerTools,
    check_block,
    count,
    get,
    has,
    int_arg,
    items_arg,
    limit_arg,
    model_arg,
    model_of,
    schema_text,
    system_arg,
    usage_of,
)
from .openai_chat import (
    MESSAGE_SLACK_TOKENS,
    OPENAI_SLACK_TOKENS,
    request_context,
    service_tier_context,
    template_tokens,
    tools_overhead,
)
from .tracking import StreamTracker

__all__ = ["ADAPTER", "OpenAIResponses", "OpenAIResponsesStreamTracker", "openai_responses_usage"]


def openai_responses_usage(response: object, path: str = "response") -> Usage:
    """A Responses API response's ``ResponseUsage``, web searches and service tier."""
    usage = get(response, "usage")
    where = f"{path}.usage"
    check_block(usage, where)
    details_in = get(usage, "input_tokens_details")
    details_out = get(usage, "output_tokens_details")
    searches = sum(
        1 for item in get(response, "output") or () if get(item, "type") == "web_search_call"
    )
    return usage_of(
        where,
        input_tokens=count(usage, "input_tokens", where, required=True),
        output_tokens=count(usage, "output_tokens", where, required=True),
        cache_read_tokens=count(details_in, "cached_tokens", f"{where}.input_tokens_details"),
        cache_write_tokens=count(details_in, "cache_write_tokens", f"{where}.input_tokens_details"),
        reasoning_tokens=count(details_out, "reasoning_tokens", f"{where}.output_tokens_details"),
        details=UsageDetails(web_searches=searches) if searches else None,
        context=service_tier_context(get(response, "service_tier")),
    )


EMPTY_TOOLS_TOKENS = 20
"""``tools=[]`` on Responses: 16 tokens above the same call without it, recorded."""
TOOL_SEARCH_TOKENS = 470
"""Tool search and namespaced tools (``defer_loading``) add a prompt: up to 450 above the
rendered declarations on recorded calls."""
STRING_INPUT_WRAPPER = 7
"""Tokens a string ``input`` costs above its text (measured: 7 on every recorded call)."""


def _added_tools(kwargs: Mapping[str, Any]) -> list[object]:
    """Tools an ``additional_tools`` input item brings in mid-conversation."""
    items = kwargs.get("input")
    found: list[object] = []
    for item in items if isinstance(items, list | tuple) else ():
        if get(item, "type") == "additional_tools":
            found.extend(get(item, "tools") or ())
    return found


def _overhead(kwargs: Mapping[str, Any]) -> int:
    # A string input is sent as one user message: its wrapper is billed too.
    added = _added_tools(kwargs)
    every = [*(kwargs.get("tools") or ()), *added]
    overhead = OPENAI_SLACK_TOKENS + tools_overhead(every, kwargs.get("model"), responses=True)
    given = kwargs.get("input")
    if isinstance(given, str):
        overhead += STRING_INPUT_WRAPPER
    elif isinstance(given, list | tuple):
        overhead += MESSAGE_SLACK_TOKENS * len(given)
    overhead += template_tokens(kwargs.get("model"))
    tools = kwargs.get("tools")
    if isinstance(tools, list | tuple) and not tools:
        overhead += EMPTY_TOOLS_TOKENS  # an empty list still switches the tool prompt on
    if any(get(t, "type") == "tool_search" or get(t, "tools") is not None for t in tools or ()):
        overhead += TOOL_SEARCH_TOKENS
    return overhead


def _format_schema(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """``text.format`` (a JSON schema) or a pydantic ``text_format`` for parse()."""
    text = kwargs.get("text")
    schema = None
    found = text.get("format") if isinstance(text, Mapping) else None
    if isinstance(found, Mapping) and found.get("schema") is not None:
        schema = schema_text(found)  # name, schema and strict: all of it reaches the model
    if schema is None:
        schema = schema_text(kwargs.get("text_format"))
    return (schema,) if schema is not None else ()


_BUILT_IN = ("web_search", "file_search", "code_interpreter", "mcp", "image_generation")
"""Tools OpenAI runs itself: their results come back as billed input."""

_SEEN_LIMIT = 10_000
_seen: OrderedDict[str, int] = OrderedDict()
"""Responses the guard saw, by id: the input plus output tokens a later request naming
one as ``previous_response_id`` is billed again as input (bounded, oldest dropped)."""
_seen_lock = threading.Lock()


def remember(response_id: object, usage: Usage) -> None:
    if not isinstance(response_id, str) or not response_id:
        return
    with _seen_lock:
        _seen[response_id] = usage.input_tokens + usage.output_tokens
        _seen.move_to_end(response_id)
        while len(_seen) > _SEEN_LIMIT:
            _seen.popitem(last=False)


def _hidden_input(kwargs: dict[str, Any]) -> dict[str, Any]:
    """What the request bills that it does not show: a previous response's conversation,
    built-in tools' results (bounded by ``max_tool_calls`` when given)."""
    unbounded: list[str] = []
    hidden = 0
    previous = kwargs.get("previous_response_id")
    if isinstance(previous, str) and previous:
        with _seen_lock:
            seen = _seen.get(previous)
        if seen is None:
            unbounded.append(f"previous_response_id {previous!r} was not seen by this process")
        else:
            hidden = seen
    if kwargs.get("conversation"):
        unbounded.append("conversation state")
    reasoning = kwargs.get("reasoning")
    if isinstance(reasoning, Mapping) and reasoning.get("mode") not in (None, "default"):
        # "pro" billed 1,549 input tokens for a 19-token question: a prompt of its own
        unbounded.append(f"reasoning mode {reasoning.get('mode')!r}")
    items = kwargs.get("input")
    if isinstance(items, list | tuple) and any(get(i, "type") == "reasoning" for i in items):
        unbounded.append("reasoning items (a previous turn's reasoning is billed again)")
    kinds = [get(tool, "type") for tool in kwargs.get("tools") or ()]
    built_in = [k for k in kinds if isinstance(k, str) and k.startswith(_BUILT_IN)]
    searching = any(k.startswith("web_search") for k in built_in)
    limit = limit_arg(kwargs.get("max_tool_calls"))
    tools = ServerTools()
    if built_in and limit is not None:
        tools = ServerTools(limit, limit if searching else 0)
    elif built_in:
        tools = ServerTools(0, 1 if searching else 0, (f"tools {built_in} without max_tool_calls",))
    fields = tools.request_fields()
    fields["unbounded"] = (*unbounded, *tools.unbounded)
    fields["hidden_input_tokens"] = hidden + tools.content_tokens
    return fields


class OpenAIResponsesStreamTracker(StreamTracker):
    """Responses API stream events; the final one carries the response with its usage."""

    _FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

    def _feed(self, event: object) -> None:
        kind = get(event, "type")
        if not isinstance(kind, str):
            return
        response = get(event, "response")
        if response is not None:
            self.model = model_of(response) or self.model
        if kind.endswith(".delta"):
            self._text(get(event, "delta"))
        if kind in self._FINAL and response is not None and get(response, "usage") is not None:
            self.usage = openai_responses_usage(response, f"{kind}.response")
            remember(get(response, "id"), self.usage)


class OpenAIResponses:
    name = "responses"
    sdk = "openai"
    surfaces = (
        Surface(("responses",), "create"),
        Surface(("responses",), "parse", streams=False),
        Surface(("beta", "responses"), "create"),
    )
    stream_usage_option = False

    def request(self, kwargs: dict[str, Any]) -> LLMRequest:
        given = kwargs.get("input")
        return LLMRequest(
            model=model_arg(kwargs, "responses.create"),
            prompt=given if isinstance(given, str) else None,
            messages=None if isinstance(given, str) else items_arg(kwargs, "input"),
            system=system_arg(kwargs.get("instructions")),
            tools=items_arg(kwargs, "tools"),
            max_tokens=int_arg(kwargs, "max_output_tokens"),
            price_context=request_context(kwargs),
            output_floor=16,  # the API refuses a smaller max_output_tokens
            extra_text=_format_schema(kwargs),
            overhead_tokens=_overhead(kwargs),
            **_hidden_input(kwargs),
        )

    def cap_output(self, kwargs: dict[str, Any], tokens: int, model: str) -> None:
        kwargs["max_output_tokens"] = tokens

    def recognizes(self, response: object) -> bool:
        usage = get(response, "usage")
        return usage is not None and (
            has(usage, "input_tokens") or get(response, "object") == "response"
        )

    def model(self, response: object) -> str | None:
        return model_of(response)

    def usage(self, response: object) -> Usage:
        usage = openai_responses_usage(response)
        remember(get(response, "id"), usage)  # a later previous_response_id bills it again
        return usage

    def tracker(self) -> StreamTracker:
        return OpenAIResponsesStreamTracker()


ADAPTER = OpenAIResponses()
