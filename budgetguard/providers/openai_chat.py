"""OpenAI Chat Completions (``client.chat.completions``), and every OpenAI-compatible API.

Usage: ``prompt_tokens`` already includes ``prompt_tokens_details.cached_tokens``
and ``.audio_tokens``; ``completion_tokens`` includes
``completion_tokens_details.reasoning_tokens`` and ``.audio_tokens``. The
response's ``service_tier`` (``flex``, ``priority``, ...) selects the price
variant. A stream carries its usage in a last chunk with no choices, only
when the request asked for it (``stream_options={"include_usage": True}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._core.records import LLMRequest
from .._core.usage import PriceContext, Usage, UsageDetails
from ..pricing.calibration import (
    CLAUDE_FORCED_TOOL_TOKENS,
    CLAUDE_THINKING_TOKENS,
    bound_for,
    family_of,
)
from ..pricing.tokens import TOOLS_OVERHEAD_TOKENS, encoding_for
from .base import Surface
from .fields import (
    check_block,
    count,
    count_arg,
    get,
    has,
    int_arg,
    items_arg,
    model_arg,
    model_of,
    schema_text,
    usage_of,
)
from .tracking import StreamTracker

__all__ = [
    "ADAPTER",
    "HARMONY_TOKENS",
    "MESSAGE_SLACK_TOKENS",
    "OPENAI_SLACK_TOKENS",
    "STRICT_TOOLS_TOKENS",
    "TOOLS_PREAMBLE_TOKENS",
    "OpenAIChat",
    "OpenAIChatStreamTracker",
    "openai_chat_usage",
    "request_context",
    "service_tier_context",
    "template_tokens",
    "tools_overhead",
]

_STANDARD_TIERS = frozenset({"auto", "default", "standard", "on_demand"})


def service_tier_context(tier: object) -> PriceContext:
    """The price variant a ``service_tier`` selects (none for the standard tiers)."""
    if not isinstance(tier, str) or not tier or tier in _STANDARD_TIERS:
        return ()
    return (("service_tier", tier),)


def openai_chat_usage(
    usage: object, path: str = "response.usage", context: PriceContext = ()
) -> Usage:
    """``CompletionUsage`` (chat completions, also the last chunk of a stream)."""
    check_block(usage, path)
    prompt = get(usage, "prompt_tokens_details")
    completion = get(usage, "completion_tokens_details")
    audio_in = count(prompt, "audio_tokens", f"{path}.prompt_tokens_details")
    audio_out = count(completion, "audio_tokens", f"{path}.completion_tokens_details")
    details = None
    if audio_in or audio_out:
        details = UsageDetails(input_audio_tokens=audio_in, output_audio_tokens=audio_out)
    return usage_of(
        path,
        input_tokens=count(usage, "prompt_tokens", path, required=True),
        output_tokens=count(usage, "completion_tokens", path, required=True),
        cache_read_tokens=count(prompt, "cached_tokens", f"{path}.prompt_tokens_details"),
        cache_write_tokens=count(prompt, "cache_write_tokens", f"{path}.prompt_tokens_details"),
        reasoning_tokens=count(completion, "reasoning_tokens", f"{path}.completion_tokens_details"),
        details=details,
        context=context,
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
            context = service_tier_context(get(event, "service_tier"))
            self.usage = openai_chat_usage(usage, "chunk.usage", context)


def request_context(kwargs: Mapping[str, Any]) -> PriceContext:
    return service_tier_context(kwargs.get("service_tier"))


_REASONING = ("o1", "o3", "o4", "gpt-5")
_CAP_FIELDS = ("max_completion_tokens", "max_tokens")


def _reasoning(model: object) -> bool:
    return isinstance(model, str) and model.rsplit("/", 1)[-1].startswith(_REASONING)


HARMONY_TOKENS = 170
"""gpt-oss models (any host) wrap every request in the harmony format's system header:
about 60 tokens measured on Groq and Cerebras (up to 163 with reasoning settings)."""


def _extra_text(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """An output schema (``response_format``) and legacy ``functions``: prompt text."""
    texts: list[str] = []
    response_format = kwargs.get("response_format")
    if isinstance(response_format, Mapping):
        schema = schema_text(response_format.get("json_schema"))
        if schema is not None:
            texts.append(schema)
    elif response_format is not None:
        schema = schema_text(response_format)  # a pydantic model class, for parse()
        if schema is not None:
            texts.append(schema)
    functions = kwargs.get("functions")
    if isinstance(functions, list | tuple) and functions:
        texts.extend(t for f in functions if (t := schema_text(f)) is not None)
    return tuple(texts)


TOOLS_PREAMBLE_TOKENS = 50
"""The tool-calling preamble of models OpenAI does not render (open models behind
compatible hosts, counted as the schemas' JSON + 20): up to 44 on recorded calls."""
STRICT_TOOLS_TOKENS = 180
"""Strict function schemas there add more (a one-tool strict request billed 160 above)."""
OPENAI_TOOL_PREAMBLES = {
    # (responses API, gpt-5 family, strict) -> tokens above the rendered declarations + 20,
    # the most any recorded call needed (docs/evidence/token-bounds.md)
    (False, False, False): 25,
    (False, False, True): 25,
    (False, True, False): 90,
    (False, True, True): 90,
    (True, False, False): 20,
    (True, False, True): 220,
    (True, True, False): 0,
    (True, True, True): 90,
}
"""OpenAI's own models read function tools rendered as TypeScript declarations
(``pricing.tool_text``); what the tool prompt adds around them, by API and model family.
On Responses a tool is strict unless it says ``strict: false``."""


OPENAI_SLACK_TOKENS = 2
"""Recorded gpt-5 chats with assistant turns bill 1 token above OpenAI's documented
per-message count (and Responses calls likewise)."""
MESSAGE_SLACK_TOKENS = 1
"""Per message, above the documented 3: gpt-5.4 with content lists billed 3 above the count
over 7 messages, gpt-3.5 with an assistant tool call 2 over 2."""
O1_HEADER_TOKENS = 6
"""o1-mini / o1-preview: one of two recorded calls billed 5 above the count."""


def tools_overhead(tools: object, model: object, *, responses: bool = False) -> int:
    """What the tool-calling prompt adds above the tool definitions as counted."""
    if not isinstance(tools, list | tuple) or not tools:
        return 0
    strict = any(
        get(tool, "strict") is True
        or get(get(tool, "function"), "strict") is True
        or (responses and get(tool, "type") == "function" and get(tool, "strict") is None)
        for tool in tools
    )  # Responses function tools are strict unless they say otherwise
    if isinstance(model, str) and encoding_for(model) is not None:
        gpt5 = model.rsplit("/", 1)[-1].removeprefix("openai.").startswith("gpt-5")
        return OPENAI_TOOL_PREAMBLES[(responses, gpt5, strict)]
    return STRICT_TOOLS_TOKENS if strict else TOOLS_PREAMBLE_TOKENS


def _unbounded(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """Gateway features that add input no request field shows: OpenRouter's fallback
    ``models`` (another model, another system prompt), its web plugin and server tools,
    Groq's compound systems (they run tools)."""
    found: list[str] = []
    if kwargs.get("models"):
        found.append("fallback models")
    plugins = kwargs.get("plugins")
    if isinstance(plugins, list | tuple) and plugins:
        found.append("gateway plugins")
    kinds = [get(tool, "type") for tool in kwargs.get("tools") or ()]
    if any(isinstance(kind, str) and ":" in kind for kind in kinds):
        found.append("gateway server tools")
    model = kwargs.get("model")
    if isinstance(model, str) and "compound" in model.lower():
        found.append("a compound system that runs tools")
    if kwargs.get("preset"):
        found.append("a gateway preset (a stored prompt)")
    return tuple(found)


def template_tokens(model: object) -> int:
    """A prompt template the model's host wraps every request in (gpt-oss's harmony)."""
    return HARMONY_TOKENS if isinstance(model, str) and "gpt-oss" in model.lower() else 0


def _claude_behind_gateway(kwargs: Mapping[str, Any], model: str) -> int:
    """A Claude model on an OpenAI-compatible host keeps Claude's prompts: thinking, and a
    ``response_format`` the gateway turns into a forced tool (its tool-use prompt)."""
    overhead = 0
    response_format = kwargs.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") != "text":
        overhead += bound_for(model).tools_prompt + CLAUDE_FORCED_TOOL_TOKENS
    if (
        kwargs.get("reasoning")
        or kwargs.get("reasoning_effort")
        or kwargs.get("thinking")
        or model.endswith(":thinking")
    ):
        overhead += CLAUDE_THINKING_TOKENS
    return overhead


def _overhead(kwargs: Mapping[str, Any]) -> int:
    overhead = OPENAI_SLACK_TOKENS + tools_overhead(kwargs.get("tools"), kwargs.get("model"))
    messages = kwargs.get("messages")
    if isinstance(messages, list | tuple):
        overhead += MESSAGE_SLACK_TOKENS * len(messages)
    model = kwargs.get("model")
    overhead += template_tokens(model)
    if kwargs.get("functions"):
        overhead += TOOLS_OVERHEAD_TOKENS + TOOLS_PREAMBLE_TOKENS
    if isinstance(model, str):
        if model.rsplit("/", 1)[-1].startswith("o1"):
            overhead += O1_HEADER_TOKENS
        if family_of(model) == "claude":
            overhead += _claude_behind_gateway(kwargs, model)
    return overhead


class OpenAIChat:
    name = "chat.completions"
    sdk = "openai"
    surfaces = (
        Surface(("chat", "completions"), "create"),
        Surface(("chat", "completions"), "parse", streams=False),
        Surface(("beta", "chat", "completions"), "create"),
        Surface(("beta", "chat", "completions"), "parse", streams=False),
    )
    stream_usage_option = True

    def request(self, kwargs: dict[str, Any]) -> LLMRequest:
        return LLMRequest(
            model=model_arg(kwargs, "chat.completions.create"),
            messages=items_arg(kwargs, "messages"),
            tools=items_arg(kwargs, "tools"),
            max_tokens=int_arg(kwargs, "max_completion_tokens", "max_tokens"),
            price_context=request_context(kwargs),
            choices=count_arg(kwargs.get("n")),
            extra_text=_extra_text(kwargs),
            overhead_tokens=_overhead(kwargs),
            unbounded=_unbounded(kwargs),
        )

    def cap_output(self, kwargs: dict[str, Any], tokens: int, model: str) -> None:
        # Every cap field the caller set gets the cap (a server reading either bills no
        # more than was held); a field given as None / NOT_GIVEN is dropped, never sent
        # beside the other. None set: max_tokens, which every compatible server takes,
        # except OpenAI's reasoning models, which only take max_completion_tokens.
        given = [name for name in _CAP_FIELDS if int_arg(kwargs, name) is not None]
        for name in _CAP_FIELDS:
            if name in kwargs and name not in given:
                del kwargs[name]
        for name in given or [_CAP_FIELDS[0] if _reasoning(model) else _CAP_FIELDS[1]]:
            kwargs[name] = tokens

    def recognizes(self, response: object) -> bool:
        usage = get(response, "usage")
        return has(usage, "prompt_tokens") and get(usage, "prompt_tokens") is not None

    def model(self, response: object) -> str | None:
        return model_of(response)

    def usage(self, response: object) -> Usage:
        context = service_tier_context(get(response, "service_tier"))
        return openai_chat_usage(get(response, "usage"), "response.usage", context)

    def tracker(self) -> StreamTracker:
        return OpenAIChatStreamTracker()


ADAPTER = OpenAIChat()
