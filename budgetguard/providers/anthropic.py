"""Anthropic Messages (``client.messages``: ``create`` and ``stream``).

Usage: ``input_tokens`` *excludes* the cache, so the total input is
``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``;
``cache_creation.ephemeral_1h_input_tokens`` is the part written with the
one-hour lifetime (dearer); ``server_tool_use.web_search_requests`` are web
searches, billed per search. ``speed == "fast"`` and ``service_tier`` select
the price variant. A stream reports input and cache tokens in
``message_start`` and cumulative output in ``message_delta``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from .._core.records import LLMRequest
from .._core.usage import PriceContext, Usage, UsageDetails
from ..pricing.calibration import (
    CLAUDE_FORCED_TOOL_TOKENS,
    CLAUDE_THINKING_TOKENS,
    claude_keeps_thinking,
)
from .base import Surface
from .fields import (
    ServerTools,
    check_block,
    count,
    get,
    int_arg,
    items_arg,
    limit_arg,
    model_arg,
    model_of,
    schema_text,
    system_arg,
    usage_of,
)
from .tracking import StreamTracker

__all__ = [
    "ADAPTER",
    "AnthropicMessages",
    "AnthropicStreamTracker",
    "anthropic_usage",
    "price_context",
]


def price_context(usage: object) -> PriceContext:
    """Fast mode and batch processing have their own prices (priority has none)."""
    context: list[tuple[str, str]] = []
    if get(usage, "service_tier") == "batch":
        context.append(("processing", "batch"))
    if get(usage, "speed") == "fast":
        context.append(("speed", "fast"))
    return tuple(context)


def anthropic_usage(usage: object, path: str = "response.usage") -> Usage:
    """Anthropic ``Usage``: its ``input_tokens`` excludes cache reads and writes."""
    check_block(usage, path)
    read = count(usage, "cache_read_input_tokens", path)
    write = count(usage, "cache_creation_input_tokens", path)
    details = get(usage, "output_tokens_details")
    # The split of the writes by cache lifetime; one-hour writes cost more.
    creation = get(usage, "cache_creation")
    tools = get(usage, "server_tool_use")
    searches = count(tools, "web_search_requests", f"{path}.server_tool_use")
    return usage_of(
        path,
        input_tokens=count(usage, "input_tokens", path, required=True) + read + write,
        output_tokens=count(usage, "output_tokens", path, required=True),
        cache_read_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=count(details, "thinking_tokens", f"{path}.output_tokens_details"),
        cache_write_1h_tokens=count(
            creation, "ephemeral_1h_input_tokens", f"{path}.cache_creation"
        ),
        details=UsageDetails(web_searches=searches) if searches else None,
        context=price_context(usage),
    )


class AnthropicStreamTracker(StreamTracker):
    """Anthropic message stream events.

    ``message_start`` reports the input (and cache) tokens up front;
    ``message_delta`` reports cumulative output tokens (and, on newer API
    versions, cumulative input counts), so the usage is final at
    ``message_delta`` and confirmed by ``message_stop``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._start: object = None
        self._delta: object = None

    def _feed(self, event: object) -> None:
        kind = get(event, "type")
        if kind == "message_start":
            message = get(event, "message")
            self.model = model_of(message) or self.model
            usage = get(message, "usage")
            if usage is not None:
                self._start = usage
                self.input_usage = anthropic_usage(usage, "message_start.message.usage")
                self.reported_output_tokens = self.input_usage.output_tokens
        elif kind == "content_block_delta":
            delta = get(event, "delta")
            self._text(get(delta, "text"))
            self._text(get(delta, "thinking"))
            self._text(get(delta, "partial_json"))
        elif kind == "message_delta":
            usage = get(event, "usage")
            if usage is not None:
                self._delta = usage
                self.reported_output_tokens = count(
                    usage, "output_tokens", "message_delta.usage", required=True
                )
                self.usage = self._final()

    def _final(self) -> Usage:
        """Start counts overridden by any cumulative counts the delta repeats."""
        merged: dict[str, Any] = {}
        for source in (self._start, self._delta):
            if source is None:
                continue
            for name in (
                "input_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
                "cache_creation",
                "output_tokens",
                "output_tokens_details",
                "server_tool_use",
                "service_tier",
                "speed",
            ):
                value = get(source, name)
                if value is not None:
                    merged[name] = value
        merged.setdefault("input_tokens", 0)
        return anthropic_usage(merged, "message_delta.usage")


