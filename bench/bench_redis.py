"""RedisStore overhead against the floor: raw redis-py EVALSHA of comparable scripts.

    python bench/bench_redis.py [--quick] [--json] [--ops N] [--rounds N] [--url redis://127.0.0.1:6379/14]

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
import json
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio

from budgetguard.stores import AsyncRedisStore, Counter, RedisStore, Reservation

sys.path.insert(0, str(Path(__file__).parent))
from _report import header, machine, table

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


def summary(raws: list[float], guardeds: list[float], trips: list[float]) -> dict[str, float]:
    """Medians over rounds; the ratio is the median of per-round ratios."""
    return {
        "raw": statistics.median(raws),
        "guarded": statistics.median(guardeds),
        "ratio": statistics.median(g / r for g, r in zip(guardeds, raws, strict=True)),
        "trips": max(trips),
    }


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


def bench_sync(url: str, ops: int, rounds: int) -> dict[str, float]:
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

    raws, guardeds, trips = [], [], []
    for _ in range(rounds):  # interleaved, so a noisy moment hits both sides of the ratio
        raws.append(timed(ops, raw))
        sent[0] = 0
        guardeds.append(timed(ops, guarded))
        trips.append(sent[0] / (ops + min(200, ops)))
    client.close()
    return summary(raws, guardeds, trips)


async def bench_async(url: str, ops: int, rounds: int) -> dict[str, float]:
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

    raws, guardeds, trips = [], [], []
    for _ in range(rounds):
        raws.append(await atimed(ops, raw))
        sent[0] = 0
        guardeds.append(await atimed(ops, guarded))
        trips.append(sent[0] / (ops + min(200, ops)))
    await client.aclose()
    return summary(raws, guardeds, trips)


def cleanup(url: str) -> None:
    client = redis.Redis.from_url(url)
    for pattern in ("bench:*", "abench:*"):
        for key in client.scan_iter(pattern, count=1000):
            client.delete(key)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=None, help="calls per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="1000 ops x 3 rounds")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    ops = args.ops or (1000 if args.quick else 3000)
    rounds = args.rounds or (3 if args.quick else 7)
    cleanup(args.url)
    sync = bench_sync(args.url, ops, rounds)
    async_ = asyncio.run(bench_async(args.url, ops, rounds))
    cleanup(args.url)
    info = redis.Redis.from_url(args.url).info("server")
    if args.json:
        print(json.dumps({"machine": machine(), "sync": sync, "async": async_}, indent=2))
        return
    print(
        header(
            "RedisStore reserve + settle vs a raw two-EVALSHA loop",
            [
                f"redis-server {info.get('redis_version')}",
                f"redis-py {redis.__version__}",
                f"{ops} calls x {rounds} interleaved rounds",
            ],
        )
    )
    print()
    rows = [
        [
            name,
            f"{row['raw']:.1f}",
            f"{row['guarded']:.1f}",
            f"{row['ratio']:.2f}x",
            f"{row['trips']:.2f}",
        ]
        for name, row in (("sync (redis-py)", sync), ("async (redis.asyncio)", async_))
    ]
    print(table(["client", "raw µs", "RedisStore µs", "ratio", "round trips / call"], rows))
    print()
    print("targets: ratio <= 1.30x, 2.00 round trips per guarded call (reserve + settle)")


if __name__ == "__main__":
    main()
