"""The pure core: which counters a call touches, and what the policy decides.

No I/O, no clock, no globals: given the policy, the active frames, the model
and the store's answer, return *what to do next* as data (``Admit``,
``TryModel``, ``Wait``, ``Refuse``); the sync and async shells only act on it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from urllib.parse import quote

from ._errors import BudgetExceeded
from ._frames import Attribution, Frame
from ._money import nanos_to_usd
from ._policy import Limit, OnExceed, Policy
from .stores._base import Counter, Denial, Reservation

__all__ = [
    "Admit",
    "CapDenial",
    "Refuse",
    "Step",
    "TryModel",
    "Wait",
    "decide",
    "exceeded",
    "plan_caps",
    "plan_counters",
]


@lru_cache(maxsize=8192)
def _escape(value: str) -> str:
    # Keys are "scope=value" joined by ":" and "/", and Redis hash tags use
    # braces: none of those may leak in from a user id.
    return quote(value, safe="-_.@")


def _subject(limit: Limit, who: Attribution, model: str | None) -> str | None:
    scope = limit.scope
    if scope == "global":
        return "*"
    if scope == "tenant":
        return who.tenant
    if scope == "user":
        return who.user
    if scope == "feature":
        return who.feature
    if scope == "model":
        return model
    return None


def _counter(limit: Limit, subject: str, who: Attribution, tz: str) -> Counter:
    if limit.scope == "run":  # one per frame: caching would only evict the others
        return _make_counter(limit, subject, who.tenant, tz)
    return _cached_counter(limit, subject, who.tenant, tz)


def _make_counter(limit: Limit, subject: str, tenant: str | None, tz: str) -> Counter:
    window = limit.resolved_window
    tenant_tag = _escape(tenant) if tenant else "global"
    if limit.scope == "user" and tenant:
        # Users live inside tenants: "u-1" of two tenants are two people.
        base = f"tenant={tenant_tag}/user={_escape(subject)}"
    else:
        base = f"{limit.scope}={_escape(subject)}"
    tag = tenant_tag if limit.scope in ("tenant", "user", "run") else "global"
    return Counter(
        key=f"{base}:{window}",
        limit=limit.nanos,
        window=window,
        scope=limit.scope,
        subject=subject,
        tag=tag,
        tz=tz,
    )


_cached_counter = lru_cache(maxsize=8192)(_make_counter)
"""Counters are immutable and a pure function of these four: every call of a
tenant or user rebuilds the same ones (key strings, the limit in nano-USD)."""


def plan_counters(
    policy: Policy, frames: tuple[Frame, ...], who: Attribution, model: str | None
) -> tuple[Counter, ...]:
    """Every counter one call must fit in: the policy's limits and each frame's own.

    Two limits on the same counter (same scope, subject and window) share
    its spend, so only the tighter one is kept: holding twice on one counter
    would double-count the call.
    """
    chosen: dict[str, Counter] = {}
    tz = policy.timezone
    for limit in policy.limits:
        scope = limit.scope
        if scope == "request":
            continue
        if scope == "run":
            for frame in frames:
                _keep_tightest(chosen, _counter(limit, frame.id, who, tz))
            continue
        subject = _subject(limit, who, model)
        if subject is not None and (limit.key is None or limit.key == subject):
            _keep_tightest(chosen, _counter(limit, subject, who, tz))
    for frame in frames:
        for limit in frame.limits:
            if limit.scope == "request":
                continue
            subject = frame.id if limit.scope == "run" else _subject(limit, who, model)
            if subject is not None and (limit.key is None or limit.key == subject):
                _keep_tightest(chosen, _counter(limit, subject, who, tz))
    return tuple(chosen.values())


def _keep_tightest(chosen: dict[str, Counter], counter: Counter) -> None:
    current = chosen.get(counter.key)
    if current is None or counter.limit < current.limit:
        chosen[counter.key] = counter


def plan_caps(policy: Policy, frames: tuple[Frame, ...]) -> int | None:
    """The tightest per-request cap in force, in nano-USD (None: no cap)."""
    cap = None
    for limit in policy.limits:
        if limit.scope == "request" and (cap is None or limit.nanos < cap):
            cap = limit.nanos
    for frame in frames:
        for limit in frame.limits:
            if limit.scope == "request" and (cap is None or limit.nanos < cap):
                cap = limit.nanos
    return cap


def on_exceed_of(policy: Policy, frames: tuple[Frame, ...]) -> OnExceed:
    """The innermost frame that names a policy wins over the configured one."""
    for frame in reversed(frames):
        if frame.on_exceed is not None:
            return frame.on_exceed
    return policy.on_exceed


# -- decisions -----------------------------------------------------------------


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
        key=counter.subject if counter.scope not in ("global", "run") else "",
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
