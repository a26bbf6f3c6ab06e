"""The Prometheus budget gauges: limit, spent and held of every budget, in its unit,
and which counters of the code's and the store's limits a scrape reads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .._core.attribution import Attribution
from .._core.counters import Counter, CounterStatus
from .._core.limitbook import EMPTY_BOOK, LimitBook
from .._core.plan import plan_counters, user_tenant
from .._core.policy import Policy

__all__ = ["FIXED_SCOPES", "book_of", "budget_families", "policy_counters", "usd"]

NANOS = 1_000_000_000
FIXED_SCOPES = ("global", "feature", "model")
_HELP = {"limit": "The limit", "spent": "Settled spend", "held": "Held by calls in flight"}


def usd(nanos: int) -> float:
    """Dollars as the float Prometheus carries: int / int is correctly rounded."""
    return nanos / NANOS


def _amount(counter: Counter, value: int) -> float:
    return usd(value) if counter.unit == "usd" else float(value)


def budget_families(core: Any, namespace: str, statuses: Iterable[CounterStatus]) -> Iterator[Any]:
    """Gauges ``<ns>_budget_{limit,spent,held}_{usd,tokens,requests}`` of ``statuses``,
    labelled scope, key, window, tenant (of a user counter), enforce, source."""
    labels = ["scope", "key", "window", "tenant", "enforce"]
    families: dict[tuple[str, str], Any] = {}
    for raw in statuses:
        counter = raw.counter
        values = (
            counter.scope,
            "" if counter.scope == "global" else counter.subject,
            counter.window,
            user_tenant(counter) or "",
            "warn" if counter.soft else "refuse",
        )
        for what, value in (("limit", counter.limit), ("spent", raw.spent), ("held", raw.held)):
            name = f"{namespace}_budget_{what}_{counter.unit}"
            family = families.get((what, counter.unit))
            if family is None:
                unit = "dollars" if counter.unit == "usd" else counter.unit
                help_text = f"{_HELP[what]} in each budget's current window, in {unit}"
                family = families[(what, counter.unit)] = core.GaugeMetricFamily(
                    name, help_text, labels=labels
                )
            family.add_metric(values, _amount(counter, value))
    yield from families.values()


def book_of(store: object) -> LimitBook:
    read: Callable[[], object] | None = getattr(store, "limit_book", None)
    book = read() if callable(read) else EMPTY_BOOK
    return book if isinstance(book, LimitBook) else EMPTY_BOOK


def policy_counters(
    policy: Policy, book: LimitBook, scopes: Iterable[str] = FIXED_SCOPES
) -> list[Counter]:
    """The counters of the code's and the store's limits whose subject is fixed: the
    global limits and those naming their key (a feature, a model, a named tenant)."""
    allowed = set(scopes)
    found: dict[str, Counter] = {}
    for limit in (*policy.limits, *book.limits):
        scope = limit.scope
        if scope not in allowed or (scope != "global" and limit.key is None) or scope == "user":
            continue
        subject = "*" if scope == "global" else limit.key
        who = Attribution(
            tenant=subject if scope == "tenant" else None,
            feature=subject if scope == "feature" else None,
        )
        model = subject if scope == "model" else None
        for counter in plan_counters(policy, (), who, model, book):
            if counter.scope == scope and counter.window == limit.resolved_window:
                found.setdefault(counter.key, counter)
    return list(found.values())
