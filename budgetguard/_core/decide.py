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

from .counters import Denial, Reservation
from .errors import BudgetExceeded
from .money import nanos_to_usd
from .policy import OnExceed

__all__ = ["Admit", "CapDenial", "Refuse", "Step", "TryModel", "Wait", "decide", "exceeded"]


@dataclass(frozen=True, slots=True)
class CapDenial:
    """The call's worst case alone is above the per-request cap."""

    cap: int
    requested: int


@dataclass(frozen=True, slots=True)
class Admit:
    reservation: Reservation | None


@dataclass(frozen=True, slots=True)
class TryModel:
    model: str


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


@dataclass(frozen=True, slots=True)
class Refuse:
    error: BudgetExceeded


Step = Admit | TryModel | Wait | Refuse


def exceeded(denial: Denial | CapDenial, model: str | None) -> BudgetExceeded:
    if isinstance(denial, CapDenial):
        return BudgetExceeded(
            scope="request",
            key="",
            limit=nanos_to_usd(denial.cap),
            spent=nanos_to_usd(0),
            requested=nanos_to_usd(denial.requested),
            window="request",
            model=model,
        )
    counter = denial.counter
    hopeless = denial.requested > counter.limit
    retry_after = None
    if denial.resets_at is not None and not hopeless:
        retry_after = timedelta(seconds=max(0.0, denial.resets_at - denial.now))
    return BudgetExceeded(
        scope=counter.scope,
        key=counter.label or (counter.subject if counter.scope not in ("global", "run") else ""),
        limit=nanos_to_usd(counter.limit),
        spent=nanos_to_usd(denial.spent),
        held=nanos_to_usd(denial.held),
        requested=nanos_to_usd(denial.requested),
        window=counter.window,
        retry_after=retry_after,
        model=model,
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
    rng: random.Random | None = None,
) -> Step:
    """What to do with the store's answer (``None``: nothing needed reserving)."""
    if outcome is None or isinstance(outcome, Reservation):
        return Admit(outcome)
    if on_exceed == "downgrade" and next_model is not None:
        return TryModel(next_model)
    if on_exceed == "block" and isinstance(outcome, Denial):
        delay = _block_delay(outcome, waited_s, block_timeout, attempt, (rng or random).random)
        if delay is not None:
            return Wait(delay)
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
