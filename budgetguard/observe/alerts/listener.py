"""Alerts: tell people in time - before the budget is gone, not on the invoice.

``Alerts`` is a listener (``bg.configure(listeners=[alerts])``). On the request
path it only puts the ``CallRecord`` on a bounded queue; a background thread
evaluates the rules and hands each ``Alert`` to the sinks:

- ``Threshold`` (``Policy.alerts``, or given here): a counter's spend crossed
  ``fraction`` of its limit. Each fires once per counter, window and fraction,
  across every process: the claim is one atomic ``SET NX`` in Redis (or an
  in-process set with ``MemoryStore``).
- ``RequestCost(usd)``: one call cost more than ``usd``.
- a soft limit (``enforce="warn"``) passed: once per counter and window, like a
  threshold, so a shadow-run limit tells people what it would have refused.
- ``Spike(factor)``: the last hour's spend is ``factor`` times the trailing
  7-day hourly average (history kept in Redis, so it covers the whole fleet);
  ``Spike(factor, scope="tenant"|"user"|"feature")`` per tenant, user, feature.
- ``CostPerCall(ratio)``: a feature's average cost per call jumped; ``Digest()``:
  yesterday's spend once a day (``history``, ``anomaly``, ``digest``).

Sinks: ``LogSink`` (default), any callable taking an ``Alert``, and
``Webhook`` (Slack-compatible JSON), which has its own queue and thread, a
timeout and bounded retries: a slow or dead endpoint delays nothing but
itself, and never an LLM call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any

from ..._core.counters import Counter, CounterStatus, soft_limit
from ..._core.errors import ConfigurationError
from ..._core.money import format_usd, nanos_to_usd, usd_to_nanos
from ..._core.policy import Policy, Threshold
from ..._core.records import CallRecord
from ...stores.base import Store
from ..background import Worker
from .history import History
from .messages import (
    exhausted_alert,
    request_alert,
    soft_alert,
    soft_cap_alert,
    threshold_alert,
)
from .model import Alert, AlertRule, CostPerCall, Digest, RequestCost, Spike
from .model import Once as _Once
from .sinks import AlertSink, LogSink, Webhook
from .state import (
    HISTORY_SLOTS,
    HOUR_SLOTS,
    SLOT_S,
    AlertState,
    MemoryAlertState,
    RedisAlertState,
    state_from,
)

__all__ = ["Alerts"]

log = logging.getLogger("budgetguard.alerts")


CLAIM_S = 120.0
"""How long a claimed alert stays claimed while it is being delivered."""
RETRIES = 8
"""Deliveries tried for an alert that must reach people (thresholds, exhaustion, spikes)."""


class _Tick:
    """Wakes the alert thread: a retry has come due, the timer ticked, or ``check()``
    (``force``: check the history rules whatever their ``check_every_s``)."""

    __slots__ = ("force",)

    def __init__(self, force: bool = False) -> None:
        self.force = force


@dataclass
class _Runtime:
    """What the alert thread resolved once per store: the store and its shared state."""

    store: Store | None
    state: AlertState
    store_id: int = 0
    last_spike_check: float = field(default=float("-inf"))


class Alerts:
    """A listener that turns ``CallRecord``s into ``Alert``s for the ``sinks``.

    ``rules``: ``RequestCost``, ``Spike`` (one per scope), ``CostPerCall``,
    ``Digest`` and extra ``Threshold``s (the policy's ``alerts`` thresholds are
    always used). With a ``Digest``, a timer thread calls ``check()`` every
    ``Digest.check_every_s``, so the digest goes out on an idle process too. A ``Threshold`` with no
    scope applies to every counter but run counters (``scope="run"`` for
    those). ``exhausted``: alert once per counter and window when a call is
    refused (the budget is gone, whatever threshold spend stopped short of).
    Thresholds, exhaustion and spikes are delivered at least once across the
    fleet: claimed, handed to every sink (a ``Webhook`` delivers them at once,
    ahead of its queue of per-call alerts), then confirmed, or released and
    retried with backoff (``retry_base_s`` doubling, up to 8 tries) when a sink
    fails. ``store``: whose counters to read
    (default: the configured store, at the time of the call). ``state``: where markers and spend
    history live: a ``MemoryAlertState`` / ``RedisAlertState``, a redis
    client or URL; default: the store's Redis (``RedisStore.client``) or
    process memory for a ``MemoryStore``. ``policy``: default the configured one.
    """

    def __init__(
        self,
        *,
        rules: Iterable[AlertRule] = (),
        sinks: Iterable[AlertSink] = (),
        store: Store | None = None,
        state: AlertState | Any | None = None,
        policy: Policy | None = None,
        max_queue: int = 10_000,
        clock: Callable[[], float] = time.time,
        exhausted: bool = True,
        retry_base_s: float = 0.5,
    ) -> None:
        rules = tuple(rules)
        for n, rule in enumerate(rules):
            if not isinstance(rule, Threshold | RequestCost | Spike | CostPerCall | Digest):
                raise ConfigurationError(
                    f"rules[{n}]: expected Threshold, RequestCost, Spike, CostPerCall or "
                    f"Digest, got {rule!r}"
                )
        self.thresholds = tuple(r for r in rules if isinstance(r, Threshold))
        self.request_costs = tuple(r for r in rules if isinstance(r, RequestCost))
        spikes = [r for r in rules if isinstance(r, Spike) and r.scope is None]
        if len(spikes) > 1:
            raise ConfigurationError("rules: at most one Spike rule per scope")
        self.spike = spikes[0] if spikes else None
        self._history = History(
            [
                r
                for r in rules
                if isinstance(r, CostPerCall | Digest) or (isinstance(r, Spike) and r.scope)
            ]
        )
        self.sinks: tuple[AlertSink, ...] = tuple(sinks) or (LogSink(),)
        for n, sink in enumerate(self.sinks):
            if not callable(sink):
                raise ConfigurationError(f"sinks[{n}]: expected a callable, got {sink!r}")
        self.store = store
        self.policy = policy
        self.clock = clock
        self._state = state_from(state)
        self._runtime: _Runtime | None = None
        self._current_policy = policy if policy is not None else Policy()
        self.exhausted = exhausted
        self.retry_base_s = retry_base_s
        self.fired = 0
        self.failed = 0
        self._retries: list[_Once] = []
        self._worker: Worker[CallRecord | _Tick] = Worker(
            "budgetguard-alerts", self._handle, max_queue
        )
        self._history.start_ticker(self._tick)

    # -- request path ------------------------------------------------------------------
    def __call__(self, record: CallRecord) -> None:
        """Queue the record for evaluation; never blocks, never does I/O."""
        self._worker.put(record)
        self._history.start_ticker(self._tick)  # a no-op unless a fork lost the timer

    def check(self) -> None:
        """Check the history rules now (``Digest``, ``CostPerCall``, spikes per scope),
        on the alert thread, whatever their ``check_every_s``; a timer checks a
        ``Digest`` every ``check_every_s`` anyway."""
        self._worker.put(_Tick(force=True))

    def _tick(self) -> None:
        self._worker.put(_Tick())

    @property
    def dropped(self) -> int:
        return self._worker.dropped

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until the records queued so far are evaluated and handed to the sinks
        (a ``Webhook`` delivers on its own thread: flush it too to wait for delivery)."""
        return self._worker.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        self._history.stop()
        self._worker.close(timeout)
        for sink in self.sinks:
            if isinstance(sink, Webhook):
                sink.close(timeout)

    def __enter__(self) -> Alerts:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the alert thread ----------------------------------------------------------------
    def _resolve(self) -> _Runtime:
        store = self.store
        policy = self.policy
        if store is None or policy is None:
            from ..._engine.config import current

            settings = current()
            store = store if store is not None else settings.store
            if policy is None:
                policy = settings.policy
        runtime = self._runtime
        if runtime is None or runtime.store_id != id(store):
            state = self._state
            if state is None:
                client = getattr(store, "client", None)
                state = (
                    RedisAlertState(client, prefix=getattr(store, "prefix", "bg"))
                    if client is not None
                    else MemoryAlertState(self.clock)
                )
            runtime = _Runtime(store, state, id(store))
            if self._runtime is not None:
                runtime.last_spike_check = self._runtime.last_spike_check
            self._runtime = runtime
        self._current_policy = policy
        return runtime

    def _handle(self, items: list[CallRecord | _Tick]) -> None:
        runtime = self._resolve()
        records = [item for item in items if isinstance(item, CallRecord)]
        for rule in self.request_costs:  # per call, not deduplicated: handed over, no retry
            limit = rule.nanos
            for record in records:
                if record.cost > limit:
                    self._dispatch(request_alert(record, limit), at_once=False)
        once: list[_Once] = []
        charged = [r for r in records if r.cost > 0]
        if charged:
            once += self._thresholds(runtime, charged)
            if self.spike is not None:
                once += self._spike(runtime, self.spike, charged)
        force = any(isinstance(item, _Tick) and item.force for item in items)
        once += self._history.evaluate(
            runtime.state, charged, self.clock(), self._current_policy, CLAIM_S, force=force
        )
        if self.exhausted:
            once += self._exhaustion(runtime, [r for r in records if r.refused_by is not None])
        once += self._soft(runtime, [r for r in records if r.over_soft])
        now = time.monotonic()
        due = [retry for retry in self._retries if retry.due <= now]
        self._retries = [retry for retry in self._retries if retry.due > now]
        for item in [*due, *once]:
            self._deliver_once(runtime, item)

    def _dispatch(self, alert: Alert, *, at_once: bool = True) -> bool:
        """Hand ``alert`` to every sink; False if any of them failed. ``at_once``: a
        webhook delivers it now (else it joins the webhook's queue)."""
        self.fired += 1
        delivered = True
        for sink in self.sinks:
            try:
                if at_once and isinstance(sink, Webhook):
                    delivered = sink.deliver(alert) and delivered
                else:
                    sink(alert)
            except Exception:
                delivered = False
                log.exception("budgetguard: alert sink %r failed", sink)
        return delivered

    def _deliver_once(self, runtime: _Runtime, item: _Once) -> None:
        """Claim, deliver, confirm - or release and retry later (at least once)."""
        state = runtime.state
        try:
            if not item.claimed and not state.claim(item.tag, item.marker, CLAIM_S):
                return  # delivered already, or being delivered by another process
            item.claimed = False  # a retry claims again
        except Exception as exc:
            log.error("budgetguard: alert dedupe unavailable (%r); retrying", exc)
            self._retry(item)
            return
        if self._dispatch(item.alert):
            try:
                state.confirm(item.tag, item.marker, item.expires_at)
            except Exception as exc:  # the claim lapses after CLAIM_S: a duplicate at worst
                log.error("budgetguard: could not confirm alert %s (%r)", item.marker, exc)
            return
        try:
            state.release(item.tag, item.marker)
        except Exception as exc:
            log.error("budgetguard: could not release alert %s (%r)", item.marker, exc)
        self._retry(item)

    def _retry(self, item: _Once) -> None:
        item.attempt += 1
        if item.attempt >= RETRIES:
            self.failed += 1
            log.error(
                "budgetguard: giving up alert after %d attempts: %s",
                item.attempt,
                item.alert.message,
            )
            return
        delay = min(300.0, self.retry_base_s * 2 ** (item.attempt - 1))
        item.due = time.monotonic() + delay
        self._retries.append(item)
        timer = threading.Timer(delay, self._worker.put, args=(_Tick(),))
        timer.daemon = True
        timer.start()

    def _thresholds(self, runtime: _Runtime, records: list[CallRecord]) -> list[_Once]:
        thresholds = tuple(self._current_policy.alerts) + self.thresholds
        if not thresholds or runtime.store is None:
            return []
        counters: dict[str, Counter] = {}
        for record in records:
            for counter in record.counters:
                counters.setdefault(counter.key, counter)
        alerts: list[_Once] = []
        for counter in counters.values():
            applicable = sorted(
                {t.fraction for t in thresholds if _applies(t, counter)},
            )
            if not applicable or counter.limit <= 0:
                continue
            try:
                status = runtime.store.status(counter)
            except Exception as exc:
                log.error("budgetguard: alerts could not read %s: %r", counter.key, exc)
                continue
            for fraction in applicable:
                if Decimal(status.spent) < fraction * counter.limit:
                    break
                marker = f"{counter.key}:{status.window_start}:{fraction.normalize():f}"
                alert = threshold_alert(status, fraction, self.clock())
                alerts.append(_Once(alert, counter.tag, marker, status.resets_at))
        return alerts

    def _exhaustion(self, runtime: _Runtime, refused: list[CallRecord]) -> list[_Once]:
        """One "exhausted" alert per counter and window that refused a call."""
        counters: dict[str, Counter] = {}
        for record in refused:
            counter = record.refused_by
            if counter is not None and counter.scope not in ("run", "request"):
                counters.setdefault(counter.key, counter)
        return self._per_window(runtime, counters, "exhausted", exhausted_alert)

    def _soft(self, runtime: _Runtime, passed: list[CallRecord]) -> list[_Once]:
        """One "over_soft_limit" alert per soft counter and window a call passed over; a
        soft per-request cap has no window: one alert per call."""
        counters: dict[str, Counter] = {}
        for record in passed:
            for counter in record.over_soft:
                if counter.scope == "request":
                    self._dispatch(soft_cap_alert(record, counter), at_once=False)
                else:
                    counters.setdefault(counter.key, counter)
        # A call is over a soft limit by its worst case; people hear of it once the
        # spend itself passes the limit (the first call over it by its hold alone may
        # settle below, and must not use up the window's one alert).
        return self._per_window(runtime, counters, "soft", soft_alert, _spent_over_soft)

    def _per_window(
        self,
        runtime: _Runtime,
        counters: dict[str, Counter],
        kind: str,
        build: Callable[[CounterStatus, float], Alert],
        due: Callable[[CounterStatus], bool] | None = None,
    ) -> list[_Once]:
        """An alert per counter and window, built from the counter's status now (when it
        is ``due``)."""
        if runtime.store is None:
            return []
        alerts: list[_Once] = []
        for counter in counters.values():
            try:
                status = runtime.store.status(counter)
            except Exception as exc:
                log.error("budgetguard: alerts could not read %s: %r", counter.key, exc)
                continue
            if due is not None and not due(status):
                continue
            marker = f"{counter.key}:{status.window_start}:{kind}"
            alerts.append(_Once(build(status, self.clock()), counter.tag, marker, status.resets_at))
        return alerts

    def _spike(self, runtime: _Runtime, rule: Spike, records: list[CallRecord]) -> list[_Once]:
        amounts: dict[int, int] = {}
        for record in records:
            slot = int(record.at) // SLOT_S * SLOT_S
            amounts[slot] = amounts.get(slot, 0) + record.cost
        now = self.clock()
        try:
            runtime.state.add_spend(amounts)
            if now - runtime.last_spike_check < rule.check_every_s:
                return []
            runtime.last_spike_check = now
            current = int(now) // SLOT_S * SLOT_S
            slots = [current - n * SLOT_S for n in range(HOUR_SLOTS + HISTORY_SLOTS)]
            spend = runtime.state.spend(slots)
        except Exception as exc:
            log.error("budgetguard: spike history unavailable (%r)", exc)
            return []
        last_hour = sum(spend[:HOUR_SLOTS])
        baseline = Decimal(sum(spend[HOUR_SLOTS:])) / (7 * 24)
        factor = Decimal(str(rule.factor))
        if (
            last_hour <= 0
            or last_hour < usd_to_nanos(rule.min_usd)
            or last_hour < factor * baseline
        ):
            return []
        hour = int(now) // 3600 * 3600
        ratio = "no history" if baseline == 0 else f"{Decimal(last_hour) / baseline:.1f}x"
        average = int(baseline)
        alert = Alert(
            kind="spike",
            message=(
                f"budgetguard: spend spike: {format_usd(last_hour)} in the last hour, "
                f"{ratio} the 7-day hourly average ({format_usd(average)})"
            ),
            at=datetime.fromtimestamp(now, UTC),
            amount=nanos_to_usd(last_hour),
            baseline=nanos_to_usd(average),
            fraction=factor,
        )
        return [_Once(alert, "spike", f"spike:{hour}", hour + 3600)]


def _spent_over_soft(status: CounterStatus) -> bool:
    limit = soft_limit(status.counter)
    return limit is not None and status.spent > limit


def _applies(threshold: Threshold, counter: Counter) -> bool:
    if threshold.scope is None:
        return counter.scope != "run"
    return threshold.scope == counter.scope
