"""Where alerts remember what fired (fleet-wide dedupe) and how much was spent when."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..._core.errors import ConfigurationError

__all__ = [
    "HISTORY_SLOTS",
    "HOUR_SLOTS",
    "SLOT_S",
    "AlertState",
    "HistoryState",
    "MemoryAlertState",
    "RedisAlertState",
    "state_from",
]

SLOT_S = 300
"""Spend history granularity for spike detection: 5-minute slots."""
HOUR_SLOTS = 3600 // SLOT_S
HISTORY_SLOTS = 7 * 24 * HOUR_SLOTS
_HISTORY_TTL_S = 8 * 86_400
_MARKER_GRACE_S = 3600
"""How long a dedupe marker outlives its window (a late status read must not re-fire)."""


class AlertState(Protocol):
    """Where alerts remember what fired and how much was spent when.

    An alert that must reach people once per counter and window is delivered
    under a claim: ``claim`` it for ``hold_s`` (True for one caller only,
    fleet-wide for Redis), deliver it, then ``confirm`` (it stays claimed until
    ``expires_at``) or ``release`` it for another try. A process that dies while
    delivering lets its claim lapse after ``hold_s``: at least once, never lost.
    """

    def claim(self, tag: str, key: str, hold_s: float) -> bool:
        """Claim ``key`` for ``hold_s`` seconds; False if it is claimed or was delivered."""
        ...

    def confirm(self, tag: str, key: str, expires_at: float | None) -> None:
        """Mark ``key`` delivered, until ``expires_at`` (None: forever)."""
        ...

    def release(self, tag: str, key: str) -> None:
        """Give a claim up (delivery failed): the next caller may claim it."""
        ...

    def add_spend(self, amounts: Mapping[int, int]) -> None:
        """Add nano-USD per 5-minute slot (slot start, epoch seconds)."""
        ...

    def spend(self, slots: Sequence[int]) -> list[int]:
        """Nano-USD spent in each slot."""
        ...


class HistoryState(AlertState, Protocol):
    """Counts per series, bucket and field, for the rules that compare tenants, users
    and features (``Spike(scope=...)``, ``CostPerCall``, ``Digest``).

    A bucket is a time (epoch seconds: a slot, an hour, a day's start); each
    bucket of a series keeps ``field -> integer`` counts (nano-USD, calls) and
    expires ``ttl_s`` after its start.
    """

    def add_counts(self, series: str, counts: Mapping[int, Mapping[str, int]], ttl_s: int) -> None:
        """Add ``counts[bucket][field]`` to the series' buckets."""
        ...

    def counts(
        self, series: str, buckets: Sequence[int], fields: Sequence[str] | None = None
    ) -> list[dict[str, int]]:
        """Each bucket's counts (only ``fields`` when given; missing ones are 0)."""
        ...


class MemoryAlertState:
    """One process's memory: right for ``MemoryStore``, whose budgets are per process too."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._claims: dict[tuple[str, str], float] = {}
        self._spend: dict[int, int] = {}
        self._series: dict[str, dict[int, dict[str, int]]] = {}

    def claim(self, tag: str, key: str, hold_s: float) -> bool:
        now = self._clock()
        with self._lock:
            if len(self._claims) > 10_000:
                self._claims = {k: v for k, v in self._claims.items() if v > now}
            until = self._claims.get((tag, key))
            if until is not None and until > now:
                return False
            self._claims[tag, key] = now + hold_s
            return True

    def confirm(self, tag: str, key: str, expires_at: float | None) -> None:
        with self._lock:
            self._claims[tag, key] = float("inf") if expires_at is None else expires_at

    def release(self, tag: str, key: str) -> None:
        with self._lock:
            self._claims.pop((tag, key), None)

    def add_spend(self, amounts: Mapping[int, int]) -> None:
        with self._lock:
            for slot, nanos in amounts.items():
                self._spend[slot] = self._spend.get(slot, 0) + nanos
            if len(self._spend) > HISTORY_SLOTS + 2 * HOUR_SLOTS:
                oldest = max(self._spend) - (HISTORY_SLOTS + HOUR_SLOTS) * SLOT_S
                self._spend = {s: n for s, n in self._spend.items() if s >= oldest}

    def spend(self, slots: Sequence[int]) -> list[int]:
        with self._lock:
            return [self._spend.get(slot, 0) for slot in slots]

    def add_counts(self, series: str, counts: Mapping[int, Mapping[str, int]], ttl_s: int) -> None:
        with self._lock:
            buckets = self._series.setdefault(series, {})
            for bucket, fields in counts.items():
                into = buckets.setdefault(bucket, {})
                for name, value in fields.items():
                    into[name] = into.get(name, 0) + value
            newest = max(buckets, default=0)
            for bucket in [b for b in buckets if b + ttl_s <= newest]:
                del buckets[bucket]  # expired: bounded like Redis's TTLs

    def counts(
        self, series: str, buckets: Sequence[int], fields: Sequence[str] | None = None
    ) -> list[dict[str, int]]:
        with self._lock:
            stored = self._series.get(series, {})
            found = [stored.get(bucket, {}) for bucket in buckets]
            if fields is None:
                return [dict(counts) for counts in found]
            return [{name: counts.get(name, 0) for name in fields} for counts in found]


class RedisAlertState:
    """Markers and spend history in Redis, shared by every process.

    ``client``: a redis-py client or a URL. Keys (same layout as the store's,
    so ``budgetguard reset`` clears markers with their counters)::

        <prefix>:{<tag>}:a:<marker key>     "pending" (SET NX EX hold) while being
                                             delivered, then "sent" until window end + 1 h
        <prefix>:{spike}:s:<slot start>      nano-USD spent in that 5-minute slot
        <prefix>:{<series>}:h:<bucket>       a hash of counts (``add_counts``), HINCRBY,
                                             expiring ``ttl_s`` after the bucket's start
    """

    def __init__(self, client: Any, *, prefix: str = "bg") -> None:
        if isinstance(client, str):
            import redis

            client = redis.Redis.from_url(client, socket_connect_timeout=1.0, socket_timeout=2.0)
        self.client = client
        self.prefix = prefix

    def _marker(self, tag: str, key: str) -> str:
        return f"{self.prefix}:{{{tag}}}:a:{key}"

    def claim(self, tag: str, key: str, hold_s: float) -> bool:
        hold_ms = max(1, round(hold_s * 1000))
        return bool(self.client.set(self._marker(tag, key), "pending", nx=True, px=hold_ms))

    def confirm(self, tag: str, key: str, expires_at: float | None) -> None:
        name = self._marker(tag, key)
        if expires_at is None:
            self.client.set(name, "sent")
        else:
            self.client.set(name, "sent", exat=int(expires_at) + _MARKER_GRACE_S)

    def release(self, tag: str, key: str) -> None:
        self.client.delete(self._marker(tag, key))

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

    def _bucket_key(self, series: str, bucket: int) -> str:
        return f"{self.prefix}:{{{series}}}:h:{bucket}"

    def add_counts(self, series: str, counts: Mapping[int, Mapping[str, int]], ttl_s: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for bucket, fields in counts.items():
            name = self._bucket_key(series, bucket)
            for field, value in fields.items():
                pipe.hincrby(name, field, value)
            pipe.expireat(name, bucket + ttl_s)
        pipe.execute()

    def counts(
        self, series: str, buckets: Sequence[int], fields: Sequence[str] | None = None
    ) -> list[dict[str, int]]:
        if fields is not None and not fields:
            return [{} for _ in buckets]
        pipe = self.client.pipeline(transaction=False)
        for bucket in buckets:
            if fields is None:
                pipe.hgetall(self._bucket_key(series, bucket))
            else:
                pipe.hmget(self._bucket_key(series, bucket), list(fields))
        found: list[dict[str, int]] = []
        for reply in pipe.execute():
            if fields is None:
                found.append({_text(k): int(v) for k, v in reply.items()})
            else:
                found.append(
                    {n: int(v) if v is not None else 0 for n, v in zip(fields, reply, strict=True)}
                )
        return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def state_from(state: AlertState | Any | None) -> AlertState | None:
    if state is None or isinstance(state, MemoryAlertState | RedisAlertState):
        return state
    if isinstance(state, str) or hasattr(state, "set"):
        return RedisAlertState(state)
    if all(hasattr(state, n) for n in ("claim", "confirm", "release", "add_spend", "spend")):
        return state
    raise ConfigurationError(
        f"state: expected an AlertState, a redis client or a redis:// URL, got {state!r}"
    )
