"""Store operations as data, and the two drivers that carry them out.

The engine writes each of its procedures once, as a generator that yields
the operations it needs (``Reserve``, ``Settle``, ..., ``Sleep``, and
``Invoke`` for the caller's own SDK request) and receives their results;
``run`` carries them out on a sync ``Store`` and ``arun`` on an
``AsyncStore``. An operation that raises is thrown back into the
generator, so error handling is written once too. This is the only place
outside the stores themselves where sync and async are written twice.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from .._core.counters import Counter, Reservation
from .._core.errors import ConfigurationError
from .._core.limitbook import EMPTY_BOOK
from .base import AsyncStore, Store

__all__ = [
    "Admin",
    "Compute",
    "Flow",
    "Invoke",
    "LoadLimits",
    "Op",
    "Release",
    "Renew",
    "Reserve",
    "Settle",
    "Sleep",
    "Status",
    "arun",
    "counts_tokens",
    "run",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reserve:
    reservation_id: str
    counters: tuple[Counter, ...]
    amount: int
    lease_s: float
    tokens: int = 0
    plain: bool = True
    """Every counter counts dollars, with no soft limit: any ``Store`` can take it."""


@dataclass(frozen=True, slots=True)
class Settle:
    reservation: Reservation
    actual: int
    tokens: int | None = None
    """The tokens the call used (None: what it held)."""


@dataclass(frozen=True, slots=True)
class LoadLimits:
    """The limits the store holds (``bg.set_limit``); a store that holds none: none."""


@dataclass(frozen=True, slots=True)
class Release:
    reservation: Reservation


@dataclass(frozen=True, slots=True)
class Status:
    counter: Counter


@dataclass(frozen=True, slots=True)
class Renew:
    reservation: Reservation
    lease_s: float


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds``; with ``wake_on``, only until a call on that counter settles or
    releases, where the store can tell (``wait_freed`` / ``await_freed``)."""

    seconds: float
    wake_on: Counter | None = None


@dataclass(frozen=True, slots=True)
class Compute:
    """CPU-bound work (counting a prompt's tokens): ``run`` calls it in place, ``arun``
    in a worker thread, so it never stalls an event loop - or in place too when
    ``offload`` says the work is too small to be worth a thread."""

    fn: Callable[[], Any]
    offload: Callable[[], bool] | None = None


@dataclass(frozen=True, slots=True)
class Invoke:
    """The caller's own I/O (an SDK request): ``run`` calls ``fn``, ``arun``
    calls it and awaits what it returns, if awaitable. Whatever it raises,
    cancellation included, is thrown into the flow, which releases what it
    holds before re-raising."""

    fn: Callable[[], Any]


@dataclass(frozen=True, slots=True)
class Admin:
    """A rare store operation named by its sync method (``put_limit``): ``run`` calls
    it, ``arun`` awaits its ``a``-prefixed twin (``aput_limit``). A store without it
    cannot do it: ``ConfigurationError``."""

    method: str
    args: tuple[Any, ...]


Op = Reserve | Settle | Release | Status | Renew | Sleep | Compute | Invoke | LoadLimits | Admin
Flow = Generator[Op, Any, T]
"""A procedure as data: yields operations, receives their results, returns its own."""


