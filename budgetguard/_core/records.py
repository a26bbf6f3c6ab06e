"""What a call asks for (``LLMRequest``) and what happened to it (``CallRecord``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Literal

from .counters import Counter
from .money import nanos_to_usd
from .usage import PriceContext, Usage

__all__ = ["CallRecord", "Estimate", "LLMRequest", "Outcome", "record_of"]


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """What an LLM call asks for, enough to estimate its worst-case cost.

    ``provider`` is the genai-prices provider id to price under (None: by the
    model's name, then under ``provider_hint``, the SDK's own provider, for a
    client on an unknown host); ``price_context`` the price variant asked for (a service
    tier: ``(("service_tier", "flex"),)``); ``aliases`` maps names the API
    takes (an Azure deployment, ``"prod-chat"``) to the model to price them as.
    ``choices``: how many completions one call asks for (OpenAI's ``n``, Gemini's
    ``candidate_count``); each may run to ``max_tokens``. ``cache_write``: the whole
    prompt may be written to the provider's cache (Anthropic's request-wide
    ``cache_control``), ``"5m"`` or ``"1h"``; blocks marked one by one are found in
    the messages themselves.
    """

    model: str
    messages: Sequence[Mapping[str, Any]] | None = None
    prompt: str | Sequence[str] | None = None
    system: str | Sequence[Mapping[str, Any]] | None = None
    tools: Sequence[Mapping[str, Any]] | None = None
    max_tokens: int | None = None
    provider: str | None = None
    provider_hint: str | None = None
    price_context: PriceContext = ()
    aliases: Mapping[str, str] | None = None
    choices: int = 1
    cache_write: Literal["5m", "1h"] | None = None
    output_floor: int = 1
    """The smallest output cap the API takes for this request (Responses: 16; Claude
    with extended thinking: its minimum thinking budget + 1): a cap budgetguard sends
    is never lower."""
    extra_text: tuple[str, ...] = ()
    """Text the provider puts in the prompt from fields other than the messages: an
    output schema (``response_format``, ``text.format``, ``output_format``), legacy
    ``functions``; counted like the messages."""
    overhead_tokens: int = 0
    """A prompt the provider adds that no field shows, known per provider and feature
    (Anthropic's tool-choice and structured-output prompts, thinking, a host's
    template)."""
    hidden_input_tokens: int = 0
    """Input the provider bills that the request does not show: the conversation behind
    a ``previous_response_id`` the guard saw (its input plus output)."""
    server_tool_uses: int = 0
    """How many times server-side tools may run (their ``max_uses``, or ``max_tool_calls``):
    each result comes back as input, held at ``Policy.server_tool_tokens``."""
    web_searches: int = 0
    """How many of those uses are web searches, billed per search on top."""
    unbounded: tuple[str, ...] = ()
    """Why the input has no bound (a server tool with no ``max_uses``, an unseen
    ``previous_response_id``); ``Policy.unbounded_input`` decides."""

    def priced_as(self, model: str) -> str:
        """The model whose prices ``model`` (a name the API takes) is charged at."""
        return self.aliases.get(model, model) if self.aliases else model


@dataclass(frozen=True, slots=True)
class Estimate:
    """The most a call can cost, worked out before it is sent (``bg.estimate``): what
    budgetguard reserves for it.

    ``input_tokens`` is an upper bound of the prompt; ``output_tokens`` the output cap
    held per choice (the call's own, the policy's ``max_output_tokens``, else the
    model's maximum), ``choices`` how many. ``cache_write_tokens`` (of which
    ``cache_write_1h_tokens``) are the input tokens the request marks for the
    provider's prompt cache, held at the write rate. ``tier`` is the input-token
    count above which the rates used apply (None: the base rates).
    """

    model: str
    provider: str
    nanos: int
    input_tokens: int
    output_tokens: int
    choices: int = 1
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    tier: int | None = None
    price_context: PriceContext = ()
    unbounded: tuple[str, ...] = ()
    """What the hold could not bound (held at the policy's allowance instead)."""

    @property
    def usd(self) -> Decimal:
        return nanos_to_usd(self.nanos)


Outcome = Literal["ok", "downgraded", "fitted", "denied", "error", "unpriced", "over_soft_limit"]
"""``unpriced``: the call was made but its usage could not be read or priced, so it was
charged conservatively (its reservation); ``error`` says why. ``fitted``: the call did
not fit its budget at its output cap and was sent with a lower one (``output_cap``).
``over_soft_limit``: a soft limit (``enforce="warn"``) would have refused it; it passed
(``over_soft`` says which)."""


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What happened to one guarded call, handed to every listener (ledger, alerts).

    ``cost_usd`` and ``estimate_usd`` are exact ``Decimal`` dollars; ``cost``
    and ``estimate`` the same amounts in integer nano-USD, for listeners that
    add them up. ``counters`` are the limits the call was checked against
    (empty for a denial by the request cap).
    """

    at: float
    outcome: Outcome
    tenant: str | None
    user: str | None
    feature: str | None
    tags: Mapping[str, str]
    requested_model: str | None
    model: str | None
    usage: Usage | None
    estimate: int
    cost: int
    latency_s: float
    reservation_id: str | None
    counters: tuple[Counter, ...]
    error: str | None = None
    refused_by: Counter | None = None
    """For a denial: the limit that refused (None: the per-request cap)."""
    output_cap: int | None = None
    """The output cap budgetguard sent in place of the caller's: the policy's
    ``max_output_tokens``, or a cap lowered to fit (``outcome="fitted"``)."""
    over_soft: tuple[Counter, ...] = ()
    """The soft limits the call passed over (``outcome="over_soft_limit"``)."""
    provider: str | None = None
    """The genai-prices provider id the call was priced under (``"openai"``,
    ``"anthropic"``, ``"google"``, ...), when budgetguard knew it."""

    @property
    def overrun(self) -> int:
        """nano-USD billed above what was reserved (0 when the hold covered the bill)."""
        return max(0, self.cost - self.estimate)

    @property
    def overrun_usd(self) -> Decimal:
        """``overrun`` in exact ``Decimal`` dollars."""
        return nanos_to_usd(self.overrun)

    @property
    def cost_usd(self) -> Decimal:
        return nanos_to_usd(self.cost)

    @property
    def estimate_usd(self) -> Decimal:
        return nanos_to_usd(self.estimate)


_FIELDS = tuple(f.name for f in fields(CallRecord))
_SETTERS = tuple(CallRecord.__dict__[name].__set__ for name in _FIELDS)


def record_of(*values: object) -> CallRecord:
    """``CallRecord(*values)`` (every field, in order), built without the frozen
    dataclass's per-field ``object.__setattr__``: every call with a listener builds one,
    and this is 0.6 us of the 1.5 us it costs. Equal to the constructor's result
    (tested); no validation either way."""
    if len(values) != len(_SETTERS):
        raise TypeError(f"record_of: {len(_SETTERS)} fields, got {len(values)}")
    record = object.__new__(CallRecord)
    for set_field, value in zip(_SETTERS, values, strict=True):
        set_field(record, value)
    return record
