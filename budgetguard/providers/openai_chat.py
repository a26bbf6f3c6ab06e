"""OpenAI Chat Completions (``client.chat.completions``).

Usage: ``prompt_tokens`` already includes ``prompt_tokens_details.cached_tokens``;
``completion_tokens`` includes ``completion_tokens_details.reasoning_tokens``.
A stream carries its usage in a last chunk with no choices, only when the
request asked for it (``stream_options={"include_usage": True}``).
"""

from __future__ import annotations

from typing import Any

from .._core.records import LLMRequest
from .._core.usage import Usage
from .base import Surface
from .fields import check_block, count, get, has, int_arg, items_arg, model_arg, model_of, usage_of
from .tracking import StreamTracker

__all__ = ["ADAPTER", "OpenAIChat", "OpenAIChatStreamTracker", "openai_chat_usage"]


def openai_chat_usage(usage: object, path: str = "response.usage") -> Usage:
    """``CompletionUsage`` (chat completions, also the last chunk of a stream)."""
    check_block(usage, path)
    prompt = get(usage, "prompt_tokens_details")
    completion = get(usage, "completion_tokens_details")
    return usage_of(
        path,
        input_tokens=count(usage, "prompt_tokens", path, required=True),
        output_tokens=count(usage, "completion_tokens", path, required=True),
        cache_read_tokens=count(prompt, "cached_tokens", f"{path}.prompt_tokens_details"),
        cache_write_tokens=count(prompt, "cache_write_tokens", f"{path}.prompt_tokens_details"),
        reasoning_tokens=count(completion, "reasoning_tokens", f"{path}.completion_tokens_details"),
    )


class OpenAIChatStreamTracker(StreamTracker):
    """``ChatCompletionChunk`` s; the usage comes in a last chunk with no choices."""

    def _feed(self, event: object) -> None:
        self.model = model_of(event) or self.model
        for choice in get(event, "choices") or ():
            delta = get(choice, "delta")
            self._text(get(delta, "content"))
            self._text(get(delta, "refusal"))
            self._text(get(delta, "reasoning_content"))
            for call in get(delta, "tool_calls") or ():
                function = get(call, "function")
                self._text(get(function, "name"))
                self._text(get(function, "arguments"))
        usage = get(event, "usage")
        if usage is not None:
            self.usage = openai_chat_usage(usage, "chunk.usage")


class OpenAIChat:
    name = "chat.completions"
    sdk = "openai"
    surfaces = (
        Surface(("chat", "completions"), "create"),
        Surface(("chat", "completions"), "parse", streams=False),
    )
    stream_usage_option = True

    def request(self, kwargs: dict[str, Any]) -> LLMRequest:
        return LLMRequest(
            model=model_arg(kwargs, "chat.completions.create"),
            messages=items_arg(kwargs, "messages"),
            tools=items_arg(kwargs, "tools"),
            max_tokens=int_arg(kwargs, "max_completion_tokens", "max_tokens"),
            provider="openai",
        )

    def recognizes(self, response: object, usage: object) -> bool:
        return has(usage, "prompt_tokens") and get(usage, "prompt_tokens") is not None

    def usage(self, usage: object, path: str = "response.usage") -> Usage:
        return openai_chat_usage(usage, path)

    def tracker(self) -> StreamTracker:
        return OpenAIChatStreamTracker()


ADAPTER = OpenAIChat()
