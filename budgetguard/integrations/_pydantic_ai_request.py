"""A pydantic-ai model request, read as the provider SDK call it becomes.

budgetguard already knows how to bound an OpenAI chat, OpenAI Responses or
Anthropic Messages call from its keyword arguments (``providers/``: token
counting, tool and schema prompts, images and documents, thinking, cache
writes, server tools). Rather than a second set of rules, a pydantic-ai
request - its messages, its settings and its tool definitions - is rendered
into the keyword arguments of the SDK call its model makes, and handed to
that wire format's adapter: an agent's calls are estimated exactly like the
same calls made through ``bg.instrument(client)``.

The rendering errs high where pydantic-ai may send less: every function tool
(deferred ones included), the output schema beside the output tool, a
previous turn's thinking, the whole history when a provider keeps the
conversation server-side. Where it cannot see a size (a native tool's
results, a file by URL) it says so (``LLMRequest.unbounded``), and the
policy's allowance is held.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, cast

from pydantic_ai.messages import (
    BaseToolCallPart,
    BaseToolReturnPart,
    BinaryContent,
    CachePoint,
    FileUrl,
    ImageUrl,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    SystemPromptPart,
    TextContent,
    TextPart,
    ThinkingPart,
    UploadedFile,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.settings import ModelSettings

from .._core.records import LLMRequest
from ..providers import anthropic, openai_chat, openai_responses
from ..providers.base import Adapter

__all__ = ["Wire", "llm_request", "wire_of"]

Wire = Literal["chat", "responses", "anthropic"]
Json = dict[str, Any]

_ADAPTERS: Mapping[Wire, Adapter] = {
    "chat": openai_chat.ADAPTER,
    "responses": openai_responses.ADAPTER,
    "anthropic": anthropic.ADAPTER,
}


def wire_of(model: Model) -> Wire:
    """The wire format ``model`` speaks: Anthropic Messages, OpenAI Responses, else chat.

    Known by class name along the MRO (subclasses included), so no provider SDK is
    imported. Every other model (Gemini, Mistral, Groq, Bedrock, ...) is read as an
    OpenAI chat call: the token counter applies the model family's own bounds.
    """
    names = {cls.__name__ for cls in type(model).__mro__}
    if "AnthropicModel" in names:
        return "anthropic"
    if "OpenAIResponsesModel" in names:
        return "responses"
    return "chat"


def llm_request(
    wire: Wire,
    model_name: str,
    messages: Sequence[ModelMessage],
    settings: ModelSettings | None,
    params: ModelRequestParameters,
) -> LLMRequest:
    """The ``LLMRequest`` of one model request, as ``wire``'s adapter reads its SDK call."""
    kwargs = _kwargs(wire, model_name, messages, dict(settings or {}), params)
    request = _ADAPTERS[wire].request(kwargs)
    native = [str(getattr(tool, "kind", type(tool).__name__)) for tool in params.native_tools]
    if native:
        # Results of tools the provider runs itself come back as input no request shows.
        request = replace(
            request,
            unbounded=(*request.unbounded, *(f"native tool {kind!r}" for kind in native)),
            web_searches=request.web_searches + sum(k.startswith("web_search") for k in native),
        )
    return request


def cap_settings(
    wire: Wire,
    settings: ModelSettings | None,
    tokens: int,
    model_name: str,
    merged: ModelSettings | None,
) -> ModelSettings:
    """``settings`` sending ``tokens`` as the output cap (``max_tokens``). On Anthropic a
    thinking budget (``merged``: with the model's own settings) is kept below it, as the
    adapter does for an SDK call."""
    capped: dict[str, Any] = dict(settings or {})
    thinking = (merged or {}).get("anthropic_thinking")
    if wire == "anthropic" and isinstance(thinking, Mapping):
        kwargs: Json = {"thinking": dict(thinking)}
        anthropic.ADAPTER.cap_output(kwargs, tokens, model_name)
        if kwargs["thinking"] != thinking:
            capped["anthropic_thinking"] = kwargs["thinking"]
    capped["max_tokens"] = tokens
    return cast(ModelSettings, capped)


