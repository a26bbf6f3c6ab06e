"""Budget stores: where reservations and spend live.

``RedisStore`` and ``AsyncRedisStore`` are imported on first use: redis-py
takes ~0.1 s to import, which a process on the embedded store never needs.
"""

from __future__ import annotations

import typing as _typing

from .base import AsyncStore, Counter, CounterStatus, Denial, Reservation, ReserveOutcome, Store
from .memory import MemoryStore

if _typing.TYPE_CHECKING:
    from .redis import AsyncRedisStore, RedisStore

__all__ = [
    "AsyncRedisStore",
    "AsyncStore",
    "Counter",
    "CounterStatus",
    "Denial",
    "MemoryStore",
    "RedisStore",
    "Reservation",
    "ReserveOutcome",
    "Store",
]


def __getattr__(name: str) -> _typing.Any:
    if name in ("AsyncRedisStore", "RedisStore"):
        from . import redis

        return getattr(redis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
