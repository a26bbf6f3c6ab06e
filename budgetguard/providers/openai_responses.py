"""OpenAI Responses (``client.responses``).

Usage: ``input_tokens`` / ``output_tokens`` with ``input_tokens_details``
(cached) and ``output_tokens_details`` (reasoning), counted as in chat
completions. Each ``web_search_call`` output item is a web search, billed
per search; ``service_tier`` selects the price variant. A stream ends with
``response.completed`` (or ``.incomplete`` / ``.failed``), whose response
carries the usage.
"""

from __future__ import annotations

from typing import Any

from .._core.records import LLMRequest
from .._core.usage import Usage, UsageDetails
from .base import Surface
from .fields import (
    check_block,
    count,
    get,
    has,
    int_arg,
    items_arg,
    model_arg,
    model_of,
    system_arg,
    usage_of,
)
from .openai_chat import request_context, service_tier_context
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
        return openai_responses_usage(response)

    def tracker(self) -> StreamTracker:
        return OpenAIResponsesStreamTracker()


ADAPTER = OpenAIResponses()
