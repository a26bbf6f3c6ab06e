"""Every provider adapter budgetguard knows, and reading usage out of any response.

``ADAPTERS`` is the one list to extend when adding a provider. Its order is
the order in which response shapes are tried by ``usage_from_response``,
the most specific first: embeddings (a list of embeddings) before chat
completions (``prompt_tokens``) before Anthropic (``type == "message"`` or
cache counts) before Responses (plain ``input_tokens``); Gemini's
``usage_metadata`` is its own.
"""

from __future__ import annotations

from .._core.errors import UsageError
from .._core.usage import Usage
from . import anthropic, gemini, openai_chat, openai_embeddings, openai_responses
from .base import Adapter
from .fields import check_block, get

__all__ = ["ADAPTERS", "adapters_for", "usage_from_response"]

ADAPTERS: tuple[Adapter, ...] = (
    openai_embeddings.ADAPTER,
    openai_chat.ADAPTER,
    anthropic.ADAPTER,
    openai_responses.ADAPTER,
    gemini.GENERATE,
    gemini.EMBED,
)


def adapters_for(sdk: str) -> tuple[Adapter, ...]:
    """The adapters whose surfaces live on a client of ``sdk`` (its root module)."""
    return tuple(adapter for adapter in ADAPTERS if adapter.sdk == sdk)


def usage_from_response(response: object) -> tuple[str | None, Usage] | None:
    """``(reported model, usage)`` of a provider response; ``None`` without usage.

    The shape is recognised from the response itself, so SDK models and JSON
    dicts are read alike. A usage block no adapter recognises raises
    ``UsageError``: charging a guess for a response we misread would break
    the budget silently.
    """
    if response is None or isinstance(response, (str, bytes, int, float)):
        return None
    for adapter in ADAPTERS:
        if adapter.recognizes(response):
            return adapter.model(response), adapter.usage(response)
    usage = get(response, "usage")
    if usage is None:
        return None
    check_block(usage, "response.usage")
    raise UsageError(
        "response.usage: neither prompt_tokens (OpenAI chat) nor input_tokens "
        "(OpenAI Responses, Anthropic) found"
    )
