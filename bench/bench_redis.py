"""RedisStore overhead against the floor: raw redis-py EVALSHA of comparable scripts.

    /tmp/venv/bin/python bench/bench_redis.py [--ops 5000] [--url redis://127.0.0.1:6379/14]

Side by side, on one Redis, one connection, sequential calls:

(a) raw: a trivial reserve-like and settle-like script (same key counts:
    lease record, lease index, one bucket) through ``register_script``;
(b) ``RedisStore.reserve`` + ``settle`` for one counter;
(c) the same pair raw and through ``AsyncRedisStore`` on redis.asyncio.

Round trips per guarded call are counted client-side (every command sent).
Targets: guarded within 1.3x of raw; 2 round trips per call (reserve + settle).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

from budgetguard.stores import AsyncRedisStore, Counter, RedisStore, Reservation

RAW_RESERVE = """
local t = redis.call('TIME')
redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', t[1], 'LIMIT', 0, 64)
local v = redis.call('HMGET', KEYS[3], 'spent', 'held')
redis.call('HINCRBY', KEYS[3], 'held', ARGV[1])
redis.call('HSET', KEYS[1], 's', 'held', 'a', ARGV[1])
redis.call('ZADD', KEYS[2], t[1] + 60, ARGV[2])
return {0, t[1]}
"""
RAW_SETTLE = """
redis.call('HINCRBY', KEYS[3], 'held', '-' .. ARGV[1])
redis.call('HINCRBY', KEYS[3], 'spent', ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""
DOLLARS = 10**9
COUNTER = Counter(key="bench", limit=2**53 - 1, window="day", scope="tenant", tag="bench")


def count_commands(client: Any) -> list[int]:
    """Wrap the client's command path: one entry per command sent (no pipelines here)."""
    sent = [0]
    original = client.execute_command

    def counted(*args: Any, **options: Any) -> Any:
        sent[0] += 1
        return original(*args, **options)

    client.execute_command = counted
    return sent


def timed(ops: int, step: Callable[[int], None]) -> float:
    for i in range(min(200, ops)):  # warm up: scripts loaded, connection open
        step(-i - 1)
    started = time.perf_counter()
    for i in range(ops):
        step(i)
    return (time.perf_counter() - started) / ops * 1e6


async def atimed(ops: int, step: Callable[[int], Awaitable[None]]) -> float:
    for i in range(min(200, ops)):
        await step(-i - 1)
    started = time.perf_counter()
    for i in range(ops):
        await step(i)
    return (time.perf_counter() - started) / ops * 1e6


def bench_sync(url: str, ops: int) -> dict[str, float]:
    client = redis.Redis.from_url(url)
    reserve, settle = client.register_script(RAW_RESERVE), client.register_script(RAW_SETTLE)
    keys = ["bench:{raw}:r:x", "bench:{raw}:leases", "bench:{raw}:c:bench:0"]

    def raw(i: int) -> None:
        rid = uuid.uuid4().hex  # ids are client-made in both loops
        reserve(keys=keys, args=[1000, rid])
        settle(keys=keys, args=[700, rid])

    store = RedisStore(client, prefix="bench")
    sent = count_commands(client)

    def guarded(i: int) -> None:
        outcome = store.reserve(uuid.uuid4().hex, (COUNTER,), 1000, 60)
        assert isinstance(outcome, Reservation)
        store.settle(outcome, 700)

    raw_us = timed(ops, raw)
    sent[0] = 0
    guarded_us = timed(ops, guarded)
    trips = sent[0] / (ops + min(200, ops))
    client.close()
    return {"raw": raw_us, "guarded": guarded_us, "trips": trips}


async def bench_async(url: str, ops: int) -> dict[str, float]:
    client = redis.asyncio.Redis.from_url(url)
    reserve, settle = client.register_script(RAW_RESERVE), client.register_script(RAW_SETTLE)
    keys = ["bench:{araw}:r:x", "bench:{araw}:leases", "bench:{araw}:c:bench:0"]

    async def raw(i: int) -> None:
        rid = uuid.uuid4().hex
        await reserve(keys=keys, args=[1000, rid])
        await settle(keys=keys, args=[700, rid])

    store = AsyncRedisStore(client, prefix="abench")
    sent = count_commands(client)

    async def guarded(i: int) -> None:
        outcome = await store.areserve(uuid.uuid4().hex, (COUNTER,), 1000, 60)
        assert isinstance(outcome, Reservation)
        await store.asettle(outcome, 700)

    raw_us = await atimed(ops, raw)
    sent[0] = 0
    guarded_us = await atimed(ops, guarded)
    trips = sent[0] / (ops + min(200, ops))
    await client.aclose()
    return {"raw": raw_us, "guarded": guarded_us, "trips": trips}


def cleanup(url: str) -> None:
    client = redis.Redis.from_url(url)
    for pattern in ("bench:*", "abench:*"):
        for key in client.scan_iter(pattern, count=1000):
            client.delete(key)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"))
    args = parser.parse_args()
    cleanup(args.url)
    sync = bench_sync(args.url, args.ops)
    async_ = asyncio.run(bench_async(args.url, args.ops))
    cleanup(args.url)
    info = redis.Redis.from_url(args.url).info("server")
    print(
        f"budgetguard Redis bench - {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.platform()}, {platform.python_implementation()} {platform.python_version()}, "
        f"nproc={os.cpu_count()}, redis-server {info.get('redis_version')}, "
        f"redis-py {redis.__version__}, {args.ops} ops (reserve + settle) each"
    )
    print()
    print(f"{'client':<8} {'raw 2x EVALSHA':>15} {'guarded':>10} {'ratio':>7} {'round trips':>12}")
    for name, row in (("sync", sync), ("async", async_)):
        ratio = row["guarded"] / row["raw"]
        print(
            f"{name:<8} {row['raw']:>12.1f} us {row['guarded']:>7.1f} us {ratio:>6.2f}x "
            f"{row['trips']:>12.2f}"
        )
    print()
    print("targets: ratio <= 1.30x, 2.00 round trips per guarded call (reserve + settle)")


if __name__ == "__main__":
    main()
