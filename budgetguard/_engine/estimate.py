"""What a call can cost at most, before it is sent: the amount every admission holds.

``estimate_of`` counts the prompt (an upper bound, ``pricing/tokens.py``), takes
the output cap the call will be sent with - its own, the policy's
``max_output_tokens``, or a lowered cap that fits - and prices both at the
model's worst-case rates: input at the input rate, except the part the request
marks for the provider's prompt cache, which is held at the write rate it names.
``bg.estimate(request)`` gives the same figure to code that wants to show "at
most $X" before sending anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._core.errors import ConfigurationError, UnboundedInput
from .._core.records import Estimate, LLMRequest
from ..pricing.calibration import bound_for, family_of
from ..pricing.output_limits import DEFAULT_MAX_OUTPUT_TOKENS
from ..pricing.rates import ModelRates
from ..pricing.tokens import InputEstimate, count_text_tokens, encoding_for, estimate_input
from .config import Settings, current

__all__ = [
    "LARGE_PROMPT_CHARS",
    "estimate",
    "estimate_of",
    "input_bound",
    "is_large",
    "rates_for",
    "worst_case",
]

LARGE_PROMPT_CHARS = 50_000
"""A prompt this long (about 12k tokens, a millisecond or more to count) is counted
off the event loop in async code."""


def rates_for(settings: Settings, request: LLMRequest, model: str) -> ModelRates:
    """The rates ``request`` sent to ``model`` is priced at."""
    return settings.prices.rates(
        request.priced_as(model), request.provider, request.price_context, request.provider_hint
    )


def estimate_of(
    settings: Settings,
    request: LLMRequest,
    model: str,
    rates: ModelRates | None = None,
    output_cap: int | None = None,
) -> Estimate:
    """The worst case of ``request`` sent to ``model`` with ``output_cap`` (None: the
    request's own ``max_tokens``, else the model's maximum output)."""
    if rates is None:
        rates = rates_for(settings, request, model)
    cap = output_cap if output_cap is not None else request.max_tokens
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 0):
        raise ConfigurationError(f"max_tokens: expected an int >= 0, got {cap!r}")
    counted = input_bound(settings, request, model, rates)
    tokens = counted.tokens
    writes, writes_1h = counted.cache_write_tokens, counted.cache_write_1h_tokens
    unbounded = request.unbounded
    known: int | None = writes
    if not writes_on_marks_only(rates.model):
        # OpenAI (and others) cache on their own, and a few bill the write: what the
        # request marks says nothing, so any input token may be billed as a write.
        known = None
        dearer = (rates.cache_write_rate, rates.cache_write_1h_rate) != (None, None)
        writes = writes_1h = tokens if dearer else 0
    output = (
        cap
        if cap is not None
        else rates.max_output_tokens or rates.context_window or DEFAULT_MAX_OUTPUT_TOKENS
    )
    nanos = rates.worst_case(
        tokens,
        output * request.choices,
        cache_write_tokens=known,
        cache_write_1h_tokens=writes_1h if known is not None else 0,
        audio=counted.sound and rates.prices_audio_apart,
    ) + rates.search_fees(request.web_searches)
    return Estimate(
        model=model,
        provider=rates.provider,
        nanos=nanos,
        input_tokens=tokens,
        output_tokens=output,
        choices=request.choices,
        cache_write_tokens=writes,
        cache_write_1h_tokens=writes_1h,
        tier=rates.tier_for(tokens),
        price_context=request.price_context,
        unbounded=unbounded,
    )


def input_bound(
    settings: Settings, request: LLMRequest, model: str, rates: ModelRates | None = None
) -> InputEstimate:
    """All the input ``request`` can be billed: its prompt, what its other fields add
    (an output schema, a prompt the provider puts around tools or thinking), and what it
    does not show (a previous response, server tools' results, at their allowance).
    Needs no price; ``rates`` only caps an image of unknown size at the context window."""
    counting = request.priced_as(model)  # a deployment / proxy group: the model it runs
    counted = estimate_input(
        counting,
        messages=request.messages,
        prompt=request.prompt,
        system=request.system,
        tools=request.tools,
        rates=rates,
    )
    policy = settings.policy
    unbounded = request.unbounded
    if unbounded and policy.unbounded_input == "refuse":
        raise UnboundedInput(model, unbounded)
    added = request.overhead_tokens + sum(
        count_text_tokens(counting, t) for t in request.extra_text
    )
    if encoding_for(counting) is None:  # a bound, not a count: add the family's template
        added += bound_for(counting).request_prompt
    hidden = request.hidden_input_tokens + policy.server_tool_tokens * (
        request.server_tool_uses + len(unbounded)
    )
    tokens = counted.tokens + added + hidden
    writes, writes_1h = counted.cache_write_tokens, counted.cache_write_1h_tokens
    if request.cache_write is not None:  # the whole prompt may be written to the cache
        writes = tokens
        if request.cache_write == "1h":
            writes_1h = tokens
    return InputEstimate(tokens, writes, writes_1h, counted.sound)


def writes_on_marks_only(model: str) -> bool:
    """Claude writes to its prompt cache only what a request marks (``cache_control``),
    wherever it is served (Anthropic, Bedrock, Vertex, OpenRouter)."""
    return family_of(model) == "claude"


def worst_case(
    settings: Settings, request: LLMRequest, model: str, rates: ModelRates | None = None
) -> int:
    """The most ``request`` sent to ``model`` can cost, in nano-USD."""
    return estimate_of(settings, request, model, rates).nanos


def estimate(request: LLMRequest) -> Estimate:
    """The most ``request`` can cost, with the prices and policy in force, reserving
    nothing: the amount a guarded call would hold (``.usd``, a ``Decimal``).

    A request that sets no output cap is estimated at the policy's
    ``max_output_tokens`` (what an instrumented client would send), else at the
    model's maximum output. Raises ``UnknownModel`` for a model with no price.
    """
    if not isinstance(request, LLMRequest):
        raise ConfigurationError(
            f"request: expected a budgetguard.LLMRequest, got {type(request).__name__}"
        )
    settings = current()
    cap = None
    if request.max_tokens is None:
        cap = settings.policy.output_cap(request.priced_as(request.model), request.model)
        cap = None if cap is None else max(cap, request.output_floor)
    return estimate_of(settings, request, request.model, output_cap=cap)


def is_large(request: LLMRequest) -> bool:
    """Whether counting ``request``'s prompt is worth a worker thread in async code:
    more than ``LARGE_PROMPT_CHARS`` of text anywhere in it (system blocks, tool
    results, nested parts), found with an early exit."""
    left = LARGE_PROMPT_CHARS
    stack: list[Any] = [request.system, request.prompt, request.messages, request.tools]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str or kind is bytes:
            left -= len(value)
            if left < 0:
                return True
        elif kind is dict or isinstance(value, Mapping):
            stack.extend(value.values())
        elif kind is list or kind is tuple:
            stack.extend(value)
    return False
