"""Which counters exist in a store, and the status rows of the configured limits."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .._core.attribution import Attribution
from .._core.counters import Counter, CounterStatus
from .._core.plan import escape, plan_counters
from .._core.policy import Limit, Policy
from .._core.windows import window_span
from ..stores.base import Store
from ..stores.memory import MemoryStore
from .context import CliError, Context

if TYPE_CHECKING:
    from ..stores.redis import RedisStore

__all__ = ["STATUS_SCOPES", "counter_pattern", "glob_escape", "parse_counter_key", "status_rows"]

STATUS_SCOPES = ("global", "tenant", "user", "feature", "model")


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


@dataclass(frozen=True, slots=True)
class _Found:
    """A counter seen in the store: its attribution and bucket start."""

    scope: str
    subject: str
    tenant: str | None
    window: str
    start: int


def parse_counter_key(counter_key: str) -> tuple[str, str, str | None, str] | None:
    """``tenant=acme/user=u-1:day`` -> (scope, subject, tenant, window)."""
    base, sep, window = counter_key.rpartition(":")
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


def _redis_found(store: RedisStore, pattern: str) -> Iterator[_Found]:
    marker = ":c:"
    for raw in store.client.scan_iter(match=pattern, count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        at = key.find("}" + marker)
        if at < 0:
            continue
        counter_key, _, start = key[at + 1 + len(marker) :].rpartition(":")
        parsed = parse_counter_key(counter_key)
        if parsed is None or not start.lstrip("-").isdigit():
            continue
        yield _Found(*parsed, int(start))


def _memory_found(store: MemoryStore) -> Iterator[_Found]:
    buckets: Mapping[tuple[str, int], Any] = getattr(store, "_buckets", {})
    for counter_key, start in list(buckets):
        parsed = parse_counter_key(counter_key)
        if parsed is not None:
            yield _Found(*parsed, start)


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


def _counter_of(policy: Policy, limit: Limit, subject: str, tenant: str | None) -> Counter:
    who = Attribution(
        tenant=subject if limit.scope == "tenant" else tenant,
        user=subject if limit.scope == "user" else None,
        feature=subject if limit.scope == "feature" else None,
    )
    single = policy.model_copy(update={"limits": (limit,)})
    counters = plan_counters(single, (), who, subject if limit.scope == "model" else None)
    return counters[0]


def _subjects(
    ctx: Context, limit: Limit, key: str | None, tenant: str | None, now: float
) -> set[tuple[str, str | None]]:
    """(subject, tenant) of every counter of ``limit`` to show."""
    scope, window = limit.scope, limit.resolved_window
    want = key if key is not None else limit.key
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
    if not subjects and want is not None:
        subjects = {(want, tenant)}
    return subjects


def status_rows(
    ctx: Context, scope: str | None, key: str | None, tenant: str | None
) -> tuple[list[tuple[CounterStatus, str | None]], list[str]]:
    notes: list[str] = []
    counters: dict[str, tuple[Counter, str | None]] = {}
    now = time.time()
    for limit in ctx.policy.limits:
        if limit.scope not in STATUS_SCOPES or (scope is not None and limit.scope != scope):
            continue
        if key is not None and limit.key not in (None, key):
            continue
        subjects = _subjects(ctx, limit, key, tenant, now)
        if not subjects:
            what = limit.scope if limit.key is None else f"{limit.scope} {limit.key!r}"
            notes.append(f"no {what} has spent in the current {limit.resolved_window} yet")
        for subject, owner in sorted(subjects, key=lambda s: (s[1] or "", s[0])):
            counter = _counter_of(ctx.policy, limit, subject, owner)
            known = counters.get(counter.key)
            if known is None or counter.limit < known[0].limit:
                counters[counter.key] = (counter, owner)
    store = ctx.store()
    statuses = [(store.status(counter), owner) for counter, owner in counters.values()]
    return statuses, notes