# -- the SDK call -------------------------------------------------------------------------
def _kwargs(
    wire: Wire,
    model_name: str,
    messages: Sequence[ModelMessage],
    settings: dict[str, Any],
    params: ModelRequestParameters,
) -> Json:
    system = [*_system_prompts(messages), *_instructions(messages, params)]
    tools = [*params.function_tools, *params.output_tools]
    forced = bool(tools) and params.output_mode == "tool" and not params.allow_text_output
    kwargs: Json = {"model": model_name}
    if isinstance(settings.get("max_tokens"), int):
        kwargs["max_tokens"] = settings["max_tokens"]
    if wire == "anthropic":
        kwargs["system"] = "\n\n".join(system) if system else None
        kwargs["messages"] = _turns(messages, "anthropic")
        kwargs["tools"] = [_anthropic_tool(tool) for tool in tools] or None
        kwargs["tool_choice"] = {"type": "any"} if forced else None
        thinking = settings.get("anthropic_thinking")
        if isinstance(thinking, Mapping):
            kwargs["thinking"] = dict(thinking)
        elif params.thinking not in (None, False):
            kwargs["thinking"] = {"type": "enabled"}  # the thinking prompt, at least
        if params.output_object is not None:
            kwargs["output_format"] = {"type": "json_schema", **_schema(params)}
        if _caches(settings, params, messages):
            # Claude writes only what is marked: the whole prompt, at the write rate.
            kwargs["cache_control"] = {"type": "ephemeral", "ttl": _ttl(settings, messages)}
        return kwargs
    tier = settings.get("openai_service_tier") or settings.get("service_tier")
    if isinstance(tier, str):
        kwargs["service_tier"] = tier
    turns = [{"role": "system", "content": text} for text in system]
    turns += _turns(messages, wire)
    if wire == "responses":
        kwargs["input"] = turns
        kwargs["tools"] = [_responses_tool(tool) for tool in tools] or None
        kwargs["max_output_tokens"] = kwargs.pop("max_tokens", None)
        if params.output_object is not None:
            kwargs["text"] = {"format": {"type": "json_schema", **_schema(params)}}
        return kwargs
    kwargs["messages"] = turns
    kwargs["tools"] = [_chat_tool(tool) for tool in tools] or None
    if params.output_object is not None:
        kwargs["response_format"] = {"type": "json_schema", "json_schema": _schema(params)}
    return kwargs


def _system_prompts(messages: Sequence[ModelMessage]) -> list[str]:
    return [
        part.content
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, SystemPromptPart)
    ]


def _instructions(messages: Sequence[ModelMessage], params: ModelRequestParameters) -> list[str]:
    """The run's instructions: the request's parts, else the latest request's text (a
    direct ``model.request`` call). Both are sent as system text."""
    if params.instruction_parts is not None:
        return [part.content for part in params.instruction_parts if part.content]
    for message in reversed(messages):
        if isinstance(message, ModelRequest) and message.instructions:
            return [message.instructions]
    return []


def _schema(params: ModelRequestParameters) -> Json:
    output = params.output_object
    assert output is not None
    return {
        "name": output.name or "final_result",
        "description": output.description or "",
        "schema": output.json_schema,
        "strict": bool(output.strict),
    }


def _chat_tool(tool: Any) -> Json:
    function: Json = {
        "name": tool.name,
        "description": tool.description or "",
        "parameters": tool.parameters_json_schema,
    }
    if tool.strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def _responses_tool(tool: Any) -> Json:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description or "",
        "parameters": tool.parameters_json_schema,
        "strict": bool(tool.strict),
    }


def _anthropic_tool(tool: Any) -> Json:
    return {
        "name": tool.name,
        "description": tool.description or "",
        "input_schema": tool.parameters_json_schema,
    }


def _caches(
    settings: Mapping[str, Any], params: ModelRequestParameters, messages: Sequence[ModelMessage]
) -> bool:
    if params.cache is not None or any(
        key.startswith("anthropic_cache") and settings[key] for key in settings
    ):
        return True
    return any(isinstance(item, CachePoint) for item in _user_items(messages))


def _ttl(settings: Mapping[str, Any], messages: Sequence[ModelMessage]) -> str:
    """``"1h"`` when anything asks for the one-hour cache (dearer), else ``"5m"``."""
    asked = [value for key, value in settings.items() if key.startswith("anthropic_cache")]
    asked += [item.ttl for item in _user_items(messages) if isinstance(item, CachePoint)]
    return "1h" if "1h" in asked else "5m"


def _user_items(messages: Sequence[ModelMessage]) -> Iterable[object]:
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and not isinstance(part.content, str):
                    yield from part.content


# -- messages ------------------------------------------------------------------------------
def _turns(messages: Sequence[ModelMessage], wire: Wire) -> list[Json]:
    turns: list[Json] = []
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                turns.extend(_request_part(part, wire))
        elif isinstance(message, ModelResponse):
            turns.extend(_response(message, wire))
    return turns


def _request_part(part: object, wire: Wire) -> list[Json]:
    """One request part as messages (a system prompt is sent apart, by ``_kwargs``)."""
    if isinstance(part, SystemPromptPart):
        return []
    if isinstance(part, UserPromptPart):
        content = part.content
        if wire == "anthropic" and isinstance(content, str):
            return [{"role": "user", "content": [_item(content, wire)]}]  # always blocks
        return [{"role": "user", "content": _content(content, wire)}]
    if isinstance(part, BaseToolReturnPart):
        text, files = part.model_response_str_and_user_content()
        turns = [_tool_result(part.tool_call_id, text, wire, error=False)]
        if files:
            turns.append({"role": "user", "content": _content(files, wire)})
        return turns
    if isinstance(part, RetryPromptPart):
        if part.tool_name is not None:
            return [_tool_result(part.tool_call_id, part.model_response(), wire, error=True)]
        return [{"role": "user", "content": part.model_response()}]
    other: object = getattr(part, "content", None)  # a part kind newer than this adapter
    return [] if other is None else [{"role": "user", "content": _text(other)}]


