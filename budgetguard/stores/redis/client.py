"""Redis stores: budgets shared by every process and machine, one Lua script per step.

``RedisStore`` (redis-py) and ``AsyncRedisStore`` (redis.asyncio) only drive
the plans of ``RedisStoreBase`` and do the I/O; see ``_redis_common`` for the
logic and docs/redis.md for the data model, cluster and failure behaviour.
"""

from __future__ import annotations

import contextlib
from typing import Any, Unpack

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_before_delay,
    wait_random_exponential,
)

from ..._core.errors import StoreUnavailable
from ..._core.limitbook import LimitBook, LimitId
from ..._core.policy import Limit
from ..base import Counter, CounterStatus, Reservation, ReserveOutcome
from ..wakeups import Wakeups
from .listen import AsyncFreedListener, FreedListener, freed_pattern
from .plans import (
    SCRIPT_NAMES,
    LocalReservation,
    Plan,
    RedisOptions,
    RedisStoreBase,
    ScriptCall,
    T,
    is_transient,
    script_source,
)

__all__ = ["AsyncRedisStore", "LocalReservation", "RedisStore"]

SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

_URL_DEFAULTS: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0}
"""Clients we build from a URL: short timeouts and no hidden retries inside
redis-py, so ``retry_total_s`` really bounds how long a call can wait."""


def _retry_policy(total_s: float) -> dict[str, Any]:
    return {
        "stop": stop_before_delay(total_s),
        "wait": wait_random_exponential(multiplier=0.02, max=0.5),
        "retry": retry_if_exception(is_transient),
        "reraise": True,
    }


class RedisStore(RedisStoreBase):
    """``Store`` on Redis or Redis Cluster through redis-py.

    ``client`` is a ``redis.Redis`` / ``redis.cluster.RedisCluster`` or a URL
    (``cluster=True`` for a cluster URL). Thread-safe: redis-py pools
    connections and the store keeps no per-call state.
    """

    def __init__(
        self, client: SyncClient | str, *, cluster: bool = False, **options: Unpack[RedisOptions]
    ) -> None:
        super().__init__(**options)
        self._owns_client = isinstance(client, str)
        self.client: SyncClient = (
            _sync_client(client, cluster) if isinstance(client, str) else client
        )
        self._scripts = {
            name: self.client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }
        self._wakeups = Wakeups()
        self._freed = FreedListener(self.client, freed_pattern(self.prefix), self._wakeups)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        return cls(url, **options)

    def close(self) -> None:
        self._freed.close()
        if self._owns_client:
            self.client.close()

    def wait_freed(self, counter: Counter, timeout: float) -> bool:
        """Wait until a hold on ``counter``'s tag is settled, released or expires (True,
        told by pub/sub), or ``timeout`` seconds pass (False)."""
        self._freed.ensure()  # subscribes in the background the first time
        return self._wakeups.wait(self.freed_channel(counter.tag), timeout)

    # -- Store -------------------------------------------------------------------
    def reserve(
        self,
        reservation_id: str,
        counters: tuple[Counter, ...],
        amount: int,
        lease_s: float,
        tokens: int = 0,
    ) -> ReserveOutcome:
        self._reconcile()
        try:
            plan = self.reserve_plan(reservation_id, counters, amount, lease_s, tokens)
            return self._drive(plan)
        except StoreUnavailable:
            if self.fail == "closed":
                raise
            return self.reserve_locally(reservation_id, counters, amount, lease_s, tokens)

    def settle(self, reservation: Reservation, actual: int, tokens: int | None = None) -> bool:
        if isinstance(reservation, LocalReservation):
            applied = self.fail_open.settle(reservation, actual, tokens)
            self._reconcile()
            return applied
        self._reconcile()
        return self._drive(self.settle_plan(reservation, actual, tokens))

    def release(self, reservation: Reservation) -> bool:
        if isinstance(reservation, LocalReservation):
            return self.fail_open.release(reservation)
        return self._drive(self.release_plan(reservation))

    def status(self, counter: Counter) -> CounterStatus:
        self._reconcile()
        try:
            return self._drive(self.status_plan(counter))
        except StoreUnavailable:
            if self.fail == "closed":
                raise
            return self.local.status(counter)

    def renew(self, reservation: Reservation, lease_s: float) -> float | None:
        if isinstance(reservation, LocalReservation):
            return self.local.renew(reservation, lease_s)
        return self._drive(self.renew_plan(reservation, lease_s))

    # -- StoredLimits ------------------------------------------------------------
    def limit_book(self) -> LimitBook:
        book = self.cached_book()
        if book is not None:  # the common case: read less than limits_refresh_s ago
            return book
        try:
            return self._drive(self.book_plan())
        except StoreUnavailable:
            if self.fail == "closed":
                raise
            return self.stale_book()

    def put_limit(self, limit: Limit) -> None:
        self._drive(self.put_limit_plan(limit))

    def drop_limit(self, ident: LimitId) -> bool:
        return self._drive(self.drop_limit_plan(ident))

    def put_plan(self, subject: tuple[str, str], plan: str | None) -> None:
        self._drive(self.put_plan_plan(subject, plan))

    # -- I/O ---------------------------------------------------------------------
    def _reconcile(self) -> None:
        """Charge what fail-open spent locally into Redis, if any, before going on."""
        if self.fail_open.pending:
            with contextlib.suppress(StoreUnavailable):
                self._drive(self.reconcile_plan())

    def _drive(self, plan: Plan[T]) -> T:
        reply: Any = None
        error: StoreUnavailable | None = None
        while True:
            try:
                call = plan.send(reply) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                reply, error = self._execute(call), None
            except StoreUnavailable as exc:
                reply, error = None, exc

    def _execute(self, call: ScriptCall) -> Any:
        how = self._health.admit()
        if how == "skip":
            raise self._health.skipped()
        script = self._scripts[call.script]
        try:
            try:
                reply = script(keys=call.keys, args=call.args)
            except Exception as exc:
                if how == "probe" or not is_transient(exc):
                    raise
                retrying = Retrying(**_retry_policy(self.retry_total_s))
                reply = retrying(script, keys=call.keys, args=call.retry_args)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise self._health.failed(exc) from exc
        self._health.recovered()
        return reply


