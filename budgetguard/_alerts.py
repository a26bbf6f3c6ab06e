"""Alerts: tell people in time - before the budget is gone, not on the invoice.

``Alerts`` is a listener (``bg.configure(listeners=[alerts])``). On the request
path it only puts the ``CallRecord`` on a bounded queue; a background thread
evaluates the rules and hands each ``Alert`` to the sinks:

- ``Threshold`` (``Policy.alerts``, or given here): a counter's spend crossed
  ``fraction`` of its limit. Each fires once per counter, window and fraction,
  across every process: the claim is one atomic ``SET NX`` in Redis (or an
  in-process set with ``MemoryStore``).
- ``RequestCost(usd)``: one call cost more than ``usd``.
- ``Spike(factor)``: the last hour's spend is ``factor`` times the trailing
  7-day hourly average (history kept in Redis, so it covers the whole fleet).

Sinks: ``LogSink`` (default), any callable taking an ``Alert``, and
``Webhook`` (Slack-compatible JSON), which has its own queue and thread, a
timeout and bounded retries: a slow or dead endpoint delays nothing but
itself, and never an LLM call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import unquote

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from ._background import Worker
from ._errors import ConfigurationError
from ._money import UsdLike, format_usd, nanos_to_usd, usd_to_nanos
from ._policy import Policy, Threshold
from .stores._base import Counter, CounterStatus, Store

if TYPE_CHECKING:
    from ._engine import CallRecord

__all__ = [
    "Alert",
    "AlertKind",
    "AlertRule",
    "AlertSink",
    "AlertState",
    "Alerts",
    "LogSink",
    "MemoryAlertState",
    "RedisAlertState",
    "RequestCost",
    "Spike",
    "Webhook",
]

log = logging.getLogger("budgetguard.alerts")

AlertKind = Literal["threshold", "request_cost", "spike"]

_SLOT_S = 300
"""Spend history granularity for spike detection: 5-minute slots."""
_HOUR_SLOTS = 3600 // _SLOT_S
_WEEK_SLOTS = 7 * 24 * _HOUR_SLOTS
_HISTORY_TTL_S = 8 * 86_400
_MARKER_GRACE_S = 3600
"""How long a dedupe marker outlives its window (a late status read must not re-fire)."""


# -- what an alert says ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert, as every sink receives it. Amounts are exact ``Decimal`` USD.

    ``threshold``: ``scope``/``key``/``window`` name the counter, ``fraction``
    the threshold crossed, ``amount`` its spend, ``limit`` its limit.
    ``request_cost``: ``amount`` is the call's cost, ``limit`` the rule's
    threshold, attribution fields name the call. ``spike``: ``amount`` is the
    last hour's spend, ``baseline`` the trailing 7-day hourly average.
    """

    kind: AlertKind
    message: str
    at: datetime
    amount: Decimal
    limit: Decimal | None = None
    fraction: Decimal | None = None
    baseline: Decimal | None = None
    scope: str | None = None
    key: str | None = None
    window: str | None = None
    resets_at: datetime | None = None
    tenant: str | None = None
    user: str | None = None
    feature: str | None = None
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: amounts as decimal strings, times as ISO 8601."""
        return {name: _plain(value) for name, value in asdict(self).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# -- rules -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestCost:
    """Alert when one call costs more than ``usd``."""

    usd: UsdLike

    @property
    def nanos(self) -> int:
        return usd_to_nanos(self.usd, field="RequestCost.usd")


@dataclass(frozen=True, slots=True)
class Spike:
    """Alert when the last hour's spend is ``factor`` x the trailing 7-day hourly average.

    ``min_usd``: never alert below this much spend in the hour (a quiet
    system doubling from 2 cents is not news). Without history the average
    is 0, so the first hour above ``min_usd`` alerts. Checked at most every
    ``check_every_s`` per process; fires at most once per hour, fleet-wide.
    """

    factor: float | Decimal = 3
    min_usd: UsdLike = 1
    check_every_s: float = 60.0

    def __post_init__(self) -> None:
        if Decimal(str(self.factor)) <= 1:
            raise ConfigurationError(f"Spike.factor: must be > 1, got {self.factor!r}")
        if usd_to_nanos(self.min_usd, field="Spike.min_usd") < 0:
            raise ConfigurationError(f"Spike.min_usd: must be >= 0, got {self.min_usd!r}")


AlertRule = Threshold | RequestCost | Spike


# -- sinks -------------------------------------------------------------------------


AlertSink = Callable[[Alert], None]


@dataclass(frozen=True)
class LogSink:
    """Logs each alert (default: ``budgetguard.alerts`` at WARNING)."""

    logger: str = "budgetguard.alerts"
    level: int = logging.WARNING

    def __call__(self, alert: Alert) -> None:
        logging.getLogger(self.logger).log(
            self.level, "budgetguard alert: %s", alert.message, extra={"alert": alert.to_dict()}
        )


class Webhook:
    """POST each alert as JSON to ``url``, off the request path and off the alert thread.

    ``format="slack"`` sends ``{"text": message}`` (Slack, Mattermost and
    Discord-compatible incoming webhooks); ``"json"`` adds every field of the
    alert. Each POST has a ``timeout``; connection errors, timeouts, 429 and
    5xx are retried ``retries`` times with jittered backoff, within
    ``max_total_s``. Other 4xx are not retried. Counts: ``sent``, ``failed``,
    ``dropped`` (queue full).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        retries: int = 3,
        max_total_s: float = 30.0,
        format: Literal["slack", "json"] = "slack",
        headers: Mapping[str, str] | None = None,
        max_queue: int = 1000,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"url: expected an http(s) URL, got {url!r}")
        if timeout <= 0 or retries < 0 or max_total_s <= 0:
            raise ConfigurationError("timeout / retries / max_total_s: must be positive")
        if format not in ("slack", "json"):
            raise ConfigurationError(f"format: expected 'slack' or 'json', got {format!r}")
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.max_total_s = max_total_s
        self.format = format
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.sent = 0
        self.failed = 0
        self._worker: Worker[Alert] = Worker("budgetguard-webhook", self._send_all, max_queue)

    def __call__(self, alert: Alert) -> None:
        self._worker.put(alert)

    @property
    def dropped(self) -> int:
        return self._worker.dropped

    def payload(self, alert: Alert) -> dict[str, Any]:
        if self.format == "slack":
            return {"text": alert.message}
        return {"text": alert.message, **alert.to_dict()}

    def _send_all(self, alerts: list[Alert]) -> None:
        for n, alert in enumerate(alerts):
            if self._worker.abort.is_set():
                log.error(
                    "budgetguard: webhook %s closed with %d alerts unsent",
                    self._where,
                    len(alerts) - n,
                )
                self.failed += len(alerts) - n
                return
            try:
                self._send(alert)
            except Exception as exc:
                self.failed += 1
                log.error("budgetguard: webhook %s failed for %r: %r", self._where, alert.kind, exc)
            else:
                self.sent += 1

    @property
    def _where(self) -> str:
        return self.url.split("?", 1)[0]

    def _send(self, alert: Alert) -> None:
        body = json.dumps(self.payload(alert)).encode()
        abort = self._worker.abort
        retrying = Retrying(
            stop=(
                stop_after_attempt(self.retries + 1)
                | stop_after_delay(self.max_total_s)
                | _StopOn(abort)
            ),
            wait=wait_random_exponential(multiplier=0.2, max=5.0),
            retry=retry_if_exception(_retryable),
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                request = urllib.request.Request(
                    self.url, data=body, headers=self.headers, method="POST"
                )
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    response.read(1024)

    def _sleep(self, seconds: float) -> None:
        self._worker.abort.wait(seconds)  # closing cuts a backoff short

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until the alerts queued so far are delivered (or given up)."""
        return self._worker.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Deliver what is queued within ``timeout``, then give up the rest."""
        self._worker.close(timeout)

    def __repr__(self) -> str:
        return f"Webhook({self._where!r})"


class _StopOn(stop_base):
    """Stop retrying once ``event`` is set (the webhook is closing)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.event.is_set()


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 429 or exc.code >= 500
    return isinstance(exc, OSError)  # URLError, timeouts, connection refused / reset


# -- shared state: dedupe markers and spend history -------------------------------------


class AlertState(Protocol):
    """Where alerts remember what fired and how much was spent when."""

    def claim(self, tag: str, key: str, expires_at: float | None) -> bool:
        """True for the first caller only (fleet-wide for Redis), until ``expires_at``."""
        ...

    def add_spend(self, amounts: Mapping[int, int]) -> None:
        """Add nano-USD per 5-minute slot (slot start, epoch seconds)."""
        ...

    def spend(self, slots: Sequence[int]) -> list[int]:
        """Nano-USD spent in each slot."""
        ...


class MemoryAlertState:
    """One process's memory: right for ``MemoryStore``, whose budgets are per process too."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._claims: dict[tuple[str, str], float] = {}
        self._spend: dict[int, int] = {}

    def claim(self, tag: str, key: str, expires_at: float | None) -> bool:
        now = self._clock()
        with self._lock:
            if len(self._claims) > 10_000:
                self._claims = {k: v for k, v in self._claims.items() if v > now}
            until = self._claims.get((tag, key))
            if until is not None and until > now:
                return False
            self._claims[tag, key] = float("inf") if expires_at is None else expires_at
            return True

    def add_spend(self, amounts: Mapping[int, int]) -> None:
        with self._lock:
            for slot, nanos in amounts.items():
                self._spend[slot] = self._spend.get(slot, 0) + nanos
            if len(self._spend) > _WEEK_SLOTS + 2 * _HOUR_SLOTS:
                oldest = max(self._spend) - (_WEEK_SLOTS + _HOUR_SLOTS) * _SLOT_S
                self._spend = {s: n for s, n in self._spend.items() if s >= oldest}

    def spend(self, slots: Sequence[int]) -> list[int]:
        with self._lock:
            return [self._spend.get(slot, 0) for slot in slots]


class RedisAlertState:
    """Markers and spend history in Redis, shared by every process.

    ``client``: a redis-py client or a URL. Keys (same layout as the store's,
    so ``budgetguard reset`` clears markers with their counters)::

        <prefix>:{<tag>}:a:<marker key>     "1", SET NX EXAT <window end + 1 h>
        <prefix>:{spike}:s:<slot start>      nano-USD spent in that 5-minute slot
    """

    def __init__(self, client: Any, *, prefix: str = "bg") -> None:
        if isinstance(client, str):
            import redis

            client = redis.Redis.from_url(client, socket_connect_timeout=1.0, socket_timeout=2.0)
        self.client = client
        self.prefix = prefix

    def claim(self, tag: str, key: str, expires_at: float | None) -> bool:
        name = f"{self.prefix}:{{{tag}}}:a:{key}"
        if expires_at is None:
            return bool(self.client.set(name, 1, nx=True))
        return bool(self.client.set(name, 1, nx=True, exat=int(expires_at) + _MARKER_GRACE_S))

    def _slot_key(self, slot: int) -> str:
        return f"{self.prefix}:{{spike}}:s:{slot}"

    def add_spend(self, amounts: Mapping[int, int]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for slot, nanos in amounts.items():
            pipe.incrby(self._slot_key(slot), nanos)
            pipe.expireat(self._slot_key(slot), slot + _HISTORY_TTL_S)
        pipe.execute()

    def spend(self, slots: Sequence[int]) -> list[int]:
        values = self.client.mget([self._slot_key(slot) for slot in slots])
        return [int(v) if v is not None else 0 for v in values]


# -- the listener ----------------------------------------------------------------------


@dataclass
class _Runtime:
    """What the alert thread resolved once per store: the store and its shared state."""

    store: Store | None
    state: AlertState
    store_id: int = 0
    last_spike_check: float = field(default=float("-inf"))


class Alerts:
    """A listener that turns ``CallRecord``s into ``Alert``s for the ``sinks``.

    ``rules``: ``RequestCost``, ``Spike`` and extra ``Threshold``s (the
    policy's ``alerts`` thresholds are always used). A ``Threshold`` with no
    scope applies to every counter but run counters (``scope="run"`` for
    those). ``store``: whose counters to read (default: the configured
    store, at the time of the call). ``state``: where markers and spend
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
    ) -> None:
        rules = tuple(rules)
        for n, rule in enumerate(rules):
            if not isinstance(rule, Threshold | RequestCost | Spike):
                raise ConfigurationError(
                    f"rules[{n}]: expected Threshold, RequestCost or Spike, got {rule!r}"
                )
        self.thresholds = tuple(r for r in rules if isinstance(r, Threshold))
        self.request_costs = tuple(r for r in rules if isinstance(r, RequestCost))
        spikes = [r for r in rules if isinstance(r, Spike)]
        if len(spikes) > 1:
            raise ConfigurationError("rules: at most one Spike rule")
        self.spike = spikes[0] if spikes else None
        self.sinks: tuple[AlertSink, ...] = tuple(sinks) or (LogSink(),)
        for n, sink in enumerate(self.sinks):
            if not callable(sink):
                raise ConfigurationError(f"sinks[{n}]: expected a callable, got {sink!r}")
        self.store = store
        self.policy = policy
        self.clock = clock
        self._state = _state_from(state)
        self._runtime: _Runtime | None = None
        self._current_policy = policy if policy is not None else Policy()
        self.fired = 0
        self._worker: Worker[CallRecord] = Worker("budgetguard-alerts", self._handle, max_queue)

    # -- request path ------------------------------------------------------------------
    def __call__(self, record: CallRecord) -> None:
        """Queue the record for evaluation; never blocks, never does I/O."""
        self._worker.put(record)

    @property
    def dropped(self) -> int:
        return self._worker.dropped

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until the records queued so far are evaluated and handed to the sinks
        (a ``Webhook`` delivers on its own thread: flush it too to wait for delivery)."""
        return self._worker.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
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
            from . import _config

            settings = _config.current()
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

    def _handle(self, records: list[CallRecord]) -> None:
        runtime = self._resolve()
        alerts: list[Alert] = []
        for rule in self.request_costs:
            limit = rule.nanos
            alerts += [_request_alert(r, limit) for r in records if r.cost > limit]
        charged = [r for r in records if r.cost > 0]
        if charged:
            alerts += self._thresholds(runtime, charged)
            if self.spike is not None:
                alerts += self._spike(runtime, self.spike, charged)
        for alert in alerts:
            self._dispatch(alert)

    def _dispatch(self, alert: Alert) -> None:
        self.fired += 1
        for sink in self.sinks:
            try:
                sink(alert)
            except Exception:
                log.exception("budgetguard: alert sink %r failed", sink)

    def _thresholds(self, runtime: _Runtime, records: list[CallRecord]) -> list[Alert]:
        thresholds = tuple(self._current_policy.alerts) + self.thresholds
        if not thresholds or runtime.store is None:
            return []
        counters: dict[str, Counter] = {}
        for record in records:
            for counter in record.counters:
                counters.setdefault(counter.key, counter)
        alerts: list[Alert] = []
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
                try:
                    first = runtime.state.claim(counter.tag, marker, status.resets_at)
                except Exception as exc:
                    log.error("budgetguard: alert dedupe unavailable (%r); not alerting", exc)
                    return alerts
                if first:
                    alerts.append(_threshold_alert(status, fraction, self.clock()))
        return alerts

    def _spike(self, runtime: _Runtime, rule: Spike, records: list[CallRecord]) -> list[Alert]:
        amounts: dict[int, int] = {}
        for record in records:
            slot = int(record.at) // _SLOT_S * _SLOT_S
            amounts[slot] = amounts.get(slot, 0) + record.cost
        now = self.clock()
        try:
            runtime.state.add_spend(amounts)
            if now - runtime.last_spike_check < rule.check_every_s:
                return []
            runtime.last_spike_check = now
            current = int(now) // _SLOT_S * _SLOT_S
            slots = [current - n * _SLOT_S for n in range(_HOUR_SLOTS + _WEEK_SLOTS)]
            spend = runtime.state.spend(slots)
        except Exception as exc:
            log.error("budgetguard: spike history unavailable (%r)", exc)
            return []
        last_hour = sum(spend[:_HOUR_SLOTS])
        baseline = Decimal(sum(spend[_HOUR_SLOTS:])) / (7 * 24)
        factor = Decimal(str(rule.factor))
        if (
            last_hour <= 0
            or last_hour < usd_to_nanos(rule.min_usd)
            or last_hour < factor * baseline
        ):
            return []
        hour = int(now) // 3600 * 3600
        try:
            if not runtime.state.claim("spike", f"spike:{hour}", hour + 3600):
                return []
        except Exception as exc:
            log.error("budgetguard: alert dedupe unavailable (%r); not alerting", exc)
            return []
        ratio = "no history" if baseline == 0 else f"{Decimal(last_hour) / baseline:.1f}x"
        average = int(baseline)
        return [
            Alert(
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
        ]


def _state_from(state: AlertState | Any | None) -> AlertState | None:
    if state is None or isinstance(state, MemoryAlertState | RedisAlertState):
        return state
    if isinstance(state, str) or hasattr(state, "set"):
        return RedisAlertState(state)
    if all(hasattr(state, name) for name in ("claim", "add_spend", "spend")):
        return state
    raise ConfigurationError(
        f"state: expected an AlertState, a redis client or a redis:// URL, got {state!r}"
    )


def _applies(threshold: Threshold, counter: Counter) -> bool:
    if threshold.scope is None:
        return counter.scope != "run"
    return threshold.scope == counter.scope


def _tenant_of(counter: Counter) -> str | None:
    """Users are counted per tenant (``tenant=acme/user=u-1:day``): which one."""
    if counter.scope == "tenant":
        return counter.subject
    if counter.scope == "user" and counter.key.startswith("tenant="):
        return unquote(counter.key.split("/", 1)[0].removeprefix("tenant="))
    return None


def _describe(counter: Counter) -> str:
    if counter.scope == "global":
        return "the global budget"
    tenant = _tenant_of(counter)
    if counter.scope == "user" and tenant is not None:
        return f"user {counter.subject!r} of tenant {tenant!r}"
    return f"{counter.scope} {counter.subject!r}"


def _threshold_alert(status: CounterStatus, fraction: Decimal, now: float) -> Alert:
    counter = status.counter
    fraction = fraction.normalize()
    percent = f"{(fraction * 100).normalize():f}%"
    resets = None if status.resets_at is None else datetime.fromtimestamp(status.resets_at, UTC)
    when = f"; resets {resets:%Y-%m-%d %H:%M} UTC" if resets else ""
    return Alert(
        kind="threshold",
        message=(
            f"budgetguard: {_describe(counter)} reached {percent} of its {counter.window} "
            f"budget: {format_usd(status.spent)} of {format_usd(counter.limit)}{when}"
        ),
        at=datetime.fromtimestamp(now, UTC),
        amount=nanos_to_usd(status.spent),
        limit=nanos_to_usd(counter.limit),
        fraction=fraction,
        scope=counter.scope,
        key=counter.subject,
        window=counter.window,
        resets_at=resets,
        tenant=_tenant_of(counter),
    )


def _request_alert(record: CallRecord, limit: int) -> Alert:
    who = ", ".join(
        f"{name}={value}"
        for name, value in (
            ("tenant", record.tenant),
            ("user", record.user),
            ("feature", record.feature),
        )
        if value
    )
    return Alert(
        kind="request_cost",
        message=(
            f"budgetguard: one {record.model or 'LLM'} call cost {format_usd(record.cost)} "
            f"(alert above {format_usd(limit)})" + (f" for {who}" if who else "")
        ),
        at=datetime.fromtimestamp(record.at, UTC),
        amount=nanos_to_usd(record.cost),
        limit=nanos_to_usd(limit),
        tenant=record.tenant,
        user=record.user,
        feature=record.feature,
        model=record.model,
    )