_SERVER_TOOLS = ("web_search_", "web_fetch_", "code_execution_", "tool_search_tool_", "advisor_")
"""Tool types Anthropic runs itself: their results come back as billed input (the advisor
runs another model on the conversation: 1,262 more input tokens on a recorded call)."""
CLIENT_TOOL_TOKENS = (
    ("bash_", 245),
    ("text_editor_", 700),
    ("str_replace_", 700),
    ("computer_", 1_240),
    ("memory_", 1_100),
)
"""Anthropic-defined tools the client runs: each adds a prompt of its own beyond the
tool-use system prompt. Anthropic documents bash 245, text editor 700, computer use 735
plus a 466-499 token system prompt; the memory tool billed up to 1,030 on recorded calls."""
_CLIENT_TOOLS = tuple(prefix for prefix, _ in CLIENT_TOOL_TOKENS)


def server_tools(kwargs: Mapping[str, Any]) -> ServerTools:
    """Anthropic's server tools (``max_uses`` bounds each; a web search is billed per
    search) and MCP servers (never bounded)."""
    uses = searches = content = 0
    unbounded: list[str] = []
    for tool in kwargs.get("tools") or ():
        kind = get(tool, "type")
        if not isinstance(kind, str) or kind == "custom" or kind.startswith(_CLIENT_TOOLS):
            continue
        if not kind.startswith(_SERVER_TOOLS):  # a tool type newer than this release
            unbounded.append(f"tool type {kind!r} (not known to budgetguard)")
            continue
        limit = limit_arg(get(tool, "max_uses"))
        if kind.startswith("code_execution_"):  # no use limit exists: output unbounded
            unbounded.append(f"tool {kind!r} (code output has no bound)")
        elif limit is None:
            unbounded.append(f"tool {kind!r} without max_uses")
            searches += 1 if kind.startswith("web_search_") else 0
        elif kind.startswith("web_fetch_"):  # a page has no size unless the request caps it
            page = limit_arg(get(tool, "max_content_tokens"))
            if page is None:
                unbounded.append(f"tool {kind!r} without max_content_tokens")
            else:
                content += limit * page
        else:
            uses += limit
            searches += limit if kind.startswith("web_search_") else 0
    if kwargs.get("mcp_servers"):
        unbounded.append("mcp_servers")
    return ServerTools(uses, searches, tuple(unbounded), content)


def _client_tools(tools: object) -> int:
    """The prompts Anthropic-defined client tools (bash, text editor, computer, memory) add."""
    total = 0
    for tool in tools if isinstance(tools, list | tuple) else ():
        kind = get(tool, "type")
        if isinstance(kind, str):
            total += next((n for prefix, n in CLIENT_TOOL_TOKENS if kind.startswith(prefix)), 0)
    return total


STRUCTURED_OUTPUT_TOKENS = 420
"""Structured outputs (``output_format``, ``output_config.format``) add a prompt of their
own around the schema: up to 391 tokens beyond the schema text on recorded calls."""
CONTEXT_EDIT_TOKENS = 100
"""``context_management`` (compaction, tool-result clearing) adds a prompt: 70 measured."""
TASK_BUDGET_TOKENS = 40
"""``output_config.task_budget`` adds a prompt: 32-33 measured."""


