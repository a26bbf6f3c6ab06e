"""Google Gemini through google-genai (``client.models``, ``client.aio.models``).

Every HTTP request is one guarded call: the SDK's private per-request methods
(``_generate_content``, ``_generate_content_stream``) are guarded, so each hop
of automatic function calling or continuation is reserved and settled on its
own (wrapping the public ``generate_content`` would only see the last hop's
usage). Chats (``client.chats``) go through the same methods. Where an SDK
version lacks them, the public methods are guarded instead.

Usage (``usage_metadata`` / ``usageMetadata``), as genai-prices reads it:
input = ``prompt_token_count`` (cached included) + ``tool_use_prompt_token_count``;
output = ``candidates_token_count`` + ``thoughts_token_count`` (thoughts are
reasoning); cache reads = ``cached_content_token_count``; audio, image
(documents count as images) and video tokens from the ``*_tokens_details``
lists. A stream's chunks carry a running total: the last one counts. A
grounded response (web search queries in its grounding metadata) counts one
web search. The service tier comes from the request's ``config.service_tier``
(responses do not say it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, cast

from .._core.errors import ConfigurationError
from .._core.records import LLMRequest
from .._core.usage import PriceContext, Usage, UsageDetails
from .base import Surface
from .fields import (
    ServerTools,
    check_block,
    count,
    count_arg,
    get,
    mapping,
    schema_text,
    usage_of,
)
from .tracking import StreamTracker

__all__ = ["EMBED", "GENERATE", "GeminiEmbed", "GeminiGenerate", "gemini_usage"]

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def _config(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as a snake_case dict, whether a pydantic model or a (camelCase) dict."""
    config = kwargs.get("config")
    if config is None:
        return {}
    dump = getattr(config, "model_dump", None)
    if callable(dump):
        dumped = dump(exclude_none=True)
        return dict(dumped) if isinstance(dumped, Mapping) else {}
    if isinstance(config, Mapping):
        return {_snake(str(key)): value for key, value in config.items()}
    return {}


def _model(kwargs: Mapping[str, Any], where: str) -> str:
    model = kwargs.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigurationError(f"{where}: model= must be a model name to budget the call")
    return _bare(model)


def _bare(model: str) -> str:
    """``gemini-2.5-flash`` for ``models/...``, and for Vertex's
    ``projects/p/locations/l/publishers/google/models/...`` and ``publishers/google/models/...``."""
    return (
        model.rpartition("models/")[2]
        if model.startswith(("models/", "projects/", "publishers/"))
        else model
    )


def _part(part: object) -> Mapping[str, Any]:
    """A part for the estimate: its text; media (``inline_data``, ``file_data``) as they
    are, for the image and media formulas (by mime type, size and resolution); a function
    response's JSON as text and the media parts it carries as media."""
    if isinstance(part, str):
        return {"type": "text", "text": part}
    fields = {_snake(k): v for k, v in mapping(part).items() if v is not None}
    fields.pop("thought_signature", None)  # counted apart: see _signature_tokens
    if isinstance(fields.get("text"), str):
        return {"type": "text", "text": fields["text"]}
    for key in ("inline_data", "file_data"):
        if key in fields:
            blob = {_snake(k): v for k, v in mapping(fields[key]).items() if v is not None}
            media: dict[str, Any] = {key: blob}
            if "media_resolution" in fields:
                media["media_resolution"] = fields["media_resolution"]
            return media
    response = fields.get("function_response")
    if response is not None:
        answer = {_snake(k): v for k, v in mapping(response).items() if v is not None}
        nested = answer.pop("parts", None) or ()
        text = json.dumps(answer, default=str, ensure_ascii=False)
        return {"content": [{"type": "text", "text": text}, *(_part(p) for p in nested)]}
    return {"type": "text", "text": json.dumps(fields, default=str, ensure_ascii=False)}


SIGNATURE_CHARS_PER_TOKEN = 4
"""A thought signature (base64 a Gemini 3 model returns and is sent back next turn) bills
about one token per 4.8 characters on recorded calls: held at one per 4."""


