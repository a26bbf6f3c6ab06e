"""Limits held in the store: per-key limits and plan assignments, as one immutable value.

A store keeps a ``LimitBook`` (``bg.set_limit``, ``bg.set_plan``); every process
plans its calls with the latest one it has read (see ``stores/base.py`` for how
fresh that is). Indexed once when built, so planning a call is a few dict lookups
whatever the number of tenants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .policy import Limit, Scope, check_key

__all__ = ["EMPTY_BOOK", "LimitBook", "LimitId", "check_plan_target", "limit_id"]

LimitId = tuple[str, str, str]
"""What a stored limit replaces: (scope, key or "", window)."""


def limit_id(scope: str, key: str | None, window: str) -> LimitId:
    return (scope, key or "", window)


def check_plan_target(tenant: str | None, user: str | None) -> tuple[str, str]:
    """``set_plan``'s subject: exactly one of ``tenant=`` / ``user=``."""
    if (tenant is None) == (user is None):
        raise ValueError("tenant: pass exactly one of tenant= or user=")
    if tenant is not None:
        return "tenant", check_key(tenant, "tenant")
    assert user is not None
    return "user", check_key(user, "user")


@dataclass(frozen=True, slots=True)
class LimitBook:
    """Stored limits (each replacing code limits of its scope, key, window and unit) and
    plan assignments (``("tenant", "acme") -> "pro"``). ``version`` changes with every
    write, so a process can tell cheaply whether its copy is current."""

    version: str = ""
    limits: tuple[Limit, ...] = ()
    plans: Mapping[tuple[str, str], str] = field(default_factory=dict)
    keyed: Mapping[tuple[str, str], tuple[Limit, ...]] = field(init=False, repr=False)
    unkeyed: Mapping[str, tuple[Limit, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        keyed: dict[tuple[str, str], list[Limit]] = {}
        unkeyed: dict[str, list[Limit]] = {}
        for limit in self.limits:
            if limit.key is None:
                unkeyed.setdefault(limit.scope, []).append(limit)
            else:
                keyed.setdefault((limit.scope, limit.key), []).append(limit)
        object.__setattr__(self, "keyed", MappingProxyType({k: tuple(v) for k, v in keyed.items()}))
        object.__setattr__(
            self, "unkeyed", MappingProxyType({k: tuple(v) for k, v in unkeyed.items()})
        )
        object.__setattr__(self, "plans", MappingProxyType(dict(self.plans)))

    def __bool__(self) -> bool:
        return bool(self.limits or self.plans)

    def with_limit(self, limit: Limit, version: str) -> LimitBook:
        ident = limit_id(limit.scope, limit.key, limit.resolved_window)
        kept = tuple(held for held in self.limits if _id(held) != ident)
        return LimitBook(version, (*kept, limit), self.plans)

    def without_limit(self, ident: LimitId, version: str) -> tuple[LimitBook, bool]:
        kept = tuple(held for held in self.limits if _id(held) != ident)
        if len(kept) == len(self.limits):
            return self, False
        return LimitBook(version, kept, self.plans), True

    def with_plan(self, subject: tuple[str, str], plan: str | None, version: str) -> LimitBook:
        plans = dict(self.plans)
        if plan is None:
            plans.pop(subject, None)
        else:
            plans[subject] = plan
        return LimitBook(version, self.limits, plans)

    def plan_of(self, scope: Scope, key: str | None) -> str | None:
        return None if key is None else self.plans.get((scope, key))


def _id(limit: Limit) -> LimitId:
    return limit_id(limit.scope, limit.key, limit.resolved_window)


EMPTY_BOOK = LimitBook()