class _NoStore:
    """Stands in for a store the configuration lacks: any use raises, naming why."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __getattr__(self, name: str) -> Any:
        raise ConfigurationError(self.message)


_NO_SYNC_STORE = _NoStore(
    "store: the configured store is async-only; use it from async code "
    "or configure a sync store as well"
)
_NO_ASYNC_STORE = _NoStore(
    "store: the configured store is sync-only; give an AsyncStore "
    "(e.g. AsyncRedisStore) for async code"
)


def counts_tokens(reservation: Reservation, store: object) -> bool:
    """Whether settling ``reservation`` on ``store`` takes its tokens (a store written
    before token limits takes no ``tokens=``; it is given none unless they matter)."""
    return getattr(type(store), "supports_units", False) and any(
        counter.unit == "tokens" for counter, _ in reservation.buckets
    )


T_Store = TypeVar("T_Store")


def _with_units(store: T_Store) -> T_Store:
    """``store``, if it knows token, request and soft counters (``supports_units``)."""
    if not getattr(type(store), "supports_units", False):
        raise ConfigurationError(
            f"store: {type(store).__name__} predates token, request and soft limits "
            "(Counter.unit, Counter.soft, Counter.warn_at): it would hold dollars on them "
            "or refuse instead of warning; set supports_units = True on a store that "
            "handles them (see stores/base.py), or use MemoryStore or a Redis store"
        )
    return store


def _admin(target: object, method: str) -> Callable[..., Any]:
    if isinstance(target, _NoStore):
        raise ConfigurationError(target.message)
    found = getattr(type(target), method, None)
    if found is None:
        raise ConfigurationError(
            f"store: {type(target).__name__} cannot {method.removeprefix('a')}; "
            "use a MemoryStore or a Redis store"
        )
    return getattr(target, method)  # type: ignore[no-any-return]


def run(flow: Flow[T], store: Store | None) -> T:
    """Carry ``flow`` out on a sync store (None: a flow that needs one fails, naming why)."""
    target = store if store is not None else cast(Store, _NO_SYNC_STORE)
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flow.send(reply) if error is None else flow.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            if type(op) is Reserve:
                if op.plain:  # the signature stores written before token limits take
                    reply = target.reserve(op.reservation_id, op.counters, op.amount, op.lease_s)
                else:
                    reply = _with_units(target).reserve(
                        op.reservation_id, op.counters, op.amount, op.lease_s, op.tokens
                    )
            elif type(op) is Settle:
                if op.tokens is not None and counts_tokens(op.reservation, target):
                    reply = target.settle(op.reservation, op.actual, op.tokens)
                else:
                    reply = target.settle(op.reservation, op.actual)
            elif type(op) is LoadLimits:
                # Looked up on the type: a store without limits (or none at all) has none.
                has_limits = hasattr(type(target), "limit_book")
                reply = target.limit_book() if has_limits else EMPTY_BOOK  # type: ignore[attr-defined]
            elif type(op) is Release:
                reply = target.release(op.reservation)
            elif type(op) is Status:
                reply = target.status(op.counter)
            elif type(op) is Renew:
                reply = target.renew(op.reservation, op.lease_s)
            elif type(op) is Sleep:
                waiter = getattr(target, "wait_freed", None) if op.wake_on else None
                if waiter is not None:
                    waiter(op.wake_on, op.seconds)
                else:
                    time.sleep(op.seconds)
                reply = None
            elif type(op) is Compute:
                reply = op.fn()
            elif type(op) is Admin:
                reply = _admin(target, op.method)(*op.args)
            else:
                assert type(op) is Invoke
                reply = op.fn()
            error = None
        except BaseException as exc:
            reply, error = None, exc


async def arun(flow: Flow[T], store: AsyncStore | None) -> T:
    """Carry ``flow`` out on an async store (None: as ``run``)."""
    target = store if store is not None else cast(AsyncStore, _NO_ASYNC_STORE)
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flow.send(reply) if error is None else flow.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            if type(op) is Reserve:
                if op.plain:
                    reply = await target.areserve(
                        op.reservation_id, op.counters, op.amount, op.lease_s
                    )
                else:
                    reply = await _with_units(target).areserve(
                        op.reservation_id, op.counters, op.amount, op.lease_s, op.tokens
                    )
            elif type(op) is Settle:
                if op.tokens is not None and counts_tokens(op.reservation, target):
                    reply = await target.asettle(op.reservation, op.actual, op.tokens)
                else:
                    reply = await target.asettle(op.reservation, op.actual)
            elif type(op) is LoadLimits:
                reply = (
                    await target.alimit_book()  # type: ignore[attr-defined]
                    if hasattr(type(target), "alimit_book")
                    else EMPTY_BOOK
                )
            elif type(op) is Release:
                reply = await target.arelease(op.reservation)
            elif type(op) is Status:
                reply = await target.astatus(op.counter)
            elif type(op) is Renew:
                reply = await target.arenew(op.reservation, op.lease_s)
            elif type(op) is Sleep:
                waiter = getattr(target, "await_freed", None) if op.wake_on else None
                if waiter is not None:
                    await waiter(op.wake_on, op.seconds)
                else:
                    await asyncio.sleep(op.seconds)
                reply = None
            elif type(op) is Compute:
                if op.offload is None or op.offload():
                    reply = await asyncio.to_thread(op.fn)
                else:
                    reply = op.fn()
            elif type(op) is Admin:
                reply = await _admin(target, f"a{op.method}")(*op.args)
            else:
                assert type(op) is Invoke
                reply = op.fn()
                if inspect.isawaitable(reply):
                    reply = await reply
            error = None
        except BaseException as exc:
            reply, error = None, exc