def _signature_tokens(given: object) -> int:
    """What the thought signatures in ``contents`` bill (never their text count: base64
    counts several times what it bills)."""
    total = 0
    contents = given if isinstance(given, list | tuple) else ()
    for content in contents:
        parts = get(content, "parts") if not isinstance(content, str) else None
        for part in parts if isinstance(parts, list | tuple) else ():
            signature = get(part, "thought_signature")
            if signature is None and isinstance(part, Mapping):
                signature = part.get("thoughtSignature")
            if isinstance(signature, str | bytes):
                total += -(-len(signature) // SIGNATURE_CHARS_PER_TOKEN)
    return total


def _with_resolution(messages: list[Mapping[str, Any]], level: object) -> list[Mapping[str, Any]]:
    """The request's ``media_resolution`` given to every media part that names none (a
    part's own setting wins, as in the API)."""
    if level is None:
        return messages

    def stamped(part: Mapping[str, Any]) -> Mapping[str, Any]:
        if ("inline_data" in part or "file_data" in part) and "media_resolution" not in part:
            return {**part, "media_resolution": level}
        inner = part.get("content")
        if isinstance(inner, list):
            return {**part, "content": [stamped(p) for p in inner]}
        return part

    return [{**m, "content": [stamped(p) for p in m["content"]]} for m in messages]


def _contents(given: object) -> list[Mapping[str, Any]]:
    """``contents`` (a string, parts, ``Content`` objects or dicts) as chat messages."""
    if given is None:
        return []
    single = (
        isinstance(given, str | bytes | Mapping)
        or hasattr(given, "model_dump")  # a Content or Part object (pydantic iterates fields)
        or not isinstance(given, Iterable)
    )
    items: Iterable[object] = [given] if single else cast(Iterable[object], given)
    messages: list[Mapping[str, Any]] = []
    for item in items:
        content = mapping(item) if not isinstance(item, str) else {}
        parts = content.get("parts") if isinstance(content, Mapping) else None
        if parts is None:  # a bare string or part: a user turn of its own
            messages.append({"role": "user", "content": [_part(item)]})
        else:
            role = content.get("role") or "user"
            messages.append({"role": role, "content": [_part(p) for p in parts or ()]})
    return messages


def _system(value: object) -> list[Mapping[str, Any]] | None:
    if value is None:
        return None
    return (
        [{"type": "text", "text": value}]
        if isinstance(value, str)
        else [part for message in _contents(value) for part in message["content"]]
    )


def _tool_list(value: object) -> tuple[object, ...]:
    """``tools`` as a sequence: one tool given alone (a mapping) is a list of one."""
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,) if isinstance(value, Mapping) else ()


_REF_DEPTH = 6


def _inline_refs(value: Any, defs: Mapping[str, Any], depth: int = 0) -> Any:
    """A JSON schema with each local ``$ref`` replaced by its definition, ``_REF_DEPTH``
    levels deep: Gemini bills a schema with its references resolved, not as sent (a
    recursive one, recorded, billed about what six levels of it count)."""
    if isinstance(value, Mapping):
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = defs.get(ref.rsplit("/", 1)[-1])
            if isinstance(target, Mapping) and depth < _REF_DEPTH:
                return _inline_refs(target, defs, depth + 1)
        return {k: _inline_refs(v, defs, depth) for k, v in value.items() if k != "$defs"}
    if isinstance(value, list):
        return [_inline_refs(item, defs, depth) for item in value]
    return value


def _resolved(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    """A tool whose declarations' schemas carry ``$defs``, with the references inlined."""
    text = json.dumps(tool, default=str)
    if '"$ref"' not in text:
        return tool
    plain = json.loads(text)

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            defs = value.get("$defs")
            if isinstance(defs, Mapping):
                return _inline_refs(value, defs)
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(item) for item in value]
        return value

    resolved: Mapping[str, Any] = resolve(plain)
    return resolved


def _tools(value: object) -> list[Mapping[str, Any]] | None:
    """Tool declarations as the model sees them; a Python function (automatic function
    calling) by its name, signature and docstring."""
    if value is None:
        return None
    tools: list[Mapping[str, Any]] = []
    for tool in _tool_list(value):
        if callable(tool) and not hasattr(tool, "model_dump"):
            name = getattr(tool, "__name__", "tool")
            tools.append({"name": name, "doc": tool.__doc__ or "", "signature": repr(tool)})
        else:
            tools.append(_resolved(mapping(tool)))
    return tools or None


_SERVER_TOOLS = (
    "google_search",
    "google_search_retrieval",
    "url_context",
    "code_execution",
    "file_search",
    "google_maps",
    "enterprise_web_search",
)
"""Tools Gemini runs itself: their prompts come back as billed input (tool-use tokens)."""