def _format_schema(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    config = kwargs.get("output_config")
    found = kwargs.get("output_format")
    if found is None and isinstance(config, Mapping):
        found = config.get("format")
    schema = schema_text(found)
    return (schema,) if schema is not None else ()


def _overhead(kwargs: Mapping[str, Any]) -> int:
    overhead = STRUCTURED_OUTPUT_TOKENS if _format_schema(kwargs) else 0
    thinking = kwargs.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive"):
        overhead += CLAUDE_THINKING_TOKENS
    choice = kwargs.get("tool_choice")
    if (
        kwargs.get("tools")
        and isinstance(choice, Mapping)
        and choice.get("type") in ("any", "tool")
    ):
        overhead += CLAUDE_FORCED_TOOL_TOKENS
    if kwargs.get("context_management"):
        overhead += CONTEXT_EDIT_TOKENS
    config = kwargs.get("output_config")
    if isinstance(config, Mapping) and config.get("task_budget"):
        overhead += TASK_BUDGET_TOKENS
    return overhead + _client_tools(kwargs.get("tools"))


_MIN_THINKING = 1024
"""Anthropic's smallest extended-thinking budget."""


def _thinking_budget(kwargs: Mapping[str, Any]) -> int | None:
    thinking = kwargs.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        return budget if isinstance(budget, int) else None
    return None


_THINKING_BLOCKS = ("thinking", "redacted_thinking")


def _billed_messages(messages: list[Any] | None, model: str) -> list[Any] | None:
    """The messages as billed: models before Opus 4.5 drop the thinking blocks of earlier
    turns; only the last assistant turn's, when it calls a tool (the loop in progress),
    stay in the context."""
    if not messages or claude_keeps_thinking(model):
        return messages
    turns = [i for i, m in enumerate(messages) if get(m, "role") == "assistant"]
    billed: list[Any] = []
    for index, message in enumerate(messages):
        content = get(message, "content")
        if isinstance(content, list) and any(get(b, "type") in _THINKING_BLOCKS for b in content):
            calls = any(get(block, "type") == "tool_use" for block in content)
            if not (index == turns[-1] and calls):
                kept = [block for block in content if get(block, "type") not in _THINKING_BLOCKS]
                billed.append({**message, "content": kept})
                continue
        billed.append(message)
    return billed


def _cache_ttl(cache_control: object) -> Literal["5m", "1h"] | None:
    """The request-wide ``cache_control`` (automatic caching of the whole prompt):
    ``"1h"`` or ``"5m"``, None when absent."""
    if not isinstance(cache_control, Mapping):
        return None
    return "1h" if cache_control.get("ttl") == "1h" else "5m"


class AnthropicMessages:
    name = "messages"
    sdk = "anthropic"
    surfaces = (
        Surface(("messages",), "create"),
        Surface(("messages",), "parse", streams=False),
        Surface(("messages",), "stream", kind="stream_manager"),
        Surface(("beta", "messages"), "create"),
        Surface(("beta", "messages"), "parse", streams=False),
        Surface(("beta", "messages"), "stream", kind="stream_manager"),
    )
    stream_usage_option = False

    def request(self, kwargs: dict[str, Any]) -> LLMRequest:
        model = model_arg(kwargs, "messages.create")
        return LLMRequest(
            model=model,
            messages=_billed_messages(items_arg(kwargs, "messages"), model),
            system=system_arg(kwargs.get("system")),
            tools=items_arg(kwargs, "tools"),
            max_tokens=int_arg(kwargs, "max_tokens"),
            price_context=(("speed", "fast"),) if kwargs.get("speed") == "fast" else (),
            cache_write=_cache_ttl(kwargs.get("cache_control")),
            output_floor=_MIN_THINKING + 1 if _thinking_budget(kwargs) is not None else 1,
            extra_text=_format_schema(kwargs),
            overhead_tokens=_overhead(kwargs),
            **server_tools(kwargs).request_fields(),
        )

    def cap_output(self, kwargs: dict[str, Any], tokens: int, model: str) -> None:
        kwargs["max_tokens"] = tokens
        budget = _thinking_budget(kwargs)
        if budget is not None and budget >= tokens:  # the API wants budget < max_tokens
            kwargs["thinking"] = {**kwargs["thinking"], "budget_tokens": max(1, tokens - 1)}

    def recognizes(self, response: object) -> bool:
        usage = get(response, "usage")
        return usage is not None and (
            get(response, "type") == "message"
            or get(usage, "cache_read_input_tokens") is not None
            or get(usage, "cache_creation_input_tokens") is not None
        )

    def model(self, response: object) -> str | None:
        return model_of(response)

    def usage(self, response: object) -> Usage:
        return anthropic_usage(get(response, "usage"))

    def tracker(self) -> StreamTracker:
        return AnthropicStreamTracker()


ADAPTER = AnthropicMessages()
