"""Planning a call: which counters it touches and which per-request cap applies.

Pure: given the policy, the active frames, the attribution and the model,
return the counters (immutable, cached) to reserve on.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote

from .attribution import Attribution, Frame
from .counters import Counter
from .policy import Limit, OnExceed, Policy

__all__ = ["escape", "on_exceed_of", "plan_caps", "plan_counters"]


@lru_cache(maxsize=8192)
def escape(value: str) -> str:
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
    return _cached_counter(limit, subject, who.tenant, tz)


def _run_counter(limit: Limit, frame: Frame, who: Attribution, tz: str) -> Counter:
    # One per frame: caching would only evict the others.
    return _make_counter(limit, frame.id, who.tenant, tz, frame.name or "")


def _make_counter(
    limit: Limit, subject: str, tenant: str | None, tz: str, label: str = ""
) -> Counter:
    window = limit.resolved_window
    tenant_tag = escape(tenant) if tenant else "global"
    if limit.scope == "user" and tenant:
        # Users live inside tenants: "u-1" of two tenants are two people.
        base = f"tenant={tenant_tag}/user={escape(subject)}"
    else:
        base = f"{limit.scope}={escape(subject)}"
    tag = tenant_tag if limit.scope in ("tenant", "user", "run") else "global"
    return Counter(
        key=f"{base}:{window}",
        limit=limit.nanos,
        window=window,
        scope=limit.scope,
        subject=subject,
        tag=tag,
        tz=tz,
        label=label,
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
                _keep_tightest(chosen, _run_counter(limit, frame, who, tz))
            continue
        subject = _subject(limit, who, model)
        if subject is not None and (limit.key is None or limit.key == subject):
            _keep_tightest(chosen, _counter(limit, subject, who, tz))
    for frame in frames:
        for limit in frame.limits:
            if limit.scope == "request":
                continue
            if limit.scope == "run":
                _keep_tightest(chosen, _run_counter(limit, frame, who, tz))
                continue
            subject = _subject(limit, who, model)
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
