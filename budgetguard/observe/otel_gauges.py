"""Spent / held / limit gauges for the limits guarded calls were checked against.

A call's ``CallRecord.counters`` name the limits it touched; the listener remembers
them (at most ``max_limits``, so a million users cannot become a million time series)
and, when the metric reader collects, reads each one's current window from the store
- the same read as ``bg.status`` - once per collection for all three gauges. The
store read happens on the reader's thread, never on a call's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from .._core.counters import Counter, CounterStatus
from .._core.errors import ConfigurationError
from .._core.plan import user_tenant
from . import otel_names as n

__all__ = ["LimitGauges"]

log = logging.getLogger("budgetguard.otel")

SNAPSHOT_S = 1.0
"""How long one read of the counters serves the gauges (a collection reads all three)."""

_NEVER = frozenset({"run", "request"})  # no shared counter to read


class LimitGauges:
    """``budgetguard.limit.spent`` / ``.held`` / ``.limit``, one series per limit seen.

    Values are USD (floats, at this edge only) for dollar limits and counts for token
    and request limits; ``budgetguard.limit.unit`` says which. Tenant and user limits
    are followed only when the listener may show tenants / users.
    """

    def __init__(
        self,
        meter: Any,
        *,
        include_tenant: bool,
        include_user: bool,
        max_limits: int,
        store: Any = None,
    ) -> None:
        if max_limits < 0:
            raise ConfigurationError(f"max_limits: must be >= 0, got {max_limits}")
        self.max_limits = max_limits
        self.store = store
        hidden = set(_NEVER)
        if not include_tenant:
            hidden.add("tenant")
        if not (include_user and include_tenant):
            # Users are counted within their tenant: without the tenant attribute, the
            # same user id of two tenants would be one series, and one of them lost.
            hidden.add("user")
        self._hidden = frozenset(hidden)
        self._include_tenant = include_tenant
        self._seen: dict[str, Counter] = {}
        self._lock = threading.Lock()
        self._snapshot: list[tuple[dict[str, str], CounterStatus]] = []
        self._read_at = float("-inf")
        meter.create_observable_gauge(
            "budgetguard.limit.spent",
            callbacks=[self._spent],
            description="Settled spend in the limit's current window",
        )
        meter.create_observable_gauge(
            "budgetguard.limit.held",
            callbacks=[self._held],
            description="Held by calls in flight in the limit's current window",
        )
        meter.create_observable_gauge(
            "budgetguard.limit.limit",
            callbacks=[self._limit],
            description="The limit itself",
        )

    def saw(self, counters: Iterable[Counter]) -> None:
        """Remember the counters a call touched (request path: a dict look-up each)."""
        seen = self._seen
        for counter in counters:
            if seen.get(counter.key) is counter or counter.scope in self._hidden:
                continue
            with self._lock:
                if counter.key not in seen and len(seen) >= self.max_limits:
                    if not self.max_limits:
                        return
                    del seen[next(iter(seen))]  # the one followed longest
                seen[counter.key] = counter

    def followed(self) -> list[Counter]:
        """The counters the gauges report."""
        return list(self._seen.values())

    # -- the reader's side -----------------------------------------------------------------
    def statuses(self) -> list[tuple[dict[str, str], CounterStatus]]:
        """(attributes, status) per followed counter, read at most once per SNAPSHOT_S."""
        now = time.monotonic()
        if now - self._read_at < SNAPSHOT_S:
            return self._snapshot
        store = self.store
        if store is None:
            from .._engine.config import current

            store = current().store
        snapshot: list[tuple[dict[str, str], CounterStatus]] = []
        if store is not None:
            shown: set[tuple[str, ...]] = set()
            for counter in self.followed():
                attrs = self._attributes(counter)
                identity = tuple(attrs.values())
                if identity in shown:  # same user id in two tenants, tenants hidden
                    continue
                try:
                    status = store.status(counter)
                except Exception as error:  # a store down: no gauges this time, no exception
                    log.warning(
                        "budgetguard: reading %s for the gauges failed: %s", counter.key, error
                    )
                    continue
                shown.add(identity)
                snapshot.append((attrs, status))
        self._snapshot = snapshot
        self._read_at = now
        return snapshot

    def _attributes(self, counter: Counter) -> dict[str, str]:
        attrs = {
            n.LIMIT_SCOPE: counter.scope,
            n.LIMIT_WINDOW: counter.window,
            n.LIMIT_UNIT: counter.unit,
        }
        if counter.scope != "global":
            attrs[n.LIMIT_KEY] = counter.subject
        tenant = user_tenant(counter) if self._include_tenant else None
        if tenant is not None:
            attrs[n.TENANT] = tenant
        return attrs

    def _observe(self, pick: str) -> list[Any]:
        from opentelemetry.metrics import Observation

        out = []
        for attrs, status in self.statuses():
            counter = status.counter
            raw = counter.limit if pick == "limit" else getattr(status, pick)
            value: float | int = raw / 1e9 if counter.unit == "usd" else raw
            out.append(Observation(value, attrs))
        return out

    def _spent(self, _options: Any) -> list[Any]:
        return self._observe("spent")

    def _held(self, _options: Any) -> list[Any]:
        return self._observe("held")

    def _limit(self, _options: Any) -> list[Any]:
        return self._observe("limit")
