"""What ``RedisStore`` and ``AsyncRedisStore`` share: everything but the I/O.

Each operation is a *plan*: a generator that yields the script calls it needs,
as data (``ScriptCall``), and receives their replies. The sync and the async
store only drive plans and talk to Redis, so key naming, argument packing,
reply parsing, slot-by-slot rollback and the failure policy exist once
(httpx's ``BaseClient`` split; tenacity's "decide, then act").

Redis layout (``{tag}`` is ``Counter.tag``, so one tag is one cluster slot)::

    <prefix>:{<tag>}:c:<counter key>:<bucket start>   hash spent, held (nano-USD)
    <prefix>:{<tag>}:r:<reservation id>                hash s(tate), a(mount), e(xpiry), k(eys)
    <prefix>:{<tag>}:leases                            zset reservation id -> expiry ms
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any, ClassVar, Final, TypedDict, TypeVar

from redis import exceptions as rx

from ..._core.counters import share, soft_limit
from ..._core.errors import ConfigurationError, StoreUnavailable
from ..._core.money import check_nanos
from ..._core.windows import CALENDAR_WINDOWS, SpanCache, window_span
from ..base import Counter, CounterStatus, Denial, Reservation, ReserveOutcome
from ..memory import MemoryStore
from .book import LimitBookPlans
from .fail_open import FailOpen, LocalReservation
from .health import Fail, Health, ServerClock
from .script import ScriptCall

__all__ = [
    "SCRIPT_NAMES",
    "LocalReservation",
    "RedisOptions",
    "RedisStoreBase",
    "ScriptCall",
    "is_transient",
    "script_source",
]

log = logging.getLogger("budgetguard.stores.redis")

T = TypeVar("T")
Plan = Generator["ScriptCall", Any, T]
"""A store operation as data: yields script calls, receives replies, returns the result."""

SCRIPT_NAMES: Final = ("reserve", "settle", "release", "status", "renew", "limits")
_MAX_MOVES: Final = 5
"""Reserve attempts when the client's guess of the server clock picked a stale bucket."""

