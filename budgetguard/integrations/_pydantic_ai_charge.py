"""What a pydantic-ai response costs: its ``RequestUsage``, read as budgetguard's ``Usage``.

pydantic-ai normalises every provider's usage to genai-prices' convention
before a model returns it - ``input_tokens`` all input (Anthropic's cache
reads and writes added back), ``output_tokens`` all output (reasoning
included, also where a profile says the provider leaves it out), the
cached, one-hour-write, reasoning and audio parts alongside - which is
budgetguard's convention too, so the counts carry over one to one; web
searches ride along as ``web_searches``. The service tier the provider
reports (``provider_details["service_tier"]``) selects the price variant.

A response that omitted its usage (``unmeasured_requests``), reported no
tokens at all, or billed by audio seconds is charged its reservation, logged
once, and recorded as ``outcome="unpriced"``: never $0 without a word. A
stream that stopped before its usage arrived is charged what it consumed.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic_ai.messages import BaseToolCallPart, ModelResponse, TextPart, ThinkingPart
from pydantic_ai.usage import RequestUsage

from .._core.errors import UsageError
from .._core.usage import Usage, UsageDetails
from .._engine.admission import Admission
from .._engine.charges import Charge, priced, stopped_early, unpriced
from ..providers.fields import count, usage_of
from ..providers.openai_chat import service_tier_context
from ..providers.tracking import estimate_output_tokens

__all__ = ["WHERE", "consumed_charge", "response_charge", "usage_of_response"]

WHERE = "pydantic-ai"
"""The endpoint name in logs and ``unpriced`` records."""


def usage_of_response(response: ModelResponse) -> Usage:
    """``response.usage`` as a ``Usage``; ``UsageError`` naming the field when it cannot
    be read, or says nothing was measured."""
    usage = response.usage
    path = "response.usage"
    if not isinstance(usage, RequestUsage):
        raise UsageError(f"{path}: expected a pydantic-ai RequestUsage, got {usage!r}")
    if count(usage, "unmeasured_requests", path):
        raise UsageError(f"{path}: the provider's response carried no usage")
    if usage.audio_seconds:
        raise UsageError(f"{path}.audio_seconds: billed by the second ({usage.audio_seconds!r})")
    found = usage_of(
        path,
        input_tokens=count(usage, "input_tokens", path),
        output_tokens=count(usage, "output_tokens", path),
        cache_read_tokens=count(usage, "cache_read_tokens", path),
        cache_write_tokens=count(usage, "cache_write_tokens", path),
        cache_write_1h_tokens=count(usage, "cache_write_1h_tokens", path),
        reasoning_tokens=count(usage, "output_reasoning_tokens", path),
        details=_details(usage, path),
        context=_context(response.provider_details),
    )
    if not found.total_tokens:
        raise UsageError(f"{path}: reported no input and no output tokens")
    return found


def _details(usage: RequestUsage, path: str) -> UsageDetails | None:
    counts = {
        "input_audio_tokens": count(usage, "input_audio_tokens", path),
        "cache_audio_read_tokens": count(usage, "cache_audio_read_tokens", path),
        "output_audio_tokens": count(usage, "output_audio_tokens", path),
        "web_searches": count(usage, "web_searches", path),  # set by pydantic-ai when billed
    }
    if not any(counts.values()):
        return None
    try:
        return UsageDetails(**counts)
    except UsageError as error:
        raise UsageError(f"{path}: inconsistent counts: {error}") from None


def _context(details: Mapping[str, object] | None) -> tuple[tuple[str, str], ...]:
    return service_tier_context(details.get("service_tier")) if details else ()


def response_charge(admission: Admission, response: ModelResponse) -> Charge:
    """What a complete response costs: its usage priced at the model it reports (else the
    one admitted), or its reservation when the usage cannot be read or priced."""
    model = response.model_name or None
    try:
        usage = usage_of_response(response)
    except UsageError as error:
        return unpriced(admission, WHERE, model, str(error))
    return priced(admission, WHERE, usage, model)


def consumed_charge(admission: Admission, response: ModelResponse) -> Charge:
    """What a stream that stopped early (closed, cancelled, failed midway) consumed: the
    input it reported, else the input held, and the output seen so far; never more than
    was held, never $0 for a request the provider already billed."""
    usage, path = response.usage, "stream.usage"
    model = response.model_name or admission.model
    output = max(
        count(usage, "output_tokens", path),
        estimate_output_tokens(model, _output_text(response)),
    )
    consumed: Usage | None = None
    if count(usage, "input_tokens", path):  # reported up front (Anthropic's message_start)
        consumed = usage_of(
            path,
            input_tokens=count(usage, "input_tokens", path),
            cache_read_tokens=count(usage, "cache_read_tokens", path),
            cache_write_tokens=count(usage, "cache_write_tokens", path),
            cache_write_1h_tokens=count(usage, "cache_write_1h_tokens", path),
            output_tokens=output,
        )
    elif admission.input_tokens is not None:
        consumed = Usage(input_tokens=admission.input_tokens, output_tokens=output)
    return stopped_early(admission, consumed, model)


def _output_text(response: ModelResponse) -> str:
    texts: list[str] = []
    for part in response.parts:
        if isinstance(part, TextPart | ThinkingPart):
            texts.append(part.content)
        elif isinstance(part, BaseToolCallPart):
            texts.append(part.tool_name + part.args_as_json_str())
    return "".join(texts)
