"""Redis stores: budgets shared by every process and machine, one Lua script per step.

``plans`` holds the logic (key naming, argument packing, reply parsing,
slot-by-slot rollback) as generators of script calls; ``client`` drives them
with redis-py, sync and async; ``lua/`` holds the scripts.
"""

from __future__ import annotations

from .client import AsyncRedisStore, RedisStore
from .plans import LocalReservation

__all__ = ["AsyncRedisStore", "LocalReservation", "RedisStore"]