_TRANSIENT: Final = (
    rx.ConnectionError,  # includes BusyLoadingError (a restarted server loading its data)
    rx.TimeoutError,
    rx.ClusterError,  # includes ClusterDownError, MasterDownError
    rx.TryAgainError,
    rx.ReadOnlyError,  # a failover in progress: we hit a fresh replica
)
_PERMANENT: Final = (rx.AuthenticationError, rx.AuthorizationError)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the server may answer in a moment. Bad credentials will not."""
    return isinstance(exc, _TRANSIENT) and not isinstance(exc, _PERMANENT)


@cache
def script_source(name: str) -> str:
    """A script's text with the shared prelude in front (Lua has no include)."""
    lua = resources.files("budgetguard.stores.redis").joinpath("lua")
    return lua.joinpath("prelude.lua").read_text() + lua.joinpath(f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class _Granted:
    """One tag group's hold: the buckets it pinned and when its lease ends."""

    tag: str
    buckets: tuple[tuple[Counter, int], ...]
    expires_at: float
    over_soft: tuple[Counter, ...] = ()


@lru_cache(maxsize=4096)
def _bucket_end(window: str, tz: str, start: int) -> int:
    """End of the bucket that starts at ``start`` (-1: never ends)."""
    end = window_span(window, start, tz)[1]
    return -1 if end is None else end


_FLAGS: Final = {(True, True): "1d", (True, False): "1o", (False, True): "0d", (False, False): "0o"}
"""reserve.lua's flags of a counter, by (soft, counts dollars)."""

_EXPIRY_MODES: Final = {**dict.fromkeys(CALENDAR_WINDOWS, "c"), "run": "r"}
"""How a bucket key expires, by window: calendar ("c") at its end + grace, run ("r")
after idle grace, any other ("t", ``.get(window, "t")``) never."""


class RedisOptions(TypedDict, total=False):
    """What ``RedisStore`` and ``AsyncRedisStore`` accept besides the client; see
    ``RedisStoreBase`` for the defaults and docs/redis.md for what each does."""

    prefix: str
    fail: Fail
    retry_total_s: float
    probe_interval_s: float
    tombstone_s: float
    grace_s: float
    open_allowance: float
    limits_refresh_s: float


class RedisStoreBase(LimitBookPlans):
    """Configuration, key naming and the plans of every operation; no I/O.

    ``fail="closed"`` raises ``StoreUnavailable`` once transient errors outlast
    ``retry_total_s``; ``fail="open"`` then reserves in a local ``MemoryStore``
    (``FailOpen``: each counter bounded by ``open_allowance`` of its limit and by
    what Redis last reported spent) and returns a ``LocalReservation``, which
    settles locally and is charged into Redis once it answers again. Settles
    and releases of Redis reservations raise ``StoreUnavailable`` in both modes:
    the caller keeps them and retries (settle is idempotent), or the lease
    frees the hold. ``limits_refresh_s`` (at most 1 s): how long the limits
    stored with ``bg.set_limit`` are used before Redis is asked again.
    """

    supports_units: ClassVar[bool] = True
    """Holds token, request and soft counters (``Counter.unit`` / ``soft`` / ``warn_at``)."""

    def __init__(
        self,
        *,
        prefix: str = "bg",
        fail: Fail = "closed",
        retry_total_s: float = 2.0,
        probe_interval_s: float = 1.0,
        tombstone_s: float = 86_400.0,
        grace_s: float = 86_400.0,
        open_allowance: float = 0.1,
        limits_refresh_s: float = 1.0,
    ) -> None:
        if fail not in ("closed", "open"):
            raise ConfigurationError(f"fail: expected 'closed' or 'open', got {fail!r}")
        if retry_total_s < 0 or probe_interval_s < 0:
            raise ConfigurationError("retry_total_s / probe_interval_s: must not be negative")
        if not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"prefix: expected a non-empty name without braces, got {prefix!r}"
            )
        self.prefix = prefix
        self.fail: Fail = fail
        self.retry_total_s = retry_total_s
        self.fail_open = FailOpen(open_allowance)
        self._health = Health(fail, probe_interval_s)
        self._clock = ServerClock()
        self._spans = SpanCache()
        self._common: tuple[str, str] = (str(int(tombstone_s * 1000)), str(int(grace_s * 1000)))
        self._init_book(limits_refresh_s)

    @property
    def local(self) -> MemoryStore:
        """Where ``fail="open"`` counts while Redis is down."""
        return self.fail_open.local

    # -- keys ----------------------------------------------------------------
    def tag_prefix(self, tag: str) -> str:
        return f"{self.prefix}:{{{tag}}}"

    def freed_channel(self, tag: str) -> str:
        """Where the scripts announce that a hold on ``tag`` was freed (``prelude.lua``)."""
        return f"{self.tag_prefix(tag)}:freed"

    def bucket_key(self, counter: Counter, start: int) -> str:
        return f"{self.prefix}:{{{counter.tag}}}:c:{counter.key}:{start}"

    def lease_key(self, tag: str, reservation_id: str) -> str:
        return f"{self.prefix}:{{{tag}}}:r:{reservation_id}"

    def index_key(self, tag: str) -> str:
        return f"{self.prefix}:{{{tag}}}:leases"

    # -- plans -----------------------------------------------------------------
    def reserve_plan(
        self,
        reservation_id: str,
        counters: tuple[Counter, ...],
        amount: int,
        lease_s: float,
        tokens: int = 0,
    ) -> Plan[ReserveOutcome]:
        """All counters of a tag in one script; tags one after another, rolled
        back if a later one denies (at worst a brief false denial, never an overspend)."""
        check_nanos(amount, field="amount")
        check_nanos(tokens, field="tokens", unit="tokens")
        for counter in counters:
            _check_counter(counter)
        lease_ms = max(1, round(lease_s * 1000))
        groups = _by_tag(counters)
        if len(groups) == 1:  # the common case: one slot, nothing to roll back
            tag, members = groups[0]
            outcome = yield from self._reserve_group(
                reservation_id, tag, members, amount=amount, tokens=tokens, lease_ms=lease_ms
            )
            if isinstance(outcome, Denial):
                return outcome
            return Reservation(
                reservation_id,
                amount,
                outcome.buckets,
                outcome.expires_at,
                tokens,
                outcome.over_soft,
            )
        granted: list[_Granted] = []
        try:
            for tag, members in groups:
                outcome = yield from self._reserve_group(
                    reservation_id, tag, members, amount=amount, tokens=tokens, lease_ms=lease_ms
                )
                if isinstance(outcome, Denial):
                    break
                granted.append(outcome)
            else:
                return _reservation(
                    reservation_id,
                    amount,
                    tokens,
                    counters,
                    granted,
                    unheld_expiry=self._clock.now() + lease_s,
                )
        except Exception:
            yield from self._rollback(reservation_id, granted)
            raise
        yield from self._rollback(reservation_id, granted)
        return outcome

    def pin(self, reservation_id: str, counters: tuple[Counter, ...]) -> Reservation:
        """``Store.pin``: buckets named by the client's estimate of the server clock."""
        now = self._clock.now()
        span = self._spans.span
        pinned = tuple((c, span(c.window, now, c.tz)[0]) for c in counters)
        return Reservation(reservation_id, 0, pinned, now)

    def settle_plan(
        self, reservation: Reservation, actual: int, tokens: int | None = None
    ) -> Plan[bool]:
        """One settle script per tag; True if any of them charged (each is idempotent).
        ``tokens``: what the call used (None: what it held)."""
        check_nanos(actual, field="actual")
        used = reservation.tokens if tokens is None else tokens
        check_nanos(used, field="tokens", unit="tokens")
        applied = False
        for tag, buckets in _by_tag_pinned(reservation.buckets):
            args: list[str | int] = [self.tag_prefix(tag), *self._common, reservation.id]
            for counter, start in buckets:
                charge = share(counter, actual, used)
                held = share(counter, reservation.amount, reservation.tokens)
                args += (
                    _bucket_end(counter.window, counter.tz, start),
                    _EXPIRY_MODES.get(counter.window, "t"),
                    charge,
                    max(0, charge - held),
                )
            reply = yield ScriptCall(
                "settle", self._pinned_keys(reservation.id, tag, buckets), tuple(args)
            )
            applied = bool(int(reply)) or applied
        return applied

    def release_plan(self, reservation: Reservation) -> Plan[bool]:
        released = False
        for tag, buckets in _by_tag_pinned(reservation.buckets):
            args = (*self._head(tag), reservation.id)
            reply = yield ScriptCall(
                "release", self._pinned_keys(reservation.id, tag, buckets), args
            )
            released = bool(int(reply)) or released
        return released

    def status_plan(self, counter: Counter) -> Plan[CounterStatus]:
        _check_counter(counter)
        for _ in range(_MAX_MOVES):
            start, end = self._spans.span(counter.window, self._clock.now(), counter.tz)
            keys = (self.index_key(counter.tag), self.bucket_key(counter, start))
            args = (*self._head(counter.tag), start, -1 if end is None else end)
            reply = yield ScriptCall("status", keys, args)
            if int(reply[0]) == 2:
                self._clock.learn(reply[1])
                continue
            self._clock.learn(reply[4])
            spent, held, overrun = int(reply[1]), int(reply[2]), int(reply[3])
            self.fail_open.learn(counter, start, spent + held)
            return CounterStatus(counter, spent, held, start, end, overrun)
        raise _moving_clock()

    def renew_plan(self, reservation: Reservation, lease_s: float) -> Plan[float | None]:
        """Extend a live hold's lease by ``lease_s`` from now: its new end (epoch s, the
        earliest over its tags), or None when the hold is gone (settled, released, or
        its lease already ran out)."""
        lease_ms = max(1, round(lease_s * 1000))
        expires: float | None = None
        for tag, buckets in _by_tag_pinned(reservation.buckets):
            args: list[str | int] = [*self._head(tag), reservation.id, lease_ms]
            for counter, start in buckets:
                args += (
                    _bucket_end(counter.window, counter.tz, start),
                    _EXPIRY_MODES.get(counter.window, "t"),
                )
            keys = self._pinned_keys(reservation.id, tag, buckets)
            reply = yield ScriptCall("renew", keys, tuple(args))
            if not int(reply[0]):
                self._clock.learn(reply[1])
                return None
            self._clock.learn(reply[2])
            ends = int(reply[1]) / 1000
            expires = ends if expires is None else min(expires, ends)
        return expires

    # -- fail-open -------------------------------------------------------------
    def reserve_locally(
        self,
        reservation_id: str,
        counters: tuple[Counter, ...],
        amount: int,
        lease_s: float,
        tokens: int = 0,
    ) -> ReserveOutcome:
        outcome = self.fail_open.reserve(reservation_id, counters, amount, lease_s, tokens)
        if isinstance(outcome, LocalReservation):
            self._health.local_calls += 1
        return outcome

    def reconcile_plan(self) -> Plan[None]:
        """Charge into Redis what ``fail="open"`` spent locally while it was down."""
        return self.fail_open.reconcile_plan(self.settle_plan)

    # -- internals -------------------------------------------------------------
    def _head(self, tag: str) -> tuple[str, str, str]:
        return (self.tag_prefix(tag), *self._common)

    def _pinned_keys(
        self, reservation_id: str, tag: str, buckets: Iterable[tuple[Counter, int]]
    ) -> tuple[str, ...]:
        """Lease record, lease index, then each bucket (all of ``tag``, as the
        ``*_key`` methods name them)."""
        at = self.tag_prefix(tag)
        keys = [f"{at}:r:{reservation_id}", f"{at}:leases"]
        keys += [f"{at}:c:{counter.key}:{start}" for counter, start in buckets]
        return tuple(keys)

    def _reserve_group(
        self,
        reservation_id: str,
        tag: str,
        counters: tuple[Counter, ...],
        *,
        amount: int,
        tokens: int,
        lease_ms: int,
    ) -> Plan[_Granted | Denial]:
        span = self._spans.span
        at = self.tag_prefix(tag)
        for _ in range(_MAX_MOVES):
            guess = self._clock.now()
            keys = [f"{at}:r:{reservation_id}", f"{at}:leases"]  # as _pinned_keys() names them
            args: list[str | int] = [at, *self._common, reservation_id, amount, lease_ms, "0"]
            pinned: list[tuple[Counter, int]] = []
            ends: list[int | None] = []
            shares: list[int] = []
            for counter in counters:
                start, end = span(counter.window, guess, counter.tz)
                keys.append(f"{at}:c:{counter.key}:{start}")
                held = share(counter, amount, tokens)
                args += (
                    counter.limit,
                    start,
                    -1 if end is None else end,
                    _EXPIRY_MODES.get(counter.window, "t"),
                    held,
                    _FLAGS[counter.soft, counter.unit == "usd"],
                )
                shares.append(held)
                pinned.append((counter, start))
                ends.append(end)
            reply = yield ScriptCall("reserve", tuple(keys), tuple(args), resend_flag_at=6)
            code = int(reply[0])
            if code == 2:
                self._clock.learn(reply[1])
                continue
            if code == 3:
                raise ConfigurationError(f"reservation_id {reservation_id!r} was already used")
            if code == 1:
                now = self._clock.learn(reply[4])
                i = int(reply[1]) - 1
                spent, held = int(reply[2]), int(reply[3])
                self.fail_open.learn(counters[i], pinned[i][1], spent + held)
                return Denial(counters[i], spent, held, shares[i], ends[i], now)
            self._clock.learn(reply[2])
            over_soft: list[Counter] = []
            for (counter, start), total in zip(pinned, reply[3:], strict=False):
                self.fail_open.learn(counter, start, int(total))
                warn = soft_limit(counter)
                if warn is not None and int(total) > warn:
                    over_soft.append(counter)
            return _Granted(tag, tuple(pinned), int(reply[1]) / 1000, tuple(over_soft))
        raise _moving_clock()

    def _rollback(self, reservation_id: str, granted: list[_Granted]) -> Plan[None]:
        """Free the holds of tag groups reserved before a later group failed."""
        for group in granted:
            keys = self._pinned_keys(reservation_id, group.tag, group.buckets)
            try:
                yield ScriptCall("release", keys, (*self._head(group.tag), reservation_id))
            except StoreUnavailable:
                log.error(
                    "budgetguard: could not roll back hold %s on tag %r; it expires with its lease",
                    reservation_id,
                    group.tag,
                )


