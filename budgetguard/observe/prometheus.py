"""Prometheus metrics: a listener that counts every guarded call, and budget gauges.

``Prometheus(registry)`` is a listener (``bg.configure(listeners=[prom])``) and a
Prometheus collector registered in ``registry`` (default: prometheus_client's global
``REGISTRY``). On the request path it only appends the record to a queue; the
records are counted (integers added to a few dicts) when a scrape comes, or by a
counting thread once ``PENDING`` records wait. No prometheus_client object is touched
per call, and money is summed in integer nano-USD, so ``budgetguard_cost_usd_total``
never drifts however many calls it adds up. Dollars become floats only when a scrape
renders them.

On a scrape it also reads the store: spent / held / limit of every limit of the
policy with a fixed subject (global, a named feature, ...) and of every counter the
records it saw were checked against (bounded by ``max_budgets``). The store is the
fleet-wide truth; a store that fails the read gives ``budgetguard_store_up 0`` and
never fails the scrape.

Labels are bounded: feature, model, outcome, scope, token type. ``tenant`` and
``user`` (and the budget gauges of tenant and user limits) only when asked for
(``include_tenant=True``, ``include_user=True``): each distinct value is a time
series kept forever by Prometheus. Past ``max_series`` distinct label sets, new
ones are counted under ``"_overflow_"``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from .._core.counters import Counter, CounterStatus
from .._core.errors import ConfigurationError
from .._core.policy import Policy
from .._core.records import CallRecord
from .._core.usage import Usage
from ..stores.base import Store
from .prometheus_budgets import FIXED_SCOPES, book_of, budget_families, policy_counters, usd

__all__ = ["LATENCY_BUCKETS", "OVERFLOW", "Prometheus", "require_client"]

log = logging.getLogger("budgetguard.prometheus")

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0)
"""Upper bounds, in seconds, of the latency histogram: LLM calls take 0.1 s to minutes."""
OVERFLOW = "_overflow_"
"""The label value of every label set past ``max_series``."""
PENDING = 1024
"""Records queued before the counting thread counts them rather than wait for a scrape."""
MAX_PENDING = 256 * PENDING
"""Records waiting for the counting thread, at most: past it the oldest are dropped
(counted in ``listener_errors``) rather than memory growing without bound."""
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")
_PERSON_SCOPES = {"tenant": "include_tenant", "user": "include_user"}


def require_client() -> Any:
    """``prometheus_client.core``, or an ImportError naming the extra to install."""
    try:
        from prometheus_client import core
    except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
        raise ImportError(
            "budgetguard.observe.Prometheus needs prometheus-client: "
            "pip install 'budgetguard[prometheus]'"
        ) from exc
    return core


def _counts(usage: Usage) -> tuple[int, int, int, int, int]:
    """A usage's tokens in ``TOKEN_TYPES`` order."""
    return (
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    )


