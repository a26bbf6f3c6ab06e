"""What to settle a call with, when the usage is read from a response or cannot be.

Once the LLM was called its caller gets the response, whatever its usage
says: a usage block that cannot be read, a model nobody can price or an
absurd amount is charged conservatively (the call's reservation), logged
once per endpoint, model and cause, and recorded with ``outcome="unpriced"``
and the reason - never raised at the caller, never charged $0.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from .._core.errors import ConfigurationError, UnknownModel, UsageError
from .._core.money import check_nanos, format_usd
from .._core.usage import Usage
from ..providers.fields import get, has, model_of
from ..providers.registry import usage_from_response
from ..stores.drive import Flow
from .admission import Admission, warn_once
from .config import Settings

__all__ = [
    "ASSUMED_CONTEXT_TOKENS",
    "Charge",
    "charge_response",
    "conservative_nanos",
    "looks_like_a_response",
    "priced",
    "stopped_early",
    "unpriced",
    "worst_case_of",
]

log = logging.getLogger("budgetguard")

_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")

ASSUMED_CONTEXT_TOKENS = 200_000
"""The input of a call nothing is known about, when its model's context window is unknown."""


@dataclass(frozen=True, slots=True)
class Charge:
    """What to settle a call with: nano-USD, and the usage and model it came from.

    ``unpriced`` says why the usage could not be read or priced, when ``nanos`` is
    the reservation charged instead (the call is recorded as ``"unpriced"``).
    """

    nanos: int
    usage: Usage | None
    model: str | None
    unpriced: str | None = None

    def settle(self, admission: Admission) -> Flow[Decimal]:
        return admission.settle_flow(
            self.nanos, model=self.model, usage=self.usage, unpriced=self.unpriced
        )


def unpriced(admission: Admission, where: str, model: str | None, reason: str) -> Charge:
    """The reservation, charged for a call whose usage cannot be read or priced: the
    provider billed something, so never $0. Logged once per endpoint, model and cause."""
    model = model or admission.model
    warn_once(
        ("unpriced", where, model, reason.split(":", 1)[0]),
        "budgetguard: %s (%s): %s; charging its reservation (%s) instead "
        "(recorded as outcome='unpriced'; logged once per endpoint, model and cause)",
        where,
        model,
        reason,
        format_usd(admission.estimate),
    )
    return Charge(admission.estimate, None, model, reason)


def priced(admission: Admission, where: str, usage: Usage, model: str | None) -> Charge:
    """``usage`` priced at the reported (else the admitted) model; unpriced if it cannot be."""
    try:
        nanos = check_nanos(admission.price(usage, model), field="cost")
    except (UnknownModel, ConfigurationError) as error:
        return unpriced(admission, where, model, str(error))
    return Charge(nanos, usage, model)


def stopped_early(admission: Admission, usage: Usage | None, model: str | None) -> Charge:
    """What a call that stopped before its final usage (a stream closed, abandoned or cut)
    consumed: ``usage`` priced at ``model``, else its hold, never more than was held; the
    hold when nothing says what its input was (``usage`` None) - never $0 for a request
    the provider already billed."""
    if usage is None:
        return Charge(admission.estimate, None, model)
    try:
        nanos = admission.price(usage, model)
    except Exception:  # no price for what it reports: the hold
        nanos = admission.estimate
    if admission.estimate:
        nanos = min(nanos, admission.estimate)
    return Charge(nanos, usage, model)


def charge_response(admission: Admission, result: object, where: str) -> Charge:
    """What a complete response costs; its reservation when its usage cannot be read."""
    try:
        found = usage_from_response(result)
    except UsageError as error:
        return unpriced(admission, where, None, str(error))
    if found is None:
        return unpriced(admission, where, None, f"{type(result).__name__} without usage")
    model, usage = found
    return priced(admission, where, usage, model)


def looks_like_a_response(response: object) -> bool:
    """A provider response, however malformed its usage: a model name, and a usage block
    with a token count in it (not any object that happens to have a ``usage``)."""
    usage = get(response, "usage")
    return model_of(response) is not None and any(has(usage, name) for name in _TOKEN_FIELDS)


def worst_case_of(admission: Admission, where: str, reason: str) -> Charge:
    """A call charged after the fact whose usage cannot be read: the most its model can
    cost (``conservative_nanos``), or $0 - loudly - when no price is known."""
    model = admission.model
    nanos = conservative_nanos(admission.settings, model)
    if nanos is None:
        log.error(
            "budgetguard: %s (%s): %s, and no price is known to charge it conservatively: "
            "recorded as outcome='unpriced' at $0",
            where,
            model,
            reason,
        )
        return Charge(0, None, model, reason)
    warn_once(
        ("unpriced", where, model, reason.split(":", 1)[0]),
        "budgetguard: %s (%s): %s; charging the most such a call can cost (%s) "
        "(recorded as outcome='unpriced'; logged once per endpoint, model and cause)",
        where,
        model,
        reason,
        format_usd(nanos),
    )
    return Charge(nanos, None, model, reason)


def conservative_nanos(settings: Settings, model: str | None) -> int | None:
    """The most a call of ``model`` can cost with nothing known of its request: a full
    context window of input and the model's largest output. None: no price known."""
    if model is None:
        return None
    try:
        rates = settings.prices.rates(model)
    except (UnknownModel, ConfigurationError):
        return None
    input_tokens = rates.context_window or ASSUMED_CONTEXT_TOKENS
    return check_nanos(rates.worst_case(input_tokens, rates.max_output_tokens or 0), field="cost")
