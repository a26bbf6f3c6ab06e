"""Planning a call: which counters it touches and which per-request caps apply.

Pure: given the policy, the limits the store holds (``LimitBook``), the active
frames, the attribution and the model, return the counters (immutable, cached)
to reserve on.

Where several sources set a limit for the same scope, window and unit, the most
specific wins: a stored limit for this key, then the user's plan, then the
tenant's plan, then a stored limit for every key of the scope, then the code
(``Policy.limits``; the tightest of those that match). ``spend_limit`` frames
add their own limits on top: an inner block never spends past any of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import quote, unquote

from .attribution import Attribution, Frame
from .counters import Counter, soft_limit
from .limitbook import EMPTY_BOOK, LimitBook
from .policy import Limit, OnExceed, Policy, Unit

__all__ = [
    "Cap",
    "counter_of",
    "escape",
    "on_exceed_of",
    "plan_caps",
    "plan_counters",
    "sources",
    "user_tenant",
]


@lru_cache(maxsize=8192)
def escape(value: str) -> str:
    # Keys are "scope=value" joined by ":" and "/", and Redis hash tags use
    # braces: none of those may leak in from a user id.
    return quote(value, safe="-_.@")


@dataclass(frozen=True, slots=True)
class Cap:
    """A per-request cap in force: at most ``amount`` of ``unit`` for one call."""

    amount: int
    unit: Unit
    soft: bool
    source: str


def _subject(scope: str, who: Attribution, model: str | None) -> str | None:
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


_SUBJECT_SCOPES = ("global", "tenant", "user", "feature", "model")


Entry = tuple[Limit, Unit, str]
"""A limit, the unit it applies in, and where it comes from (``"code"``, ``"store"``,
``"plan:<name>"``)."""


def sources(
    policy: Policy, book: LimitBook, scope: str, subject: str | None, who: Attribution
) -> Iterator[tuple[Entry, ...]]:
    """The layers of limits that may apply to ``scope``'s ``subject``, most specific
    first: a stored limit for this key, the user's plan, the tenant's plan, then the
    rest as one layer (the code's limits for this key, and the store's limit for every
    key where there is one, else the code's for every key)."""
    if subject is not None and scope != "global":
        keyed = book.keyed.get((scope, subject))
        if keyed:
            yield _entries(keyed, "store")
    if book.plans and scope in ("tenant", "user", "request"):
        if scope != "tenant" and who.user is not None:
            plan = book.plans.get(("user", who.user))
            if plan is not None and plan in policy.plans:
                yield _entries(policy.plans[plan], f"plan:{plan}", scope)
        if who.tenant is not None:
            plan = book.plans.get(("tenant", who.tenant))
            if plan is not None and plan in policy.plans:
                yield _entries(policy.plans[plan], f"plan:{plan}", scope)
    stored = _entries(book.unkeyed.get(scope, ()), "store")
    replaced = {(limit.resolved_window, unit) for limit, unit, _ in stored}
    yield stored + tuple(
        (limit, unit, "code")
        for limit in policy.limits
        if limit.scope == scope and (limit.key is None or limit.key == subject)
        for unit in limit.units
        if limit.key is not None or (limit.resolved_window, unit) not in replaced
    )


def _entries(limits: tuple[Limit, ...], source: str, scope: str | None = None) -> tuple[Entry, ...]:
    return tuple(
        (limit, unit, source)
        for limit in limits
        if scope is None or limit.scope == scope
        for unit in limit.units
    )


def _resolved(
    policy: Policy, book: LimitBook, scope: str, subject: str | None, who: Attribution
) -> Iterator[tuple[Limit, Unit, str, bool]]:
    """(limit, unit, source, soft) in force for ``subject``. Per window and unit, the
    first layer with a hard limit sets the hard one (the tightest, within the layer),
    and the first with a soft one the soft one - unless a hard limit above replaced
    it: a soft limit (a shadow run) never replaces a hard one, both are then checked
    on the same counter."""
    shadow = policy.enforce == "warn"
    hard: dict[tuple[str, str], int] = {}
    soft: dict[tuple[str, str], int] = {}
    for layer, entries in enumerate(sources(policy, book, scope, subject, who)):
        for limit, unit, source in entries:
            slot = (limit.resolved_window, unit)
            warn = shadow or limit.soft
            if hard.get(slot, layer) < layer or (warn and soft.get(slot, layer) < layer):
                continue
            (soft if warn else hard).setdefault(slot, layer)
            yield limit, unit, source, warn


def _make_counter(
    limit: Limit,
    unit: Unit,
    subject: str,
    *,
    tenant: str | None,
    tz: str,
    soft: bool,
    source: str,
    label: str = "",
) -> Counter:
    window = limit.resolved_window
    tenant_tag = escape(tenant) if tenant else "global"
    if limit.scope == "user" and tenant:
        # Users live inside tenants: "u-1" of two tenants are two people.
        base = f"tenant={tenant_tag}/user={escape(subject)}"
    else:
        base = f"{limit.scope}={escape(subject)}"
    tag = tenant_tag if limit.scope in ("tenant", "user", "run") else "global"
    amount = limit.amount(unit)
    assert amount is not None  # unit is one of limit.units
    return Counter(
        key=f"{base}:{window}" if unit == "usd" else f"{base}:{window}:{unit}",
        limit=amount,
        window=window,
        scope=limit.scope,
        subject=subject,
        tag=tag,
        tz=tz,
        label=label,
        unit=unit,
        soft=soft,
        source=source,
    )


def user_tenant(counter: Counter) -> str | None:
    """The tenant a user counter counts within (``tenant=acme/user=u-1:day``, as
    ``_make_counter`` names it), else None."""
    key = counter.key
    if counter.scope != "user" or not key.startswith("tenant="):
        return None
    return unquote(key[len("tenant=") : key.find("/")])


_cached_counter = lru_cache(maxsize=8192)(_make_counter)
"""Counters are immutable and a pure function of their arguments: every call of a
tenant or user rebuilds the same ones (key strings, the limit in store units)."""


def counter_of(limit: Limit, unit: Unit, subject: str, tenant: str | None, tz: str) -> Counter:
    """The counter ``limit`` keeps in ``unit`` for ``subject`` (users within ``tenant``)."""
    return _cached_counter(
        limit, unit, subject, tenant=tenant, tz=tz, soft=limit.soft, source="code"
    )


def plan_counters(
    policy: Policy,
    frames: tuple[Frame, ...],
    who: Attribution,
    model: str | None,
    book: LimitBook = EMPTY_BOOK,
) -> tuple[Counter, ...]:
    """Every counter one call must fit in: the limits in force (see the module doc)
    and each frame's own.

    Two limits on the same counter (same scope, subject, window and unit) share
    its spend, so only one is kept (a hard one before a soft one, then the
    tighter): holding twice on one counter would double-count the call.
    """
    chosen: dict[str, Counter] = {}
    tz = policy.timezone
    shadow = policy.enforce == "warn"
    tenant = who.tenant
    for scope in _SUBJECT_SCOPES:
        subject = _subject(scope, who, model)
        if subject is None:
            continue
        for limit, unit, source, soft in _resolved(policy, book, scope, subject, who):
            counter = _cached_counter(
                limit, unit, subject, tenant=tenant, tz=tz, soft=soft, source=source
            )
            _keep(chosen, counter)
    for limit in policy.limits:
        if limit.scope == "run":
            for frame in frames:
                _run_counters(chosen, limit, frame, who, tz=tz, soft=shadow or limit.soft)
    for frame in frames:
        for limit in frame.limits:
            scope = limit.scope
            if scope == "request":
                continue
            if scope == "run":
                _run_counters(chosen, limit, frame, who, tz=tz, soft=limit.soft)
                continue
            subject = _subject(scope, who, model)
            if subject is not None and (limit.key is None or limit.key == subject):
                for unit in limit.units:
                    counter = _cached_counter(
                        limit, unit, subject, tenant=tenant, tz=tz, soft=limit.soft, source="frame"
                    )
                    _keep(chosen, counter)
    return tuple(chosen.values())


def _run_counters(
    chosen: dict[str, Counter],
    limit: Limit,
    frame: Frame,
    who: Attribution,
    *,
    tz: str,
    soft: bool,
) -> None:
    # One per frame: caching would only evict the others.
    for unit in limit.units:
        counter = _make_counter(
            limit,
            unit,
            frame.id,
            tenant=who.tenant,
            tz=tz,
            soft=soft,
            source="frame" if limit in frame.limits else "code",
            label=frame.name or "",
        )
        _keep(chosen, counter)


def _keep(chosen: dict[str, Counter], counter: Counter) -> None:
    """One counter per key: the tightest hard limit, and beside it the tightest soft
    one (``warn_at``) - a shadow limit is reported, never a reason to refuse."""
    current = chosen.get(counter.key)
    chosen[counter.key] = counter if current is None else _merged(current, counter)


def _merged(a: Counter, b: Counter) -> Counter:
    if a.soft and b.soft:
        return a if a.limit <= b.limit else b
    base = b if a.soft or (not b.soft and b.limit < a.limit) else a
    other = a if base is b else b
    warns = [w for w in (soft_limit(other), base.warn_at) if w is not None]
    warn = min(warns) if warns else None
    return base if warn == base.warn_at else replace(base, warn_at=warn)


_NOBODY = Attribution()


def plan_caps(
    policy: Policy,
    frames: tuple[Frame, ...],
    who: Attribution = _NOBODY,
    book: LimitBook = EMPTY_BOOK,
) -> tuple[Cap, ...]:
    """The per-request caps in force: per unit, the tightest hard one and the tightest
    soft one."""
    caps: dict[tuple[Unit, bool], Cap] = {}
    for limit, unit, source, soft in _resolved(policy, book, "request", None, who):
        _keep_cap(caps, limit, unit, soft, source)
    for frame in frames:
        for limit in frame.limits:
            if limit.scope == "request":
                for unit in limit.units:
                    _keep_cap(caps, limit, unit, limit.soft, "frame")
    return tuple(caps.values())


def _keep_cap(
    caps: dict[tuple[Unit, bool], Cap], limit: Limit, unit: Unit, soft: bool, source: str
) -> None:
    amount = limit.amount(unit)
    assert amount is not None
    current = caps.get((unit, soft))
    if current is None or amount < current.amount:
        caps[unit, soft] = Cap(amount, unit, soft, source)


def on_exceed_of(policy: Policy, frames: tuple[Frame, ...]) -> OnExceed:
    """The innermost frame that names a policy wins over the configured one."""
    for frame in reversed(frames):
        if frame.on_exceed is not None:
            return frame.on_exceed
    return policy.on_exceed
