"""Actual usage out of provider responses and streams: pure, no I/O.

Every provider counts differently; this module maps each onto ``Usage``
(``input_tokens`` = *all* input including cache reads and writes,
``output_tokens`` = all output including reasoning):

- OpenAI Chat Completions: ``usage.prompt_tokens`` already includes
  ``prompt_tokens_details.cached_tokens``; ``completion_tokens`` includes
  ``completion_tokens_details.reasoning_tokens``.
- OpenAI Responses: the same, named ``input_tokens`` / ``output_tokens`` with
  ``input_tokens_details`` / ``output_tokens_details``.
- Anthropic Messages: ``usage.input_tokens`` *excludes* the cache, so the total
  is ``input_tokens + cache_read_input_tokens + cache_creation_input_tokens``.

Responses may be the SDKs' pydantic models or plain dicts (JSON). A usage
block that is present but malformed raises ``UsageError`` naming the field:
charging a guess for a response we misread would break the budget silently.

Stream trackers are fed one event at a time. Besides the final usage they
keep the text seen so far, so a stream that is abandoned or cut before its
usage arrives can still be charged what it consumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._errors import UsageError
from ._usage import Usage

__all__ = [
    "AnthropicStreamTracker",
    "OpenAIChatStreamTracker",
    "OpenAIResponsesStreamTracker",
    "StreamTracker",
    "estimate_output_tokens",
    "usage_from_response",
]

_MISSING = object()


def _get(obj: object, name: str) -> Any:
    """A field of an SDK model or a JSON dict; ``None`` when absent."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _has(obj: object, name: str) -> bool:
    if isinstance(obj, Mapping):
        return name in obj
    return getattr(obj, name, _MISSING) is not _MISSING


def _count(obj: object, name: str, path: str, *, required: bool = False) -> int:
    """A token count: a non-negative int (``None``/absent is 0 unless ``required``)."""
    value = _get(obj, name)
    where = f"{path}.{name}"
    if value is None:
        if required:
            raise UsageError(f"{where}: missing from the provider's usage block")
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{where}: expected a non-negative int, got {value!r}")
    if value < 0:
        raise UsageError(f"{where}: must be >= 0, got {value}")
    return value


def _usage(path: str, **counts: int) -> Usage:
    try:
        return Usage(**counts)
    except UsageError as error:
        raise UsageError(f"{path}: inconsistent counts: {error}") from None


def _model(obj: object) -> str | None:
    model = _get(obj, "model")
    return model if isinstance(model, str) and model else None


def _check_block(usage: object, path: str) -> None:
    if isinstance(usage, (str, bytes, int, float, list, tuple)):
        raise UsageError(f"{path}: expected an object, got {usage!r}")


def openai_chat_usage(usage: object, path: str = "response.usage") -> Usage:
    """``CompletionUsage`` (chat completions, also the last chunk of a stream)."""
    _check_block(usage, path)
    prompt = _get(usage, "prompt_tokens_details")
    completion = _get(usage, "completion_tokens_details")
    return _usage(
        path,
        input_tokens=_count(usage, "prompt_tokens", path, required=True),
        output_tokens=_count(usage, "completion_tokens", path, required=True),
        cache_read_tokens=_count(prompt, "cached_tokens", f"{path}.prompt_tokens_details"),
        cache_write_tokens=_count(prompt, "cache_write_tokens", f"{path}.prompt_tokens_details"),
        reasoning_tokens=_count(
            completion, "reasoning_tokens", f"{path}.completion_tokens_details"
        ),
    )


def openai_responses_usage(usage: object, path: str = "response.usage") -> Usage:
    """``ResponseUsage`` (the Responses API)."""
    _check_block(usage, path)
    details_in = _get(usage, "input_tokens_details")
    details_out = _get(usage, "output_tokens_details")
    return _usage(
        path,
        input_tokens=_count(usage, "input_tokens", path, required=True),
        output_tokens=_count(usage, "output_tokens", path, required=True),
        cache_read_tokens=_count(details_in, "cached_tokens", f"{path}.input_tokens_details"),
        cache_write_tokens=_count(details_in, "cache_write_tokens", f"{path}.input_tokens_details"),
        reasoning_tokens=_count(details_out, "reasoning_tokens", f"{path}.output_tokens_details"),
    )


def anthropic_usage(usage: object, path: str = "response.usage") -> Usage:
    """Anthropic ``Usage``: its ``input_tokens`` excludes cache reads and writes."""
    _check_block(usage, path)
    read = _count(usage, "cache_read_input_tokens", path)
    write = _count(usage, "cache_creation_input_tokens", path)
    details = _get(usage, "output_tokens_details")
    # The split of the writes by cache lifetime; one-hour writes cost more.
    creation = _get(usage, "cache_creation")
    return _usage(
        path,
        input_tokens=_count(usage, "input_tokens", path, required=True) + read + write,
        output_tokens=_count(usage, "output_tokens", path, required=True),
        cache_read_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=_count(details, "thinking_tokens", f"{path}.output_tokens_details"),
        cache_write_1h_tokens=_count(
            creation, "ephemeral_1h_input_tokens", f"{path}.cache_creation"
        ),
    )