class _Tallies:
    """What the listener counts: ints keyed by label tuples, read on a scrape."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.lock = threading.Lock()
        self.pending: deque[CallRecord] = deque()
        self.wake = threading.Event()
        """Set by a call that finds ``PENDING`` records waiting: the counting thread runs."""
        self.counting: threading.Thread | None = None
        self.last_counters: tuple[Counter, ...] = ()
        self.dropped = 0
        """Records let go because ``MAX_PENDING`` were waiting (counting fell behind)."""
        self.buckets = buckets
        self.calls: dict[tuple[str, ...], int] = {}
        self.cost: dict[tuple[str, ...], int] = {}
        self.overrun: dict[tuple[str, ...], int] = {}
        self.tokens: dict[tuple[str, ...], list[int]] = {}
        """Per label set, the sums of each of ``TOKEN_TYPES``, in that order."""
        self.denials: dict[tuple[str, ...], int] = {}
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}
        self.series: set[tuple[str, ...]] = set()
        self.budgets: dict[str, Counter] = {}
        self.listener_errors = 0
        self.store_errors = 0


class _Registered:
    """The tallies and options of the listener first registered under a namespace."""

    def __init__(self, tallies: _Tallies, options: dict[str, Any]) -> None:
        self.tallies = tallies
        self.options = options


_REGISTERED: weakref.WeakKeyDictionary[Any, dict[str, _Registered]] = weakref.WeakKeyDictionary()
_REGISTERED_LOCK = threading.Lock()


class Prometheus:
    """A listener counting guarded calls for Prometheus, and a collector of budget gauges.

    ``registry``: a ``prometheus_client.CollectorRegistry`` (default: the global
    ``REGISTRY``). A second ``Prometheus`` with the same options on the same registry
    and namespace shares the first one's counts (re-configuring never crashes nor
    resets them); with other options it is refused (``ConfigurationError``).
    ``store`` / ``policy``: whose budgets the gauges show (default: the configured
    ones at scrape time); ``budgets=False``: no gauges, no store reads on a scrape.
    ``max_series``: distinct (feature, model[, tenant][, user]) label sets counted
    before new ones go to ``"_overflow_"``; ``max_budgets``: counters seen in records
    that the gauges follow.
    """

    def __init__(
        self,
        registry: Any = None,
        *,
        include_tenant: bool = False,
        include_user: bool = False,
        namespace: str = "budgetguard",
        store: Store | None = None,
        policy: Policy | None = None,
        budgets: bool = True,
        max_series: int = 10_000,
        max_budgets: int = 1_000,
        latency_buckets: Iterable[float] = LATENCY_BUCKETS,
    ) -> None:
        core = require_client()
        self._core = core
        if registry is None:
            registry = core.REGISTRY
        if not namespace or not namespace.replace("_", "a").isalnum() or namespace[0].isdigit():
            raise ConfigurationError(
                f"namespace: expected letters, digits and _, got {namespace!r}"
            )
        buckets = tuple(sorted(float(b) for b in latency_buckets if b != float("inf")))
        if max_series < 1 or max_budgets < 0:
            raise ConfigurationError("max_series: must be >= 1 (max_budgets: >= 0)")
        self.registry = registry
        self.namespace = namespace
        self.include_tenant = include_tenant
        self.include_user = include_user
        self.store = store
        self.policy = policy
        self.budgets = budgets
        self.max_series = max_series
        self.max_budgets = max_budgets
        self._scopes = frozenset(
            (*FIXED_SCOPES, *(s for s, opt in _PERSON_SCOPES.items() if getattr(self, opt)))
        )
        self._people = ["tenant"] * include_tenant + ["user"] * include_user
        options = {
            "include_tenant": include_tenant,
            "include_user": include_user,
            "latency_buckets": buckets,
            "max_series": max_series,
            "budgets": budgets,
            "max_budgets": max_budgets,
            "store": store,  # a second listener sharing the tallies reads no store of its own
            "policy": policy,
        }
        self._tallies = _Tallies(buckets)  # describe() reads it while registering
        self._tallies = self._register(options, self._tallies)

    def _register(self, options: dict[str, Any], tallies: _Tallies) -> _Tallies:
        with _REGISTERED_LOCK:
            by_namespace = _REGISTERED.setdefault(self.registry, {})
            earlier = by_namespace.get(self.namespace)
            if earlier is not None:
                if earlier.options != options:
                    changed = sorted(k for k in options if options[k] != earlier.options[k])
                    raise ConfigurationError(
                        f"registry: a Prometheus listener with other {', '.join(changed)} "
                        f"already registered the {self.namespace}_* metrics there; pass "
                        "another namespace= or registry=, or reuse that listener"
                    )
                return earlier.tallies
            try:
                self.registry.register(self)
            except ValueError as exc:
                raise ConfigurationError(
                    f"registry: cannot register the {self.namespace}_* metrics: {exc}"
                ) from None
            by_namespace[self.namespace] = _Registered(tallies, options)
            return tallies

    # -- request path ------------------------------------------------------------------
    def __call__(self, record: CallRecord) -> None:
        """Queue ``record``: one append, counted on the next scrape or, once ``PENDING``
        records wait, by a counting thread (never on the call: a backlog costs a
        millisecond); never raises, never waits for a lock."""
        t = self._tallies
        pending = t.pending
        pending.append(record)
        if len(pending) >= PENDING and not t.wake.is_set():
            self._wake_counting()

    def _wake_counting(self) -> None:
        t = self._tallies
        if len(t.pending) > MAX_PENDING:  # counting fell far behind: bounded memory
            for _ in range(len(t.pending) - MAX_PENDING):
                t.pending.popleft()
                t.dropped += 1
        if t.counting is None or not t.counting.is_alive():
            with _REGISTERED_LOCK:
                if t.counting is None or not t.counting.is_alive():
                    t.counting = threading.Thread(
                        target=self._count_when_woken, name="budgetguard-prometheus", daemon=True
                    )
                    t.counting.start()
        t.wake.set()

    def _count_when_woken(self) -> None:
        t = self._tallies
        while True:
            t.wake.wait()
            t.wake.clear()
            self._drain()

    def _drain(self) -> None:
        """Count every queued record into the tallies."""
        t = self._tallies
        with t.lock:
            while t.pending:
                record = t.pending.popleft()
                try:
                    self._count(record)
                except Exception:  # a listener must never fail the call
                    t.listener_errors += 1
                    log.exception("budgetguard: Prometheus listener failed on a record")

    def _count(self, record: CallRecord) -> None:
        t = self._tallies
        feature = record.feature or ""
        model = record.model or record.requested_model or ""
        base: tuple[str, ...] = (feature, model)
        if self._people:
            if self.include_tenant:
                base += (record.tenant or "",)
            if self.include_user:
                base += (record.user or "",)
        outcome = record.outcome
        usage = record.usage
        scopes = self._scopes
        if base not in t.series:
            if len(t.series) >= self.max_series:
                base = (OVERFLOW,) * len(base)
            t.series.add(base)
        key = (*base, outcome)
        t.calls[key] = t.calls.get(key, 0) + 1
        if record.cost:
            t.cost[base] = t.cost.get(base, 0) + record.cost
            if record.cost > record.estimate:
                t.overrun[base] = t.overrun.get(base, 0) + record.cost - record.estimate
        if usage is not None:
            sums = t.tokens.get(base)
            if sums is None:
                sums = t.tokens[base] = [0] * len(TOKEN_TYPES)
            for n, count in enumerate(_counts(usage)):
                sums[n] += count
        if outcome == "denied":
            refused = record.refused_by
            key = (refused.scope if refused is not None else "request", *base)
            t.denials[key] = t.denials.get(key, 0) + 1
        else:
            counts = t.latency.get(base[1])
            if counts is None:
                counts = t.latency[base[1]] = [0] * (len(t.buckets) + 1)
                t.latency_sum[base[1]] = 0.0
            counts[bisect_left(t.buckets, record.latency_s)] += 1
            t.latency_sum[base[1]] += record.latency_s
        if record.counters is t.last_counters:  # the engine reuses a plan's counters
            return
        t.last_counters = record.counters
        budgets = t.budgets
        for counter in record.counters:
            if (
                budgets.get(counter.key) is not counter
                and counter.scope in scopes
                and (counter.key in budgets or len(budgets) < self.max_budgets)
            ):
                budgets[counter.key] = counter

    # -- scrape ------------------------------------------------------------------------
    def describe(self) -> list[Any]:
        """The metric families without samples: lets the registry check names without
        reading the store."""
        return list(self._families(with_samples=False))

    def collect(self) -> list[Any]:
        """Every metric family, read now (the budgets from the store)."""
        return list(self._families(with_samples=True))

    def _families(self, *, with_samples: bool) -> Iterator[Any]:
        core, ns, t = self._core, self.namespace, self._tallies
        base = ["feature", "model", *self._people]
        calls = core.CounterMetricFamily(
            f"{ns}_calls", "Guarded LLM calls, by outcome", labels=[*base, "outcome"]
        )
        cost = core.CounterMetricFamily(
            f"{ns}_cost_usd", "Dollars charged (summed exactly in nano-USD)", labels=base
        )
        overrun = core.CounterMetricFamily(
            f"{ns}_overrun_usd", "Dollars billed above the calls' reservations", labels=base
        )
        tokens = core.CounterMetricFamily(
            f"{ns}_tokens", "Tokens used, by type", labels=[*base, "type"]
        )
        denials = core.CounterMetricFamily(
            f"{ns}_denials", "Calls refused, by the scope of the limit", labels=["scope", *base]
        )
        latency = core.HistogramMetricFamily(
            f"{ns}_call_latency_seconds", "Latency of guarded calls made", labels=["model"]
        )
        errors = core.CounterMetricFamily(
            f"{ns}_listener_errors", "Records the Prometheus listener failed to count"
        )
        if with_samples:
            self._drain()
            with t.lock:
                snapshot = (
                    dict(t.calls),
                    dict(t.cost),
                    dict(t.overrun),
                    {
                        (*base, kind): n
                        for base, sums in t.tokens.items()
                        for kind, n in zip(TOKEN_TYPES, sums, strict=True)
                        if n
                    },
                    dict(t.denials),
                    {m: list(c) for m, c in t.latency.items()},
                    dict(t.latency_sum),
                )
            n_calls, n_cost, n_overrun, n_tokens, n_denials, n_latency, n_sum = snapshot
            for key, n in n_calls.items():
                calls.add_metric(key, n)
            for key, nanos in n_cost.items():
                cost.add_metric(key, usd(nanos))
            for key, nanos in n_overrun.items():
                overrun.add_metric(key, usd(nanos))
            for key, n in n_tokens.items():
                tokens.add_metric(key, n)
            for key, n in n_denials.items():
                denials.add_metric(key, n)
            for model, counts in n_latency.items():
                cumulative, total = [], 0
                for bound, count in zip((*t.buckets, float("inf")), counts, strict=True):
                    total += count
                    cumulative.append(("+Inf" if bound == float("inf") else repr(bound), total))
                latency.add_metric([model], cumulative, n_sum[model])
            errors.add_metric([], t.listener_errors + t.dropped)
        yield from (calls, cost, overrun, tokens, denials, latency, errors)
        if self.budgets:
            yield from self._budget_families(with_samples=with_samples)

    def _budget_families(self, *, with_samples: bool) -> Iterator[Any]:
        core, ns, t = self._core, self.namespace, self._tallies
        up = core.GaugeMetricFamily(
            f"{ns}_store_up", "1 if the last scrape read the budgets from the store, else 0"
        )
        failures = core.CounterMetricFamily(
            f"{ns}_store_errors", "Scrapes whose read of the budgets from the store failed"
        )
        if not with_samples:
            yield from (up, failures)
            return
        try:
            statuses = self._statuses()
        except Exception as exc:  # a failing store must not fail the scrape
            t.store_errors += 1
            log.warning("budgetguard: Prometheus scrape could not read the store: %r", exc)
            statuses = None
        up.add_metric([], 0.0 if statuses is None else 1.0)
        failures.add_metric([], t.store_errors)
        yield from (up, failures)
        if statuses:
            yield from budget_families(core, ns, statuses)

    def _statuses(self) -> list[CounterStatus]:
        store, policy = self.store, self.policy
        if store is None or policy is None:
            from .._engine.config import current

            settings = current()
            store = store if store is not None else settings.store
            policy = policy if policy is not None else settings.policy
        if store is None:
            return []
        with self._tallies.lock:
            counters = dict(self._tallies.budgets)
        for counter in policy_counters(policy, book_of(store), self._scopes):
            counters.setdefault(counter.key, counter)
        return [store.status(c) for _, c in sorted(counters.items())]
