"""OpenAI Responses (``client.responses``).

Usage: ``input_tokens`` / ``output_tokens`` with ``input_tokens_details``
(cached) and ``output_tokens_details`` (reasoning), counted as in chat
completions. A stream ends with ``response.completed`` (or ``.incomplete`` /
``.failed``), whose response carries the usage.
"""

from __future__ import annotations

from typing import Any

from .._core.records import LLMRequest
from .._core.usage import Usage
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
from .tracking import StreamTracker

__all__ = ["ADAPTER", "OpenAIResponses", "OpenAIResponsesStreamTracker", "openai_responses_usage"]


def openai_responses_usage(usage: object, path: str = "response.usage") -> Usage:
    """``ResponseUsage`` (the Responses API)."""
    check_block(usage, path)
    details_in = get(usage, "input_tokens_details")
    details_out = get(usage, "output_tokens_details")
    return usage_of(
        path,
        input_tokens=count(usage, "input_tokens", path, required=True),
        output_tokens=count(usage, "output_tokens", path, required=True),
        cache_read_tokens=count(details_in, "cached_tokens", f"{path}.input_tokens_details"),
        cache_write_tokens=count(details_in, "cache_write_tokens", f"{path}.input_tokens_details"),
        reasoning_tokens=count(details_out, "reasoning_tokens", f"{path}.output_tokens_details"),
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
        if kind in self._FINAL and response is not None:
            usage = get(response, "usage")
            if usage is not None:
                self.usage = openai_responses_usage(usage, f"{kind}.response.usage")


class OpenAIResponses:
    name = "responses"
    sdk = "openai"
    surfaces = (
        Surface(("responses",), "create"),
        Surface(("responses",), "parse", streams=False),
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
            provider="openai",
        )

    def recognizes(self, response: object, usage: object) -> bool:
        return has(usage, "input_tokens") or get(response, "object") == "response"

    def usage(self, usage: object, path: str = "response.usage") -> Usage:
        return openai_responses_usage(usage, path)

    def tracker(self) -> StreamTracker:
        return OpenAIResponsesStreamTracker()


ADAPTER = OpenAIResponses()
