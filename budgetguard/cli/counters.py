"""Which counters exist in a store, and the status rows of the limits in force."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .._core.attribution import Attribution
from .._core.counters import Counter, CounterStatus
from .._core.limitbook import EMPTY_BOOK, LimitBook
from .._core.plan import escape, plan_counters
from .._core.policy import Limit, Policy
from .._core.windows import WINDOWS, window_span
from ..stores.base import Store
from ..stores.memory import MemoryStore
from .context import CliError, Context

if TYPE_CHECKING:
    from ..stores.redis import RedisStore

__all__ = [
    "STATUS_SCOPES",
    "UNIT_SUFFIXES",
    "counter_pattern",
    "glob_escape",
    "key_unit",
    "parse_counter_key",
    "split_unit",
    "status_rows",
    "store_book",
]

STATUS_SCOPES = ("global", "tenant", "user", "feature", "model")
UNIT_SUFFIXES = ("tokens", "requests")
"""A counter of tokens or requests has its unit after the window: ``tenant=acme:day:tokens``
(a dollar counter has none: ``tenant=acme:day``)."""


def glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def counter_pattern(
    prefix: str,
    scope: str,
    *,
    key: str | None = None,
    tenant: str | None = None,
    window: str | None = None,
    kind: str = "c",
    bucket: str = "*",
) -> str:
    """SCAN pattern of a scope's counter keys (``kind="c"``) or alert markers (``"a"``).

    Keys are ``<prefix>:{<tag>}:<kind>:<counter key>:<rest>`` (see stores/_redis_common.py);
    user-supplied parts are percent-escaped by the core, so they hold no glob characters.
    The last ``*`` also matches the unit of a tokens / requests counter
    (``tenant=acme:day:tokens:<bucket>``): a pattern covers every unit.
    """
    esc = escape
    p = glob_escape(prefix)
    w = window or "*"
    subject = "*" if key is None else esc(key)
    if scope == "global":
        return f"{p}:{{global}}:{kind}:global={esc('*')}:{w}:{bucket}"
    if scope == "tenant":
        t = subject if key is not None else ("*" if tenant is None else esc(tenant))
        return f"{p}:{{{t}}}:{kind}:tenant={t}:{w}:{bucket}"
    if scope == "user":
        if tenant is not None:
            t = esc(tenant)
            return f"{p}:{{{t}}}:{kind}:tenant={t}/user={subject}:{w}:{bucket}"
        return f"{p}:{{*}}:{kind}:*user={subject}:{w}:{bucket}"
    if scope in ("feature", "model"):
        return f"{p}:{{global}}:{kind}:{scope}={subject}:{w}:{bucket}"
    raise CliError(f"--scope: expected one of {', '.join(STATUS_SCOPES)}, got {scope!r}")


def split_unit(counter_key: str) -> tuple[str, str]:
    """``tenant=acme:day:tokens`` -> (``tenant=acme:day``, ``"tokens"``); a dollar
    counter's key comes back whole, with ``"usd"``."""
    base, sep, last = counter_key.rpartition(":")
    if sep and last in UNIT_SUFFIXES:
        return base, last
    return counter_key, "usd"


def key_unit(redis_key: str, kind: str = "c") -> str | None:
    """The unit of a Redis counter key (``<prefix>:{t}:c:<counter key>:<bucket>``) or alert
    marker (``...:a:<counter key>:<bucket>:<what>``); None: not one of those."""
    marker = f"}}:{kind}:"
    at = redis_key.find(marker)
    if at < 0:
        return None
    parts = redis_key[at + len(marker) :].split(":")  # subject, window, [unit], bucket, ...
    if len(parts) < 3:
        return None
    return parts[2] if parts[2] in UNIT_SUFFIXES else "usd"


@dataclass(frozen=True, slots=True)
class _Found:
    """A counter seen in the store: its attribution, bucket start and unit."""

    scope: str
    subject: str
    tenant: str | None
    window: str
    start: int
    unit: str = "usd"


