"""What the policy decides, as data.

No I/O, no clock, no globals: given the store's answer to a reservation,
return *what to do next* (``Admit``, ``TryModel``, ``Wait``, ``Refuse``); the
engine's flow only acts on it (tenacity's "decide, then act").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from .counters import Counter, Denial, Reservation, amount_of
from .errors import BudgetExceeded
from .policy import OnExceed

__all__ = [
    "Admit",
    "CapDenial",
    "Fit",
    "Refuse",
    "Step",
    "TryModel",
    "Wait",
    "contended",
    "decide",
    "exceeded",
]


@dataclass(frozen=True, slots=True)
class CapDenial:
    """The call's worst case alone is above the per-request cap."""

    cap: int
    requested: int
    unit: str = "usd"


@dataclass(frozen=True, slots=True)
class Admit:
    reservation: Reservation | None


@dataclass(frozen=True, slots=True)
class TryModel:
    model: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Ask again after ``seconds``, or sooner when a call on ``counter`` settles."""

    seconds: float
    counter: Counter | None = None


@dataclass(frozen=True, slots=True)
class Fit:
    """Ask again with the call's output cap lowered to ``output_tokens``."""

    output_tokens: int


@dataclass(frozen=True, slots=True)
class Refuse:
    error: BudgetExceeded


Step = Admit | TryModel | Wait | Fit | Refuse


def exceeded(denial: Denial | CapDenial, model: str | None) -> BudgetExceeded:
    if isinstance(denial, CapDenial):
        unit = denial.unit
        return BudgetExceeded(
            scope="request",
            key="",
            limit=amount_of(unit, denial.cap),
            spent=amount_of(unit, 0),
            requested=amount_of(unit, denial.requested),
            window="request",
            model=model,
            unit=denial.unit,
        )
    counter = denial.counter
    hopeless = denial.requested > counter.limit
    retry_after = None
    if denial.resets_at is not None and not hopeless:
        retry_after = timedelta(seconds=max(0.0, denial.resets_at - denial.now))
    unit = counter.unit
    return BudgetExceeded(
        scope=counter.scope,
        key=counter.label or (counter.subject if counter.scope not in ("global", "run") else ""),
        limit=amount_of(unit, counter.limit),
        spent=amount_of(unit, denial.spent),
        held=amount_of(unit, denial.held),
        requested=amount_of(unit, denial.requested),
        window=counter.window,
        retry_after=retry_after,
        model=model,
        unit=counter.unit,
    )


CONTENTION_POLL_S = 0.25
"""A contended call re-asks at least this often, even unwoken: a lease running out
frees budget without any settle to announce it."""


def contended(denial: Denial | CapDenial) -> bool:
    """Refused only because of holds of calls in flight: once they settle (for less, or
    even for all they hold) the call may fit, so waiting for them can help."""
    return (
        isinstance(denial, Denial)
        and denial.held > 0
        and denial.spent + denial.requested <= denial.counter.limit
    )


def decide(
    outcome: Reservation | Denial | CapDenial | None,
    *,
    on_exceed: OnExceed,
    model: str | None,
    next_model: str | None,
    waited_s: float,
    block_timeout: float,
    attempt: int,
    contention_wait_s: float = 0.0,
    fit_tokens: int | None = None,
    rng: random.Random | None = None,
) -> Step:
    """What to do with the store's answer (``None``: nothing needed reserving).

    In order: a denial only holds in flight cause waits for them (``contention_wait_s``
    since the first ask, woken by their settles; ``block`` has its own timeout); then
    a cheaper model (``downgrade``); then a lowered output cap (``fit_tokens``, the
    largest that fits, when the policy fits output); then ``block`` waits for budget;
    else the call is refused.
    """
    if outcome is None or isinstance(outcome, Reservation):
        return Admit(outcome)
    if on_exceed != "block" and contended(outcome) and waited_s < contention_wait_s:
        assert isinstance(outcome, Denial)
        return Wait(min(contention_wait_s - waited_s, CONTENTION_POLL_S), outcome.counter)
    if on_exceed == "downgrade" and next_model is not None:
        return TryModel(next_model)
    if fit_tokens is not None:
        return Fit(fit_tokens)
    if on_exceed == "block" and isinstance(outcome, Denial):
        delay = _block_delay(outcome, waited_s, block_timeout, attempt, (rng or random).random)
        if delay is not None:
            return Wait(delay, outcome.counter)
    return Refuse(exceeded(outcome, model))


def _block_delay(
    denial: Denial, waited_s: float, timeout: float, attempt: int, uniform: Callable[[], float]
) -> float | None:
    """How long to sleep before asking again, or None when waiting cannot help in time."""
    left = timeout - waited_s
    if left <= 0 or denial.requested > denial.counter.limit:
        return None
    until_reset = None if denial.resets_at is None else max(0.0, denial.resets_at - denial.now)
    if denial.held == 0:
        # Nothing in flight will free budget: only the window rollover can.
        if until_reset is None or until_reset > left:
            return None
        return min(left, until_reset + 0.01)
    # Holds in flight: jittered exponential backoff, 50 ms doubling to 1 s.
    base = min(1.0, 0.05 * (1 << min(attempt, 5)))
    jittered = base * (0.5 + 0.5 * uniform())
    if until_reset is not None:
        jittered = min(jittered, until_reset + 0.01)
    return min(left, jittered)
