"""OpenAI embeddings (``client.embeddings``): input tokens only, at the embedding price.

Usage: ``usage.prompt_tokens`` (``total_tokens`` is the same number); no
output. The request's ``input`` is a string, a list of strings, or token id
arrays (counted one token per id).
"""

from __future__ import annotations

from typing import Any

from .._core.records import LLMRequest
from .._core.usage import Usage
from .base import Surface
from .fields import check_block, count, get, model_arg, model_of, usage_of
from .tracking import StreamTracker

__all__ = ["ADAPTER", "OpenAIEmbeddings"]


def _texts(given: object) -> list[str] | None:
    """The texts to count: token id arrays become one placeholder word per id."""
    if isinstance(given, str):
        return [given]
    if not isinstance(given, list | tuple):
        return None
    texts: list[str] = []
    for item in given:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, int):
            texts.append(" x")  # one token id: one token
        elif isinstance(item, list | tuple):
            texts.append(" x" * len(item))
    return texts


class OpenAIEmbeddings:
    name = "embeddings"
    sdk = "openai"
    surfaces = (Surface(("embeddings",), "create", streams=False),)
    stream_usage_option = False

    def request(self, kwargs: dict[str, Any]) -> LLMRequest:
        return LLMRequest(
            model=model_arg(kwargs, "embeddings.create"),
            prompt=_texts(kwargs.get("input")),
            max_tokens=0,
        )

    def cap_output(self, kwargs: dict[str, Any], tokens: int, model: str) -> None:
        """Embeddings write no output: nothing to cap."""

    def recognizes(self, response: object) -> bool:
        data = get(response, "data")
        return (
            get(response, "object") == "list"
            and get(response, "usage") is not None
            and isinstance(data, list)
            and all(get(item, "object") == "embedding" for item in data)
        )

    def model(self, response: object) -> str | None:
        return model_of(response)

    def usage(self, response: object) -> Usage:
        usage = get(response, "usage")
        check_block(usage, "response.usage")
        return usage_of(
            "response.usage",
            input_tokens=count(usage, "prompt_tokens", "response.usage", required=True),
        )

    def tracker(self) -> StreamTracker:  # embeddings never stream
        raise NotImplementedError


ADAPTER = OpenAIEmbeddings()