class AsyncRedisStore(RedisStoreBase):
    """``AsyncStore`` on Redis or Redis Cluster through redis.asyncio; same
    options and semantics as ``RedisStore``. Safe to share between tasks."""

    def __init__(
        self, client: AsyncClient | str, *, cluster: bool = False, **options: Unpack[RedisOptions]
    ) -> None:
        super().__init__(**options)
        self._owns_client = isinstance(client, str)
        self.client: AsyncClient = (
            _async_client(client, cluster) if isinstance(client, str) else client
        )
        self._scripts = {
            name: self.client.register_script(script_source(name)) for name in SCRIPT_NAMES
        }
        self._wakeups = Wakeups()
        self._freed = AsyncFreedListener(self.client, freed_pattern(self.prefix), self._wakeups)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncRedisStore:
        return cls(url, **options)

    async def aclose(self) -> None:
        await self._freed.aclose()
        if self._owns_client:
            await self.client.aclose()

    async def await_freed(self, counter: Counter, timeout: float) -> bool:
        """As ``RedisStore.wait_freed``, for a task."""
        await self._freed.ensure()
        return await self._wakeups.await_(self.freed_channel(counter.tag), timeout)

    # -- AsyncStore ----------------------------------------------------------------
    async def areserve(
        self,
        reservation_id: str,
        counters: tuple[Counter, ...],
        amount: int,
        lease_s: float,
        tokens: int = 0,
    ) -> ReserveOutcome:
        await self._reconcile()
        try:
            plan = self.reserve_plan(reservation_id, counters, amount, lease_s, tokens)
            return await self._drive(plan)
        except StoreUnavailable:
            if self.fail == "closed":
                raise
            return self.reserve_locally(reservation_id, counters, amount, lease_s, tokens)

    async def asettle(
        self, reservation: Reservation, actual: int, tokens: int | None = None
    ) -> bool:
        if isinstance(reservation, LocalReservation):
            applied = self.fail_open.settle(reservation, actual, tokens)
            await self._reconcile()
            return applied
        await self._reconcile()
        return await self._drive(self.settle_plan(reservation, actual, tokens))

    async def arelease(self, reservation: Reservation) -> bool:
        if isinstance(reservation, LocalReservation):
            return self.fail_open.release(reservation)
        return await self._drive(self.release_plan(reservation))

    async def astatus(self, counter: Counter) -> CounterStatus:
        await self._reconcile()
        try:
            return await self._drive(self.status_plan(counter))
        except StoreUnavailable:
            if self.fail == "closed":
                raise
            return self.local.status(counter)

    async def arenew(self, reservation: Reservation, lease_s: float) -> float | None:
        if isinstance(reservation, LocalReservation):
            return self.local.renew(reservation, lease_s)
        return await self._drive(self.renew_plan(reservation, lease_s))

    # -- AsyncStoredLimits ----------------------------------------------------------
    async def alimit_book(self) -> LimitBook:
        book = self.cached_book()
        if book is not None:
            return book
        try:
            return await self._drive(self.book_plan())
        except StoreUnavailable:
            if self.fail == "closed":
                raise
            return self.stale_book()

    async def aput_limit(self, limit: Limit) -> None:
        await self._drive(self.put_limit_plan(limit))

    async def adrop_limit(self, ident: LimitId) -> bool:
        return await self._drive(self.drop_limit_plan(ident))

    async def aput_plan(self, subject: tuple[str, str], plan: str | None) -> None:
        await self._drive(self.put_plan_plan(subject, plan))

    # -- I/O -----------------------------------------------------------------------
    async def _reconcile(self) -> None:
        """Charge what fail-open spent locally into Redis, if any, before going on."""
        if self.fail_open.pending:
            with contextlib.suppress(StoreUnavailable):
                await self._drive(self.reconcile_plan())

    async def _drive(self, plan: Plan[T]) -> T:
        reply: Any = None
        error: StoreUnavailable | None = None
        while True:
            try:
                call = plan.send(reply) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            try:
                reply, error = await self._execute(call), None
            except StoreUnavailable as exc:
                reply, error = None, exc

    async def _execute(self, call: ScriptCall) -> Any:
        how = self._health.admit()
        if how == "skip":
            raise self._health.skipped()
        script = self._scripts[call.script]
        try:
            try:
                reply = await script(keys=call.keys, args=call.args)
            except Exception as exc:
                if how == "probe" or not is_transient(exc):
                    raise
                retrying = AsyncRetrying(**_retry_policy(self.retry_total_s))
                reply = await retrying(script, keys=call.keys, args=call.retry_args)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise self._health.failed(exc) from exc
        self._health.recovered()
        return reply


def _sync_client(url: str, cluster: bool) -> SyncClient:
    if cluster:
        return redis.cluster.RedisCluster.from_url(url, **_URL_DEFAULTS)
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **_URL_DEFAULTS)


def _async_client(url: str, cluster: bool) -> AsyncClient:
    if cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(url, **_URL_DEFAULTS)
    from redis.asyncio.retry import Retry as AsyncRetry

    return redis.asyncio.Redis.from_url(url, retry=AsyncRetry(NoBackoff(), 0), **_URL_DEFAULTS)
