"""What a LangChain model call billed, read from the ``LLMResult`` its callbacks receive.

The provider's own usage block comes first, where the integration passes it
through on a call that was not streamed (ChatAnthropic's ``usage``,
ChatOpenAI's and the completion models' ``token_usage``): it is read by the
parsers ``instrument()`` uses, so web searches and price variants (service
tier, fast mode) count as they do there. Otherwise the message's
``usage_metadata``, LangChain's standard block, which every chat model
fills in and which streams add up: input with its cache reads and writes
(Anthropic's split by cache lifetime), output with its reasoning, audio, and
OpenAI's service tier (``flex_cache_read`` ...) as the price variant.

An answer from LangChain's own LLM cache (``usage_metadata["total_cost"] == 0``,
which LangChain sets on a cache hit) reached no provider and costs nothing. A
stream cut before it ended (closed early, failed midway) is charged what it
consumed: the input held for it and the output it delivered, never more than
its reservation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import anyio

from .._core.errors import UsageError
from .._core.usage import Usage, UsageDetails
from .._engine.admission import Admission, warn_once
from .._engine.charges import Charge, priced, stopped_early, unpriced
from ..providers.anthropic import anthropic_usage
from ..providers.fields import check_block, count, usage_of
from ..providers.openai_chat import openai_chat_usage, service_tier_context
from ..providers.tracking import estimate_output_tokens
from ..stores.base import AsyncStore, Store
from ..stores.drive import Flow, arun, run

if TYPE_CHECKING:
    from langchain_core.outputs import LLMResult

__all__ = [
    "Billed",
    "Open",
    "Partial",
    "adrive",
    "billed",
    "billed_error",
    "charge_of",
    "consumed",
    "delivered",
    "drive",
    "partial_output",
    "unended",
    "usage_from_metadata",
]

log = logging.getLogger("budgetguard")

_TIERS = ("flex", "priority")
"""OpenAI service tiers langchain-openai names its token details after (``flex_cache_read``)."""


@dataclass(frozen=True, slots=True)
class Billed:
    """What an ended call's result says it billed: ``usage`` (None: ``unreadable`` says
    why), the model the response names, whether the provider's own block was read
    (it counts web searches; ``usage_metadata`` does not) and whether it is already paid
    for (an answer from LangChain's cache, a completion batch's later prompts)."""

    usage: Usage | None
    model: str | None
    unreadable: str | None = None
    from_provider: bool = False
    cached: bool = False


@dataclass(frozen=True, slots=True)
class Partial:
    """What a stream that stopped early had delivered: its output text and any usage
    it reported before it stopped."""

    text: str
    usage: Usage | None
    model: str | None


@dataclass(frozen=True, slots=True)
class Open:
    """A call started and not ended: its admission; for a ``generate()`` over several
    message lists, which batch it is in and in what order it was started; when (on the
    monotonic clock) it started, and the output ``on_llm_new_token`` has delivered."""

    admission: Admission
    label: str
    batch: object = None
    started: int = 0
    opened_at: float = 0.0
    tokens: list[str] = field(default_factory=list)

    def streamed(self) -> Partial | None:
        return Partial("".join(self.tokens), None, None) if self.tokens else None


def unended(opened: Open, why: str) -> Flow[None]:
    """A call whose end will never come, or never be told apart: charged its reservation
    (it may have been sent), which also stops its lease being renewed."""
    why = why or "another call started under its run_id before it ended"
    yield from unpriced(opened.admission, opened.label, None, why).settle(opened.admission)


def delivered(token: object, chunk: object) -> str:
    """The output text and tool-call arguments one ``on_llm_new_token`` delivers (its
    token may be a list of content blocks: the chunk's text is read instead). Never
    raises: an error here would end the caller's stream."""
    try:
        text = getattr(chunk, "text", None)
        text = text if isinstance(text, str) else token if isinstance(token, str) else ""
        calls = getattr(getattr(chunk, "message", None), "tool_call_chunks", None) or ()
        return text + "".join(
            str(call.get("args") or "") for call in calls if isinstance(call, Mapping)
        )
    except Exception:
        return ""


def billed(response: LLMResult) -> Billed:
    generations = [generation for group in response.generations for generation in group]
    llm_output = response.llm_output if isinstance(response.llm_output, Mapping) else {}
    message = getattr(generations[0], "message", None) if generations else None
    metadata = getattr(message, "response_metadata", None)
    metadata = metadata if isinstance(metadata, Mapping) else {}
    model = _reported_model(metadata, llm_output)
    block = getattr(message, "usage_metadata", None)
    if isinstance(block, Mapping) and block.get("total_cost") == 0:
        return Billed(Usage(), model, cached=True)
    try:
        raw = _provider_usage(metadata, llm_output)
        if raw is not None:
            return Billed(raw, model, from_provider=True)
        if block is not None:
            return Billed(usage_from_metadata(block, metadata), model)
    except UsageError as error:
        return Billed(None, model, unreadable=str(error))
    if llm_output.get("token_usage") == {}:
        # A completion model's batch is one request: LangChain gives its whole usage to
        # the first prompt's run and an empty block to the others, already paid for.
        return Billed(Usage(), model, from_provider=True, cached=True)
    what = "a result without usage" if generations else "a result without generations"
    return Billed(
        None, model, unreadable=f"{what} (ChatOpenAI streams report it with stream_usage=True)"
    )


def billed_error(error: BaseException) -> Billed | None:
    """What a call that raised after a complete response billed: the openai SDK's
    ``LengthFinishReasonError`` and ``ContentFilterFinishReasonError`` (a structured
    output cut at its cap, or filtered) carry the completion, with its usage. None:
    the error carries no response."""
    completion = getattr(error, "completion", None)
    usage = getattr(completion, "usage", None)
    if usage is None:
        return None
    model = getattr(completion, "model", None)
    model = model if isinstance(model, str) and model else None
    tier = service_tier_context(getattr(completion, "service_tier", None))
    try:
        return Billed(openai_chat_usage(usage, "error.completion.usage", tier), model, None, True)
    except UsageError as failure:
        return Billed(None, model, unreadable=str(failure))


def charge_of(admission: Admission, where: str, found: Billed) -> Charge:
    """What to settle an ended call with: its usage priced; nothing for a cache hit; its
    reservation when no usage could be read. Web searches a stream's ``usage_metadata``
    cannot show are charged as the most the request allowed (its ``max_uses``, as held);
    a usage with no input (a server that reports it only at the start of a stream, which
    LangChain drops) is charged the input held for it."""
    if found.cached:
        return Charge(0, Usage(), found.model)
    if found.usage is None:
        return unpriced(admission, where, found.model, found.unreadable or "no usage")
    usage = found.usage
    searches = admission.request.web_searches if admission.request is not None else 0
    if searches and not found.from_provider:
        details = usage.details or UsageDetails()
        if not details.web_searches:
            usage = replace(usage, details=replace(details, web_searches=searches))
    if not usage.input_tokens and admission.input_tokens:
        warn_once(
            ("langchain-no-input", where, found.model),
            "budgetguard: %s (%s) reported no input tokens; charging the input held for it "
            "(%d tokens) (logged once per model)",
            where,
            found.model or admission.model,
            admission.input_tokens,
        )
        usage = replace(usage, input_tokens=admission.input_tokens)
    return priced(admission, where, usage, found.model)


def usage_from_metadata(
    block: object, response_metadata: Mapping[str, Any], path: str = "usage_metadata"
) -> Usage:
    """LangChain's ``UsageMetadata`` as a ``Usage`` (``UsageError`` naming a bad field)."""
    check_block(block, path)
    inputs = block.get("input_token_details") if isinstance(block, Mapping) else None
    outputs = block.get("output_token_details") if isinstance(block, Mapping) else None
    in_path, out_path = f"{path}.input_token_details", f"{path}.output_token_details"
    check_block(inputs, in_path)
    check_block(outputs, out_path)
    write_1h = count(inputs, "ephemeral_1h_input_tokens", in_path)
    audio_in, audio_out = count(inputs, "audio", in_path), count(outputs, "audio", out_path)
    details = None
    if audio_in or audio_out:
        details = UsageDetails(input_audio_tokens=audio_in, output_audio_tokens=audio_out)
    return usage_of(
        path,
        input_tokens=count(block, "input_tokens", path, required=True),
        output_tokens=count(block, "output_tokens", path, required=True),
        cache_read_tokens=_tiered(inputs, "cache_read", in_path),
        # langchain-anthropic reports writes split by lifetime, with cache_creation 0
        cache_write_tokens=_tiered(inputs, "cache_creation", in_path)
        + count(inputs, "ephemeral_5m_input_tokens", in_path)
        + write_1h,
        cache_write_1h_tokens=write_1h,
        reasoning_tokens=_tiered(outputs, "reasoning", out_path),
        details=details,
        context=service_tier_context(response_metadata.get("service_tier")),
    )


def partial_output(response: object) -> Partial | None:
    """What a failed call's result shows it delivered: None when no stream had begun
    (an HTTP error, a refused request), so nothing was billed."""
    from langchain_core.outputs import ChatGenerationChunk, GenerationChunk

    groups = getattr(response, "generations", None) or ()
    for group in groups:
        for generation in group:
            if not isinstance(generation, ChatGenerationChunk | GenerationChunk):
                continue
            message = getattr(generation, "message", None)
            calls = getattr(message, "tool_call_chunks", None) or ()
            arguments = "".join(str(call.get("args") or "") for call in calls)
            metadata = getattr(message, "response_metadata", None)
            metadata = metadata if isinstance(metadata, Mapping) else {}
            try:
                block = getattr(message, "usage_metadata", None)
                usage = usage_from_metadata(block, metadata) if block is not None else None
            except UsageError:
                usage = None
            return Partial(generation.text + arguments, usage, _reported_model(metadata, {}))
    return None


def consumed(admission: Admission, partial: Partial) -> Charge:
    """What a stream that stopped early cost: the input it reported (else the input held
    for it) and the larger of the output it reported and the output it delivered, at
    most its reservation."""
    model = partial.model
    seen = estimate_output_tokens(model or admission.model, partial.text)
    reported = partial.usage
    usage: Usage | None = None
    if reported is not None and reported.input_tokens:
        usage = replace(reported, output_tokens=max(reported.output_tokens, seen))
    elif admission.input_tokens is not None:
        usage = Usage(input_tokens=admission.input_tokens, output_tokens=seen)
    return stopped_early(admission, usage, model)


def _provider_usage(metadata: Mapping[str, Any], llm_output: Mapping[str, Any]) -> Usage | None:
    """The provider's own usage block, where the integration passed it through."""
    provider = metadata.get("model_provider") or llm_output.get("model_provider")
    block = metadata.get("usage", llm_output.get("usage"))
    if provider == "anthropic" and isinstance(block, Mapping) and "input_tokens" in block:
        return anthropic_usage(block, "response_metadata.usage")
    tokens = metadata.get("token_usage", llm_output.get("token_usage"))
    if isinstance(tokens, Mapping) and tokens.get("prompt_tokens") is not None:
        tier = metadata.get("service_tier", llm_output.get("service_tier"))
        return openai_chat_usage(tokens, "llm_output.token_usage", service_tier_context(tier))
    return None


def _reported_model(metadata: Mapping[str, Any], llm_output: Mapping[str, Any]) -> str | None:
    for value in (
        metadata.get("model_name"),
        metadata.get("model"),
        llm_output.get("model_name"),
        llm_output.get("model"),
    ):
        if isinstance(value, str) and value:
            return value
    return None


def _tiered(details: object, name: str, path: str) -> int:
    """A count langchain-openai may file under a service tier (``flex_cache_read``)."""
    return count(details, name, path) + sum(count(details, f"{t}_{name}", path) for t in _TIERS)


def drive(flow: Flow[None], store: Store | None) -> None:
    """Settle or release on the sync store; a failure is logged, never raised."""
    try:
        run(flow, store)
    except Exception:  # the caller has its response (or its own error): never fail it here
        log.exception("budgetguard: settling a LangChain call failed; the caller is unaffected")


async def adrive(flow: Flow[None], store: AsyncStore | None) -> None:
    """The same on the async store, carried through even when the caller's task is being
    cancelled (a cancelled settle would leave the call held until its lease ran out)."""
    try:
        with anyio.CancelScope(shield=True):
            await arun(flow, store)
    except Exception:  # the caller has its response (or its own error): never fail it here
        log.exception("budgetguard: settling a LangChain call failed; the caller is unaffected")