def _schema(config: Mapping[str, Any]) -> tuple[str, ...]:
    """``response_schema`` / ``response_json_schema``: prompt text, as the schema's JSON."""
    for key in ("response_json_schema", "response_schema"):
        text = schema_text(config.get(key))
        if text is not None:
            return (text,)
    return ()


def _server_tools(value: object, cached: object = None) -> ServerTools:
    """Gemini's built-in tools have no use limit: unbounded; a grounded answer is billed
    one search. A ``cached_content`` is billed as input the request does not show."""
    hidden = ("cached_content",) if cached else ()
    found = [
        name
        for tool in _tool_list(value)
        if not callable(tool) or hasattr(tool, "model_dump")
        for name, setting in {_snake(str(k)): v for k, v in mapping(tool).items()}.items()
        if name in _SERVER_TOOLS and setting is not None
    ]
    if not found:
        return ServerTools(unbounded=hidden)
    searching = any(name.startswith("google_search") for name in found)
    return ServerTools(0, 1 if searching else 0, (*hidden, f"tools {found} (no use limit)"))


def request_context(config: Mapping[str, Any]) -> PriceContext:
    tier = config.get("service_tier")
    tier = getattr(tier, "value", tier)
    if isinstance(tier, str) and tier.lower() in ("flex", "priority"):
        return (("service_tier", tier.lower()),)
    return ()


def _modalities(details: object, path: str) -> dict[str, int]:
    """``[{modality: AUDIO, token_count: 3}, ...]`` as {"AUDIO": 3, ...} (documents as images)."""
    counts: dict[str, int] = {}
    if not isinstance(details, Iterable) or isinstance(details, str | bytes | Mapping):
        return counts
    for entry in details:
        modality = get(entry, "modality")
        name = str(getattr(modality, "value", modality) or "").upper()
        if name == "DOCUMENT":
            name = "IMAGE"
        tokens = count(entry, "token_count", path) or count(entry, "tokenCount", path)
        counts[name] = counts.get(name, 0) + tokens
    return counts


def _field(block: object, snake: str) -> object:
    value = get(block, snake)
    if value is None:
        parts = snake.split("_")
        value = get(block, parts[0] + "".join(p.title() for p in parts[1:]))
    return value


def _count(block: object, snake: str, path: str, *, required: bool = False) -> int:
    value = _field(block, snake)
    return count({snake: value}, snake, path, required=required)


def _searches(response: object) -> int:
    for candidate in get(response, "candidates") or ():
        grounding = _field(candidate, "grounding_metadata")
        if grounding is not None and _field(grounding, "web_search_queries"):
            return 1  # one grounded prompt
    return 0


def gemini_usage(response: object, path: str = "response.usage_metadata") -> Usage:
    """What one ``GenerateContentResponse`` (or the last chunk of a stream) billed."""
    usage = _field(response, "usage_metadata")
    check_block(usage, path)
    prompt = _count(usage, "prompt_token_count", path, required=True)
    tools = _count(usage, "tool_use_prompt_token_count", path)
    candidates = _count(usage, "candidates_token_count", path)
    thoughts = _count(usage, "thoughts_token_count", path)
    inputs = _modalities(_field(usage, "prompt_tokens_details"), path)
    for name, tokens in _modalities(_field(usage, "tool_use_prompt_tokens_details"), path).items():
        inputs[name] = inputs.get(name, 0) + tokens
    cached = _modalities(_field(usage, "cache_tokens_details"), path)
    outputs = _modalities(_field(usage, "candidates_tokens_details"), path)
    details = UsageDetails(
        input_audio_tokens=inputs.get("AUDIO", 0),
        input_image_tokens=inputs.get("IMAGE", 0),
        input_video_tokens=inputs.get("VIDEO", 0),
        cache_audio_read_tokens=cached.get("AUDIO", 0),
        cache_image_read_tokens=cached.get("IMAGE", 0),
        cache_video_read_tokens=cached.get("VIDEO", 0),
        output_audio_tokens=outputs.get("AUDIO", 0),
        output_image_tokens=outputs.get("IMAGE", 0),
        web_searches=_searches(response),
    )
    return usage_of(
        path,
        input_tokens=prompt + tools,
        output_tokens=candidates + thoughts,
        cache_read_tokens=_count(usage, "cached_content_token_count", path),
        reasoning_tokens=thoughts,
        details=details if details != _NO_DETAILS else None,
    )


_NO_DETAILS = UsageDetails()


def _reported_model(response: object) -> str | None:
    model = _field(response, "model_version")
    return _bare(model) if isinstance(model, str) and model else None