def usage_from_response(response: object) -> tuple[str | None, Usage] | None:
    """``(reported model, usage)`` of an OpenAI or Anthropic response; ``None`` without usage.

    The shape is detected from the usage block itself (``prompt_tokens`` is
    Chat Completions; ``cache_*_input_tokens`` or ``type == "message"`` is
    Anthropic; else ``input_tokens`` is the Responses API), so SDK models and
    dicts are read alike.
    """
    if response is None or isinstance(response, (str, bytes, int, float)):
        return None
    usage = _get(response, "usage")
    if usage is None:
        return None
    model = _model(response)
    if _has(usage, "prompt_tokens") and _get(usage, "prompt_tokens") is not None:
        return model, openai_chat_usage(usage)
    if (
        _get(response, "type") == "message"
        or _get(usage, "cache_read_input_tokens") is not None
        or _get(usage, "cache_creation_input_tokens") is not None
    ):
        return model, anthropic_usage(usage)
    if _has(usage, "input_tokens") or _get(response, "object") == "response":
        return model, openai_responses_usage(usage)
    _check_block(usage, "response.usage")
    raise UsageError(
        "response.usage: neither prompt_tokens (OpenAI chat) nor input_tokens "
        "(OpenAI Responses, Anthropic) found"
    )


def estimate_output_tokens(model: str | None, text: str) -> int:
    """Tokens of ``text``, erring high: the tokenizer when it knows ``model``, else utf-8 bytes.

    One token is at least one byte, so the byte count is a safe upper bound.
    """
    if not text:
        return 0
    if model is not None:
        try:
            from . import _tokens

            counter = getattr(_tokens, "count_text_tokens", None)
            if counter is not None:
                counted = counter(model, text)
                if isinstance(counted, int) and counted >= 0:
                    return counted
        except Exception:  # a missing encoding falls back to the byte bound
            pass
    return len(text.encode("utf-8"))


class StreamTracker:
    """Shared state of the trackers: model, final usage, and what was seen so far.

    ``usage`` is the provider's final report, ``None`` until it arrives.
    ``input_tokens`` is the input the provider reported before the end (only
    Anthropic does so), ``reported_output_tokens`` the running output count
    it reported, if any. ``consumed(input_estimate)`` is what to charge a
    stream that ended without its final usage.
    """

    def __init__(self) -> None:
        self.model: str | None = None
        self.usage: Usage | None = None
        self.input_usage: Usage | None = None
        self.reported_output_tokens = 0
        self.events = 0
        self._parts: list[str] = []
        self._chars = 0

    def feed(self, event: object) -> None:
        self.events += 1
        self._feed(event)

    def _feed(self, event: object) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _text(self, value: object) -> None:
        if isinstance(value, str) and value:
            self._parts.append(value)
            self._chars += len(value)

    @property
    def output_text(self) -> str:
        """All output text seen so far (content, reasoning, tool arguments)."""
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def output_text_chars(self) -> int:
        return self._chars

    @property
    def done(self) -> bool:
        return self.usage is not None

    def consumed(self, input_estimate: int) -> Usage:
        """Usage of a stream that stopped early: reported or estimated input, output so far.

        Output is the larger of what the provider reported and what the text
        seen so far counts as, so billed tokens are never charged as zero.
        """
        if self.usage is not None:
            return self.usage
        seen = estimate_output_tokens(self.model, self.output_text)
        output = max(self.reported_output_tokens, seen)
        if self.input_usage is not None:
            base = self.input_usage
            return Usage(
                input_tokens=base.input_tokens,
                output_tokens=max(output, base.output_tokens),
                cache_read_tokens=base.cache_read_tokens,
                cache_write_tokens=base.cache_write_tokens,
                cache_write_1h_tokens=base.cache_write_1h_tokens,
            )
        return Usage(input_tokens=max(0, input_estimate), output_tokens=output)


class OpenAIChatStreamTracker(StreamTracker):
    """``ChatCompletionChunk`` s; the usage comes in a last chunk with no choices
    (only when the request asked for ``stream_options={"include_usage": True}``)."""

    def _feed(self, event: object) -> None:
        self.model = _model(event) or self.model
        for choice in _get(event, "choices") or ():
            delta = _get(choice, "delta")
            self._text(_get(delta, "content"))
            self._text(_get(delta, "refusal"))
            self._text(_get(delta, "reasoning_content"))
            for call in _get(delta, "tool_calls") or ():
                function = _get(call, "function")
                self._text(_get(function, "name"))
                self._text(_get(function, "arguments"))
        usage = _get(event, "usage")
        if usage is not None:
            self.usage = openai_chat_usage(usage, "chunk.usage")


class OpenAIResponsesStreamTracker(StreamTracker):
    """Responses API stream events; ``response.completed`` (or ``.incomplete`` /
    ``.failed``) carries the final response with its usage."""

    _FINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})

    def _feed(self, event: object) -> None:
        kind = _get(event, "type")
        if not isinstance(kind, str):
            return
        response = _get(event, "response")
        if response is not None:
            self.model = _model(response) or self.model
        if kind.endswith(".delta"):
            self._text(_get(event, "delta"))
        if kind in self._FINAL and response is not None:
            usage = _get(response, "usage")
            if usage is not None:
                self.usage = openai_responses_usage(usage, f"{kind}.response.usage")


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
        kind = _get(event, "type")
        if kind == "message_start":
            message = _get(event, "message")
            self.model = _model(message) or self.model
            usage = _get(message, "usage")
            if usage is not None:
                self._start = usage
                self.input_usage = anthropic_usage(usage, "message_start.message.usage")
                self.reported_output_tokens = self.input_usage.output_tokens
        elif kind == "content_block_delta":
            delta = _get(event, "delta")
            self._text(_get(delta, "text"))
            self._text(_get(delta, "thinking"))
            self._text(_get(delta, "partial_json"))
        elif kind == "message_delta":
            usage = _get(event, "usage")
            if usage is not None:
                self._delta = usage
                self.reported_output_tokens = _count(
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
            ):
                value = _get(source, name)
                if value is not None:
                    merged[name] = value
        merged.setdefault("input_tokens", 0)
        return anthropic_usage(merged, "message_delta.usage")