def parse_counter_key(counter_key: str) -> tuple[str, str, str | None, str] | None:
    """``tenant=acme/user=u-1:day`` -> (scope, subject, tenant, window); a unit suffix
    (``:tokens``, ``:requests``) is not a window: see ``split_unit``."""
    base, sep, window = split_unit(counter_key)[0].rpartition(":")
    if not sep:
        return None
    parts = {}
    for part in base.split("/"):
        name, eq, value = part.partition("=")
        if not eq:
            return None
        parts[name] = unquote(value)
    if "user" in parts:
        return "user", parts["user"], parts.get("tenant"), window
    if len(parts) != 1:
        return None
    ((scope, subject),) = parts.items()
    return scope, subject, subject if scope == "tenant" else None, window


def _found(counter_key: str, start: int) -> _Found | None:
    parsed = parse_counter_key(counter_key)
    if parsed is None:
        return None
    return _Found(*parsed, start, split_unit(counter_key)[1])


def _redis_found(store: RedisStore, pattern: str) -> Iterator[_Found]:
    marker = ":c:"
    for raw in store.client.scan_iter(match=pattern, count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        at = key.find("}" + marker)
        if at < 0:
            continue
        counter_key, _, start = key[at + 1 + len(marker) :].rpartition(":")
        found = _found(counter_key, int(start)) if start.lstrip("-").isdigit() else None
        if found is not None:
            yield found


def _memory_found(store: MemoryStore) -> Iterator[_Found]:
    buckets: Mapping[tuple[str, int], Any] = getattr(store, "_buckets", {})
    for counter_key, start in list(buckets):
        found = _found(counter_key, start)
        if found is not None:
            yield found


def _discover(
    store: Store, scope: str, window: str, prefix: str, *, want: str | None, tenant: str | None
) -> list[_Found]:
    """Counters of a scope (every user, every feature) that exist in the store."""
    if isinstance(store, MemoryStore):
        found: Iterable[_Found] = _memory_found(store)
    elif hasattr(store, "client") and hasattr(store, "bucket_key"):
        pattern = counter_pattern(prefix, scope, key=want, tenant=tenant, window=window)
        found = _redis_found(store, pattern)  # type: ignore[arg-type]
    else:
        return []
    return [
        f
        for f in found
        if f.scope == scope
        and f.window == window
        and (want is None or f.subject == want)
        and (tenant is None or f.tenant == tenant)
    ]


def store_book(store: object) -> LimitBook:
    """The limits and plan assignments ``store`` holds (none for a store that holds none)."""
    read = getattr(store, "limit_book", None)
    if not callable(read):
        return EMPTY_BOOK
    book = read()
    return book if isinstance(book, LimitBook) else EMPTY_BOOK


OnPlan = tuple[str, str] | None
"""Who a plan's limit is shown for: ("tenant", "acme"), ("user", "u-1"); None: not a plan's."""


def _in_force(policy: Policy, book: LimitBook) -> Iterator[tuple[Limit, OnPlan]]:
    """Every limit that may apply: the code's, the store's, and each assigned plan's."""
    for limit in policy.limits:
        yield limit, None
    for limit in book.limits:
        yield limit, None
    for (kind, name), plan in sorted(book.plans.items()):
        for limit in policy.plans.get(plan, ()):
            yield limit, (kind, name)


def _subjects(
    ctx: Context,
    limit: Limit,
    on: OnPlan,
    *,
    key: str | None,
    tenant: str | None,
    now: float,
) -> set[tuple[str, str | None]] | None:
    """(subject, tenant) of every counter of ``limit`` to show; None: the limit is not
    one the filters ask about (a plan nobody asked for)."""
    scope, window = limit.scope, limit.resolved_window
    want = key if key is not None else limit.key
    asked = tenant  # the --tenant filter as given
    if on is not None:  # a plan's limit: only for whoever is on the plan
        kind, name = on
        if kind == "tenant":
            if tenant not in (None, name) or (scope == "tenant" and want not in (None, name)):
                return None
            if scope == "tenant":
                return {(name, None)}
            tenant = name  # a user limit of a tenant's plan: that tenant's users
        else:  # a user's plan holds only for that user (tenant limits are the tenant's)
            if scope != "user" or want not in (None, name):
                return None
            want = name
    if scope == "tenant" and want is None:
        want = tenant
    if scope == "global":
        return {("*", None)}
    if scope != "user" and want is not None:
        return {(want, None)}
    start = window_span(window, now, ctx.policy.timezone)[0]
    seen = _discover(ctx.store(), scope, window, ctx.prefix, want=want, tenant=tenant)
    subjects = {
        (f.subject, f.tenant if scope == "user" else None) for f in seen if f.start == start
    }
    # A user no counter shows yet: only one that was named (--key, the limit's key), and
    # for a tenant's plan only within a tenant that was named too - never made up from
    # who is on a plan.
    named = key is not None or limit.key is not None
    if on is not None and on[0] == "tenant":
        named = named and asked == on[1]
    if not subjects and want is not None and named:
        subjects = {(want, tenant)}
    return subjects


def _counters_of(
    policy: Policy, book: LimitBook, limit: Limit, subject: str, owner: str | None
) -> list[Counter]:
    """The counters of ``scope`` and ``window`` in force for ``subject``: the library's
    own planning, so a stored limit or a plan replaces the code's exactly as for a call."""
    scope, window = limit.scope, limit.resolved_window
    who = Attribution(
        tenant=subject if scope == "tenant" else owner,
        user=subject if scope == "user" else None,
        feature=subject if scope == "feature" else None,
    )
    model = subject if scope == "model" else None
    counters = plan_counters(policy, (), who, model, book)
    return [c for c in counters if c.scope == scope and c.window == window]


def _nobody(limit: Limit, on: OnPlan, key: str | None, tenant: str | None) -> str:
    """Why a limit shows no row: nobody it applies to has spent in this window."""
    want = key or limit.key or (on[1] if on is not None and on[0] == "user" else None)
    inside = on[1] if on is not None and on[0] == "tenant" else tenant
    where = f" of tenant {inside!r}" if inside is not None and limit.scope == "user" else ""
    when = f"in the current {limit.resolved_window} yet"
    if want is not None:
        return f"{limit.scope} {want!r}{where} has not spent {when}"
    return f"no {limit.scope}{where} has spent {when}"


def status_rows(
    ctx: Context,
    scope: str | None,
    key: str | None,
    tenant: str | None,
    *,
    book: LimitBook = EMPTY_BOOK,
    unit: str | None = None,
) -> tuple[list[tuple[CounterStatus, str | None]], list[str]]:
    """The status of every counter in force (code, plan and stored limits), with the
    tenant of each user counter, and notes on limits no subject has spent under yet."""
    notes: list[str] = []
    counters: dict[str, tuple[Counter, str | None]] = {}
    now = time.time()
    for limit, on in _in_force(ctx.policy, book):
        if limit.scope not in STATUS_SCOPES or (scope is not None and limit.scope != scope):
            continue
        if key is not None and limit.key not in (None, key):
            continue
        if unit is not None and unit not in limit.units:
            continue
        subjects = _subjects(ctx, limit, on, key=key, tenant=tenant, now=now)
        if subjects is None:
            continue
        if not subjects:
            note = _nobody(limit, on, key, tenant)
            if note not in notes:
                notes.append(note)
        for subject, owner in sorted(subjects, key=lambda s: (s[1] or "", s[0])):
            for counter in _counters_of(ctx.policy, book, limit, subject, owner):
                if unit is None or counter.unit == unit:
                    counters.setdefault(counter.key, (counter, owner))
    store = ctx.store()
    ordered = sorted(counters.values(), key=_row_order)
    statuses = [(store.status(counter), owner) for counter, owner in ordered]
    return statuses, notes


_UNIT_ORDER = ("usd", *UNIT_SUFFIXES)


def _row_order(item: tuple[Counter, str | None]) -> tuple[int, str, str, int, int]:
    """Scope by scope (global first), then tenant, subject, window, unit."""
    counter, owner = item
    window = WINDOWS.index(counter.window) if counter.window in WINDOWS else len(WINDOWS)
    unit = _UNIT_ORDER.index(counter.unit) if counter.unit in _UNIT_ORDER else len(_UNIT_ORDER)
    return STATUS_SCOPES.index(counter.scope), owner or "", counter.subject, window, unit