def _tool_result(call_id: str, text: str, wire: Wire, *, error: bool) -> Json:
    if wire == "anthropic":
        content = [{"type": "text", "text": text}]
        block = {"type": "tool_result", "tool_use_id": call_id, "content": content}
        return {"role": "user", "content": [block | {"is_error": error}]}
    if wire == "responses":
        return {"type": "function_call_output", "call_id": call_id, "output": text}
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _response(message: ModelResponse, wire: Wire) -> list[Json]:
    """A previous answer, as it is sent back: text, thinking and tool calls."""
    blocks: list[Json] = []
    calls: list[Json] = []
    for part in message.parts:
        if isinstance(part, TextPart) and part.content:
            blocks.append({"type": "text", "text": part.content})
        elif isinstance(part, ThinkingPart):
            blocks.append(_thinking(part, wire))
        elif isinstance(part, BaseToolCallPart):
            arguments = part.args_as_json_str()
            if wire == "anthropic":
                blocks.append(
                    {"type": "tool_use", "id": part.tool_call_id, "name": part.tool_name}
                    | {"input": part.args_as_dict()}
                )
            elif wire == "responses":
                calls.append(
                    {"type": "function_call", "call_id": part.tool_call_id}
                    | {"name": part.tool_name, "arguments": arguments}
                )
            else:
                function = {"name": part.tool_name, "arguments": arguments}
                calls.append({"id": part.tool_call_id, "type": "function", "function": function})
        else:
            content = getattr(part, "content", None)  # files, compaction, newer kinds
            if content:
                blocks.append({"type": "text", "text": _text(content)})
    if wire == "responses":
        turns = [{"role": "assistant", "content": blocks}] if blocks else []
        return turns + calls
    turn: Json = {"role": "assistant", "content": blocks}
    if calls:
        turn["tool_calls"] = calls
    return [turn] if blocks or calls else []


def _thinking(part: ThinkingPart, wire: Wire) -> Json:
    """Thinking as it is sent back: a provider's own block (signed) or reasoning item
    (with an id), else as text in tags, the way pydantic-ai replays another's."""
    if wire == "anthropic":
        if part.signature:
            return {"type": "thinking", "thinking": part.content, "signature": part.signature}
        text = f"<assistant_thinking>\n{part.content}\n</assistant_thinking>"
        return {"type": "text", "text": text}
    if wire == "responses" and (part.id or part.signature):
        # An OpenAI reasoning item, sent back as one: billed again, its size unknown.
        return {"type": "reasoning", "summary": [{"type": "summary_text", "text": part.content}]}
    return {"type": "text", "text": f"<think>\n{part.content}\n</think>"}


def _content(content: str | Sequence[Any], wire: Wire) -> str | list[Json]:
    if isinstance(content, str):
        return content
    blocks: list[Json] = []
    for item in content:
        if isinstance(item, CachePoint):
            continue
        blocks.append(_item(item, wire))
    return blocks


def _item(item: object, wire: Wire) -> Json:
    """One piece of user content as the wire's content part: images and files keep
    their bytes (sized from them) or their URL (no size known before the call)."""
    if isinstance(item, str):
        return {"type": "text", "text": item}
    if isinstance(item, TextContent):
        return {"type": "text", "text": _text(item.content)}
    if isinstance(item, BinaryContent):
        return _binary(item, wire)
    if isinstance(item, FileUrl):
        return _url(item, wire)
    if isinstance(item, UploadedFile):
        return {"type": "file", "file": {"file_id": item.file_id}}
    return {"type": "text", "text": _text(item)}


def _binary(item: BinaryContent, wire: Wire) -> Json:
    media_type = item.media_type
    if item.is_image:
        if wire == "anthropic":
            source = {"type": "base64", "media_type": media_type, "data": item.base64}
            return {"type": "image", "source": source}
        return {"type": "image_url", "image_url": {"url": item.data_uri}}
    if item.is_audio:
        return {"type": "input_audio", "input_audio": {"data": item.base64, "format": item.format}}
    if item.is_video:
        return {"type": "video_url", "video_url": {"url": item.data_uri}}
    if wire == "anthropic":
        source = {"type": "base64", "media_type": media_type, "data": item.base64}
        return {"type": "document", "source": source}
    return {"type": "file", "file": {"file_data": item.data_uri, "filename": item.identifier}}


def _url(item: FileUrl, wire: Wire) -> Json:
    url = item.url
    if isinstance(item, ImageUrl):
        if wire == "anthropic":
            return {"type": "image", "source": {"type": "url", "url": url}}
        return {"type": "image_url", "image_url": {"url": url}}
    kind = type(item).__name__
    if kind == "AudioUrl":
        return {"type": "audio_url", "audio_url": {"url": url}}
    if kind == "VideoUrl":
        return {"type": "video_url", "video_url": {"url": url}}
    if wire == "anthropic":
        return {"type": "document", "source": {"type": "url", "url": url}}
    return {"type": "file", "file": {"file_data": url, "filename": item.identifier}}


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)
