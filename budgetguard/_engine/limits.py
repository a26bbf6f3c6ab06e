"""Limits as data: set, remove and list the limits and plans the store holds.

``bg.set_limit(bg.Limit(scope="tenant", key="acme", usd=500, window="month"))``
stores a limit every process applies within ``LIMITS_STALE_S`` (1 s; at once in
the process that set it, and with a ``MemoryStore``); it replaces the code's
limits of its scope, window and unit where it applies (see ``_core/plan.py`` for
the order). ``bg.set_plan(tenant="acme", plan="pro")`` puts a tenant or a user on
one of ``Policy(plans=...)``. Each is one flow, driven sync or async.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from .._core.errors import ConfigurationError
from .._core.limitbook import LimitBook, LimitId, check_plan_target, limit_id
from .._core.policy import Limit, Policy, Scope, check_key
from .._core.windows import WINDOWS
from ..stores.drive import Admin, Flow, LoadLimits, arun, run
from .config import current

__all__ = [
    "ListedLimit",
    "alimits",
    "aremove_limit",
    "aset_limit",
    "aset_plan",
    "limits",
    "remove_limit",
    "set_limit",
    "set_plan",
]


@dataclass(frozen=True, slots=True)
class ListedLimit:
    """One limit and where it comes from: ``source`` is ``"code"`` (``Policy.limits``),
    ``"store"`` (``bg.set_limit``) or ``"plan:<name>"``; ``note`` says what overrides
    what; ``on_plan`` lists who is on a plan (``"tenant acme"``)."""

    limit: Limit
    source: str
    note: str = ""
    on_plan: tuple[str, ...] = ()


def _checked(limit: Any) -> Limit:
    if not isinstance(limit, Limit):
        raise ConfigurationError(f"limit: expected a bg.Limit, got {limit!r}")
    if limit.scope == "run":
        raise ConfigurationError(
            "scope: a run limit belongs to one spend_limit block; it cannot be stored"
        )
    return limit


def _set_flow(limit: Limit) -> Flow[None]:
    yield Admin("put_limit", (_checked(limit),))


def _ident(book: LimitBook, scope: Any, key: str | None, window: str | None) -> LimitId | None:
    """Which stored limit ``remove_limit`` means; None: there is none."""
    if isinstance(scope, Limit):
        return limit_id(scope.scope, scope.key, scope.resolved_window)
    scopes = [name for name in get_args(Scope) if name != "run"]
    if scope not in scopes:
        raise ConfigurationError(f"scope: expected one of {', '.join(scopes)}, got {scope!r}")
    if window is not None and window not in WINDOWS:
        raise ConfigurationError(f"window: expected one of {', '.join(WINDOWS)}, got {window!r}")
    if key is not None:
        _check(check_key, key, "key")
    held = [
        limit
        for limit in book.limits
        if limit.scope == scope
        and (limit.key or None) == key
        and (window is None or limit.resolved_window == window)
    ]
    if not held:
        return None
    if len(held) > 1:
        windows = sorted(limit.resolved_window for limit in held)
        raise ConfigurationError(f"window: {scope} {key!r} has stored limits for {windows}")
    only = held[0]
    return limit_id(only.scope, only.key, only.resolved_window)


def _check(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ValueError as error:
        raise ConfigurationError(str(error)) from None


def _remove_flow(scope: Any, key: str | None, window: str | None) -> Flow[bool]:
    book = yield LoadLimits()
    ident = _ident(book, scope, key, window)
    if ident is None:
        return False
    removed: bool = yield Admin("drop_limit", (ident,))
    return removed


def _plan_flow(
    policy: Policy, tenant: str | None, user: str | None, plan: str | None
) -> Flow[None]:
    subject = _check(check_plan_target, tenant, user)
    if plan is not None and plan not in policy.plans:
        known = ", ".join(repr(name) for name in policy.plans) or "none"
        raise ConfigurationError(f"plan: unknown plan {plan!r}; Policy(plans=...) defines {known}")
    if (
        plan is not None
        and subject[0] == "user"
        and all(limit.scope == "tenant" for limit in policy.plans[plan])
    ):
        raise ConfigurationError(
            f"plan: {plan!r} holds only tenant limits, and a user's plan applies its "
            "user and request limits: assign it with tenant= instead"
        )
    yield Admin("put_plan", (subject, plan))


def _list_flow(policy: Policy) -> Flow[list[ListedLimit]]:
    book = yield LoadLimits()
    return listed(policy, book)


def listed(policy: Policy, book: LimitBook) -> list[ListedLimit]:
    """Code, plan and stored limits, each with what overrides it or what it overrides."""
    rows: list[ListedLimit] = []
    for limit in policy.limits:
        rows.append(ListedLimit(limit, "code", _overridden(limit, book, policy)))
    members: dict[str, list[tuple[str, str]]] = {}
    for (scope, key), plan in sorted(book.plans.items()):
        members.setdefault(plan, []).append((scope, key))
    for name, plan_limits in policy.plans.items():
        for limit in plan_limits:
            # A user's plan applies its user and request limits, never its tenant ones.
            on = tuple(
                f"{scope} {key}"
                for scope, key in members.get(name, ())
                if scope == "tenant" or limit.scope != "tenant"
            )
            rows.append(ListedLimit(limit, f"plan:{name}", _plan_note(limit, policy), on))
    for limit in book.limits:
        rows.append(ListedLimit(limit, "store", _overrides(limit, policy)))
    return rows


def _same_slot(a: Limit, b: Limit) -> bool:
    return (
        a.scope == b.scope
        and a.resolved_window == b.resolved_window
        and bool(set(a.units) & set(b.units))
    )


def _overridden(limit: Limit, book: LimitBook, policy: Policy) -> str:
    keys = [
        held.key or "every key"
        for held in book.limits
        if _same_slot(held, limit) and (limit.key is None or held.key in (None, limit.key))
    ]
    plans = [name for name, held in policy.plans.items() if any(_same_slot(h, limit) for h in held)]
    notes = []
    if keys:
        notes.append("overridden by the store for " + ", ".join(sorted(map(str, keys))))
    if plans:
        notes.append("overridden for whoever is on plan " + ", ".join(plans))
    return "; ".join(notes)


def _overrides(limit: Limit, policy: Policy) -> str:
    code = [held for held in policy.limits if _same_slot(held, limit)]
    if not code:
        return ""
    who = f"for {limit.key!r}" if limit.key else "for every key"
    return f"overrides the code's {limit.scope} {limit.resolved_window} limit {who}"


def _plan_note(limit: Limit, policy: Policy) -> str:
    if any(_same_slot(held, limit) for held in policy.limits):
        return f"overrides the code's {limit.scope} {limit.resolved_window} limit"
    return ""


# -- the public functions ----------------------------------------------------------
def set_limit(limit: Limit) -> None:
    """Store ``limit`` (replacing a stored one of the same scope, key and window, whatever
    its amounts: one stored limit may carry usd=, tokens= and requests= together) for
    every process that shares the store; it applies from their next reservation (at
    most 1 s later with Redis)."""
    settings = current()
    run(_set_flow(limit), settings.store)


async def aset_limit(limit: Limit) -> None:
    settings = current()
    await arun(_set_flow(limit), settings.async_store)


def remove_limit(
    scope: Scope | Limit, key: str | None = None, *, window: str | None = None
) -> bool:
    """Remove a stored limit (``remove_limit("tenant", "acme", window="month")``, or the
    ``Limit`` itself); False when the store held none. ``window`` may be left out when
    the key has one stored limit. The code's limits are untouched."""
    settings = current()
    return run(_remove_flow(scope, key, window), settings.store)


async def aremove_limit(
    scope: Scope | Limit, key: str | None = None, *, window: str | None = None
) -> bool:
    settings = current()
    return await arun(_remove_flow(scope, key, window), settings.async_store)


def set_plan(*, tenant: str | None = None, user: str | None = None, plan: str | None) -> None:
    """Put a tenant (or a user) on one of ``Policy(plans=...)``; ``plan=None`` takes it
    off. Stored like ``set_limit``: every process applies it."""
    settings = current()
    run(_plan_flow(settings.policy, tenant, user, plan), settings.store)


async def aset_plan(
    *, tenant: str | None = None, user: str | None = None, plan: str | None
) -> None:
    settings = current()
    await arun(_plan_flow(settings.policy, tenant, user, plan), settings.async_store)


def limits() -> list[ListedLimit]:
    """Every limit in force: the code's, each plan's and the store's, saying where each
    comes from and what overrides what."""
    settings = current()
    return run(_list_flow(settings.policy), settings.store)


async def alimits() -> list[ListedLimit]:
    settings = current()
    return await arun(_list_flow(settings.policy), settings.async_store)