class GeminiStreamTracker(StreamTracker):
    """``GenerateContentResponse`` chunks: text in candidates, usage a running total."""

    def _feed(self, event: object) -> None:
        self.model = _reported_model(event) or self.model
        for candidate in get(event, "candidates") or ():
            content = get(candidate, "content")
            for part in get(content, "parts") or ():
                self._text(get(part, "text"))
                call = _field(part, "function_call")
                if call is not None:
                    self._text(json.dumps(mapping(call), default=str))
        if _field(event, "usage_metadata") is not None:
            self.usage = gemini_usage(event, "chunk.usage_metadata")


class GeminiGenerate:
    name = "models.generate_content"
    sdk = "google"
    surfaces = (
        Surface(("models",), "_generate_content", fallback="generate_content"),
        Surface(
            ("models",),
            "_generate_content_stream",
            kind="stream",
            fallback="generate_content_stream",
        ),
        Surface(("aio", "models"), "_generate_content", fallback="generate_content"),
        Surface(
            ("aio", "models"),
            "_generate_content_stream",
            kind="stream",
            fallback="generate_content_stream",
        ),
    )
    stream_usage_option = False

    def request(self, kwargs: dict[str, Any]) -> LLMRequest:
        config = _config(kwargs)
        # max_output_tokens caps thoughts and answer together (googleapis/python-genai
        # #782, #2062): it bounds the bill as it stands, whatever the thinking budget.
        max_tokens = config.get("max_output_tokens")
        return LLMRequest(
            model=_model(kwargs, "models.generate_content"),
            messages=_with_resolution(
                _contents(kwargs.get("contents")), config.get("media_resolution")
            ),
            system=_system(config.get("system_instruction")),
            tools=_tools(config.get("tools")),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            price_context=request_context(config),
            choices=count_arg(config.get("candidate_count")),
            extra_text=_schema(config),
            overhead_tokens=_signature_tokens(kwargs.get("contents")),
            **_server_tools(config.get("tools"), config.get("cached_content")).request_fields(),
        )

    def cap_output(self, kwargs: dict[str, Any], tokens: int, model: str) -> None:
        config = kwargs.get("config")
        if config is None:
            kwargs["config"] = {"max_output_tokens": tokens}
        elif callable(getattr(config, "model_copy", None)):
            kwargs["config"] = config.model_copy(update={"max_output_tokens": tokens})
        elif isinstance(config, Mapping):
            key = "maxOutputTokens" if "maxOutputTokens" in config else "max_output_tokens"
            kwargs["config"] = {**config, key: tokens}

    def recognizes(self, response: object) -> bool:
        usage = _field(response, "usage_metadata")
        return usage is not None and _field(usage, "prompt_token_count") is not None

    def model(self, response: object) -> str | None:
        return _reported_model(response)

    def usage(self, response: object) -> Usage:
        return gemini_usage(response)

    def tracker(self) -> StreamTracker:
        return GeminiStreamTracker()


class GeminiEmbed:
    """``models.embed_content``: input tokens at the embedding price. The Gemini API
    reports ``usage_metadata`` on embeddings only sometimes: without it, the call is
    charged its estimate (the input counted before sending), logged once."""

    name = "models.embed_content"
    sdk = "google"
    surfaces = (
        Surface(("models",), "embed_content", streams=False),
        Surface(("aio", "models"), "embed_content", streams=False),
    )
    stream_usage_option = False

    def request(self, kwargs: dict[str, Any]) -> LLMRequest:
        return LLMRequest(
            model=_model(kwargs, "models.embed_content"),
            messages=_contents(kwargs.get("contents")),
            max_tokens=0,
        )

    def cap_output(self, kwargs: dict[str, Any], tokens: int, model: str) -> None:
        """Embeddings write no output: nothing to cap."""

    def recognizes(self, response: object) -> bool:
        return (
            get(response, "embeddings") is not None
            and _field(response, "usage_metadata") is not None
        )

    def model(self, response: object) -> str | None:
        return None

    def usage(self, response: object) -> Usage:
        usage = _field(response, "usage_metadata")
        path = "response.usage_metadata"
        check_block(usage, path)
        return usage_of(path, input_tokens=_count(usage, "prompt_token_count", path, required=True))

    def tracker(self) -> StreamTracker:  # embeddings never stream
        raise NotImplementedError


GENERATE = GeminiGenerate()
EMBED = GeminiEmbed()