def _check_counter(counter: Counter) -> None:
    check_nanos(counter.limit, field="limit")
    if not counter.tag or "}" in counter.tag:
        raise ConfigurationError(
            f"tag: expected a non-empty hash tag without '}}', got {counter.tag!r}"
        )


def _by_tag(counters: tuple[Counter, ...]) -> list[tuple[str, tuple[Counter, ...]]]:
    """Counters grouped by hash tag, in first-seen order (one script call per group)."""
    if not counters:
        return []
    first = counters[0].tag
    for counter in counters:
        if counter.tag != first:
            break
    else:  # the common case: one slot
        return [(first, counters)]
    groups: dict[str, list[Counter]] = {}
    for counter in counters:
        groups.setdefault(counter.tag, []).append(counter)
    return [(tag, tuple(members)) for tag, members in groups.items()]


def _by_tag_pinned(
    buckets: tuple[tuple[Counter, int], ...],
) -> list[tuple[str, tuple[tuple[Counter, int], ...]]]:
    if not buckets:
        return []
    first = buckets[0][0].tag
    for counter, _ in buckets:
        if counter.tag != first:
            break
    else:  # the common case: one slot
        return [(first, buckets)]
    groups: dict[str, list[tuple[Counter, int]]] = {}
    for pinned in buckets:
        groups.setdefault(pinned[0].tag, []).append(pinned)
    return [(tag, tuple(members)) for tag, members in groups.items()]


def _reservation(
    reservation_id: str,
    amount: int,
    tokens: int,
    counters: tuple[Counter, ...],
    granted: list[_Granted],
    *,
    unheld_expiry: float,
) -> Reservation:
    """Pinned buckets back in the caller's counter order; the earliest lease end wins."""
    if not granted:  # nothing to hold: no counters
        return Reservation(reservation_id, amount, (), unheld_expiry, tokens)
    over_soft = tuple(c for group in granted for c in group.over_soft)
    if len(granted) == 1:
        group = granted[0]
        return Reservation(
            reservation_id, amount, group.buckets, group.expires_at, tokens, over_soft
        )
    starts = {id(c): s for group in granted for c, s in group.buckets}
    return Reservation(
        reservation_id,
        amount,
        tuple((c, starts[id(c)]) for c in counters),
        min(group.expires_at for group in granted),
        tokens,
        over_soft,
    )


def _moving_clock() -> StoreUnavailable:
    return StoreUnavailable("Redis kept answering with a different window bucket; is TIME sane?")
