"""Guard overhead per call through the public API, memory store and Redis.

    /tmp/venv/bin/python bench/bench_overhead.py [--quick] [--json] [--url redis://127.0.0.1:6379/11]
    /tmp/venv/bin/python bench/bench_overhead.py --profile memory|redis   # pyinstrument, hot path

What one guarded call costs when the LLM call itself is free: estimation is
excluded (``bg.admit_cost`` or a fixed ``estimate=``), so this is the price
of reserve + settle + frames + bookkeeping.

1. Per call. Memory store: ``with bg.budget(tenant=...)`` around
   ``bg.admit_cost(n)`` + ``admission.settle_nanos(n)``, and an
   ``@bg.budget(estimate=...)`` function, net of a bare loop, and as a
   multiple of one dict update (a reference that scales with the machine).
   Redis: the same calls against a raw loop of two EVALSHA round trips
   (the trivial scripts of bench_redis.py) on the same connection, in the
   same run, and against budgetguard's own two scripts called by hand (what
   the server does for a guarded call, with next to no Python around it).
2. Work: overhead against the number of limits a call is checked against
   (1, 4, 16: all tagged by the tenant, so one Redis slot and one round trip
   each way) and against the number of reservations held by other calls
   (live holds, then the tombstones they leave once settled, and for the
   memory store a backlog of expired leases to sweep).

Rounds are interleaved (reference, then each variant, round after round) and
the median of the rounds is reported, so a noisy neighbour shifts all
columns alike. Targets (issue #6): memory under 20 us per guarded call,
Redis within 1.3x of the raw two-EVALSHA loop.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from typing import Any

import redis
from _report import header, machine, table
from bench_redis import RAW_RESERVE, RAW_SETTLE

import budgetguard as bg
from budgetguard._core.windows import window_span
from budgetguard.stores import MemoryStore, RedisStore
from budgetguard.stores.redis.plans import script_source

BIG = 10**6  # USD: never denied, even after millions of calls
SWEEP_PER_OP = 64  # expired leases a store operation frees (MemoryStore and the Lua scripts)
HOLD, ACTUAL = 1_000, 700  # nano-USD reserved and settled per call
WINDOWS = ("month", "day", "hour", "week", "minute", "total")
PREFIX = f"bgovh{uuid.uuid4().hex[:6]}"  # every Redis key of this run; deleted at the end

Loop = Callable[[int], None]


# -- timing ---------------------------------------------------------------------
def per_op_us(loop: Loop, n: int) -> float:
    gc.collect()
    started = time.perf_counter()
    loop(n)
    return (time.perf_counter() - started) / n * 1e6


def interleaved(loops: dict[str, Loop], n: int, rounds: int, warmup: int) -> dict[str, list[float]]:
    """µs per op of each loop, one sample per round, loops alternating within a round."""
    for loop in loops.values():
        loop(warmup)
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        for name, loop in loops.items():
            samples[name].append(per_op_us(loop, n))
    return samples


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratios(top: Sequence[float], bottom: Sequence[float], minus: Sequence[float] = ()) -> float:
    """Median of the per-round ratios (top - minus) / bottom."""
    minus = minus or [0.0] * len(top)
    return med([(t - m) / b for t, b, m in zip(top, bottom, minus, strict=True)])


# -- the loops ------------------------------------------------------------------
def bare(n: int) -> None:
    for _ in range(n):
        pass


def dict_update(n: int) -> None:
    d: dict[str, int] = {}
    for _ in range(n):
        d["acme"] = d.get("acme", 0) + ACTUAL


def with_block(n: int, **frame: Any) -> None:
    with bg.budget(tenant="acme", **frame):
        for _ in range(n):
            bg.admit_cost(HOLD).settle_nanos(ACTUAL)


def with_frames(n: int, frames: int) -> None:
    """admit + settle under ``budget(tenant, user)`` and ``frames`` nested spend_limit blocks."""
    with ExitStack() as stack:
        stack.enter_context(bg.budget(tenant="acme", user="u-1"))
        for _ in range(frames):
            stack.enter_context(bg.spend_limit(usd=BIG))
        for _ in range(n):
            bg.admit_cost(HOLD).settle_nanos(ACTUAL)


def async_with_block(n: int) -> None:
    async def run() -> None:
        async with bg.budget(tenant="acme"):
            for _ in range(n):
                admission = await bg.aadmit_cost(HOLD)
                await admission.asettle_nanos(ACTUAL)

    asyncio.run(run())


def async_bare(n: int) -> None:
    async def run() -> None:
        for _ in range(n):
            pass

    asyncio.run(run())


@bg.budget(tenant="acme", estimate=Decimal(ACTUAL) / 10**9)
def _work() -> None:
    return None


@bg.budget(tenant="acme", user=lambda user_id, **_: user_id, estimate=Decimal(ACTUAL) / 10**9)
def _work_for(user_id: str, text: str) -> None:
    return None


def decorated(n: int) -> None:
    for _ in range(n):
        _work()


def decorated_user(n: int) -> None:
    for _ in range(n):
        _work_for("u-42", "text")


def use(store: object, limits: Sequence[bg.Limit], **policy: Any) -> None:
    bg.configure(store=store, policy=bg.Policy(limits=tuple(limits), **policy))


def tenant_limit() -> list[bg.Limit]:
    return [bg.Limit(scope="tenant", usd=BIG, window="month")]


def limits_for(count: int) -> tuple[list[bg.Limit], int]:
    """``count`` counters of one tenant: policy limits first, then nested run frames."""
    pool = [bg.Limit(scope=s, usd=BIG, window=w) for s in ("tenant", "user") for w in WINDOWS]
    chosen = pool[:count]
    return chosen, count - len(chosen)


def check_counters(expected: int, frames: int) -> None:
    with ExitStack() as stack:
        stack.enter_context(bg.budget(tenant="acme", user="u-1"))
        for _ in range(frames):
            stack.enter_context(bg.spend_limit(usd=BIG))
        admission = bg.admit_cost(HOLD)
        admission.settle_nanos(ACTUAL)
    assert len(admission.counters) == expected, (len(admission.counters), expected)


# -- memory store ---------------------------------------------------------------
def memory_per_call(n: int, rounds: int) -> dict[str, Any]:
    use("memory://", tenant_limit())
    s = interleaved(
        {
            "bare": bare,
            "dict": dict_update,
            "with": with_block,
            "decorated": decorated,
            "decorated_user": decorated_user,
            "async_bare": async_bare,
            "async_with": async_with_block,
        },
        n,
        rounds,
        warmup=min(n, 2000),
    )
    rows = {}
    for name, base in (
        ("with", "bare"),
        ("decorated", "bare"),
        ("decorated_user", "bare"),
        ("async_with", "async_bare"),
    ):
        net = [g - b for g, b in zip(s[name], s[base], strict=True)]
        rows[name] = {
            "net_us": med(net),
            "best_us": min(net),
            "x_dict_update": ratios(s[name], s["dict"], s[base]),
        }
    return {
        "bare_us": med(s["bare"]),
        "dict_update_us": med(s["dict"]),
        "calls": rows,
        "samples": s,
    }


def memory_by_limits(n: int, rounds: int) -> dict[int, float]:
    out = {}
    for count in (1, 4, 16):
        limits, frames = limits_for(count)
        use("memory://", limits)
        check_counters(count, frames)
        s = interleaved(
            {"bare": bare, "call": lambda k, f=frames: with_frames(k, f)},  # type: ignore[misc]
            n,
            rounds,
            warmup=min(n, 1000),
        )
        out[count] = med([c - b for c, b in zip(s["call"], s["bare"], strict=True)])
    return out


class SkewedClock:
    """A wall clock that can jump forward: expires a backlog of leases at once."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.time() + self.skew


def hold(k: int) -> list[bg.Admission]:
    with bg.budget(tenant="acme"):
        return [bg.admit_cost(HOLD) for _ in range(k)]


def measure(n: int, rounds: int) -> float:
    return med([per_op_us(with_block, n) for _ in range(rounds)])


def sweep_us(clock: SkewedClock, calls: int) -> float:
    """µs per call of the first ``calls`` calls after every held lease expired at once."""
    with bg.budget(tenant="acme"):
        for _ in range(200):  # warm, in the same frame
            bg.admit_cost(HOLD).settle_nanos(ACTUAL)
        gc.collect()
        clock.skew = 61.0
        started = time.perf_counter()
        for _ in range(calls):
            bg.admit_cost(HOLD).settle_nanos(ACTUAL)
        return (time.perf_counter() - started) / calls * 1e6


def memory_by_held(sizes: Sequence[int], n: int, rounds: int) -> list[dict[str, float]]:
    out = []
    for k in sizes:
        use("memory://", tenant_limit())
        with_block(min(n, 1000))
        held = hold(k)
        live = measure(n, rounds)
        for admission in held:
            admission.settle_nanos(ACTUAL)
        tombs = measure(n, rounds)
        # Crashed callers: k leases nobody will settle, all past their end at once.
        # Each store operation frees up to 64 (reserve + settle: 128 per call);
        # timed over the calls that drain them (at most the first 100).
        clock = SkewedClock()
        use(MemoryStore(clock=clock), tenant_limit(), lease_s=60)
        hold(k)
        sweeping = sweep_us(clock, calls=100)
        out.append({"held": k, "live_us": live, "tombstones_us": tombs, "sweep_us": sweeping})
    return out


# -- Redis ----------------------------------------------------------------------
def redis_client(url: str) -> redis.Redis | None:
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"(Redis at {url} unreachable: {exc}; Redis sections skipped)", file=sys.stderr)
        return None
    return client


_prefixes = (f"{PREFIX}{i}" for i in itertools.count())


def redis_store(client: redis.Redis) -> RedisStore:
    return RedisStore(client, prefix=next(_prefixes))


def raw_loop(client: redis.Redis) -> Loop:
    reserve, settle = client.register_script(RAW_RESERVE), client.register_script(RAW_SETTLE)
    keys = [f"{PREFIX}:{{raw}}:r:x", f"{PREFIX}:{{raw}}:leases", f"{PREFIX}:{{raw}}:c:b:0"]

    def raw(n: int) -> None:
        for _ in range(n):
            rid = uuid.uuid4().hex  # ids are client-made in both loops
            reserve(keys=keys, args=[HOLD, rid])
            settle(keys=keys, args=[ACTUAL, rid])

    return raw


def own_scripts_loop(client: redis.Redis) -> Loop:
    """budgetguard's own reserve.lua + settle.lua, arguments written out by hand:
    the server's share of a guarded call with next to no Python around it."""
    reserve = client.register_script(script_source("reserve"))
    settle = client.register_script(script_source("settle"))
    at, day_ms, lease_ms = f"{PREFIX}own:{{acme}}", str(86_400_000), 600_000
    index = f"{at}:leases"
    limit = BIG * 10**9

    def own(n: int) -> None:
        start, end = window_span("month", time.time())
        bucket = f"{at}:c:tenant=acme:month:{start}"
        for _ in range(n):
            rid = uuid.uuid4().hex
            keys = [f"{at}:r:{rid}", index, bucket]
            head = [at, day_ms, day_ms, rid]
            reserve(keys=keys, args=[*head, HOLD, lease_ms, "0", limit, start, end, "c", HOLD, "0"])
            settle(keys=keys, args=[*head, end, "c", ACTUAL, "0"])

    return own


def redis_per_call(client: redis.Redis, n: int, rounds: int) -> dict[str, Any]:
    use(redis_store(client), tenant_limit())
    s = interleaved(
        {
            "raw": raw_loop(client),
            "own": own_scripts_loop(client),
            "with": with_block,
            "decorated": decorated,
        },
        n,
        rounds,
        warmup=min(n, 300),
    )
    rows = {
        name: {
            "us": med(s[name]),
            "x_raw": ratios(s[name], s["raw"]),
            "x_own": ratios(s[name], s["own"]),
            "over_raw_us": med([g - r for g, r in zip(s[name], s["raw"], strict=True)]),
        }
        for name in ("own", "with", "decorated")
    }
    return {"raw_us": med(s["raw"]), "calls": rows, "samples": s}


def redis_by_limits(client: redis.Redis, n: int, rounds: int) -> dict[int, dict[str, float]]:
    raw = raw_loop(client)
    out = {}
    for count in (1, 4, 16):
        limits, frames = limits_for(count)
        use(redis_store(client), limits)
        check_counters(count, frames)
        s = interleaved(
            {"raw": raw, "call": lambda k, f=frames: with_frames(k, f)},  # type: ignore[misc]
            n,
            rounds,
            warmup=min(n, 200),
        )
        out[count] = {"us": med(s["call"]), "x_raw": ratios(s["call"], s["raw"])}
    return out


def redis_by_held(
    client: redis.Redis, sizes: Sequence[int], n: int, rounds: int
) -> list[dict[str, float]]:
    raw = raw_loop(client)
    out = []
    for k in sizes:
        use(redis_store(client), tenant_limit())
        with_block(min(n, 200))
        held = hold(k)
        live = interleaved({"raw": raw, "call": with_block}, n, rounds, warmup=0)
        for admission in held:
            admission.settle_nanos(ACTUAL)
        tombs = interleaved({"raw": raw, "call": with_block}, n, rounds, warmup=0)
        out.append(
            {
                "held": k,
                "live_us": med(live["call"]),
                "live_x_raw": ratios(live["call"], live["raw"]),
                "tombstones_us": med(tombs["call"]),
                "tombstones_x_raw": ratios(tombs["call"], tombs["raw"]),
            }
        )
        cleanup(client)
    return out


def cleanup(client: redis.Redis) -> None:
    batch: list[bytes] = []
    for key in client.scan_iter(f"{PREFIX}*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)


# -- profiling --------------------------------------------------------------------
def profile(target: str, url: str, n: int) -> None:
    from pyinstrument import Profiler

    client = redis_client(url) if target == "redis" else None
    if target == "redis" and client is None:
        return
    use("memory://" if client is None else redis_store(client), tenant_limit())
    with_block(min(n, 2000))
    profiler = Profiler(interval=0.0001)
    profiler.start()
    with_block(n)
    profiler.stop()
    print(profiler.output_text(unicode=False, color=False))
    if client is not None:
        cleanup(client)


# -- report ---------------------------------------------------------------------
def fmt(us: float) -> str:
    return f"{us:.1f} µs" if us >= 1 else f"{us * 1000:.0f} ns"


def report(results: dict[str, Any]) -> str:
    out: list[str] = []
    mem = results["memory"]
    extra = [f"budgetguard {bg.__version__}"]
    if "redis" in results:
        extra.append(f"redis-server {results['redis_version']}, redis-py {redis.__version__}")
    out.append(header("Guard overhead per call", extra))
    out.append("")
    out.append(
        f"Memory store, one tenant limit. Bare loop {fmt(mem['bare_us'])}/iteration, "
        f"one dict update {fmt(mem['dict_update_us'])}; median of {results['rounds']} "
        f"interleaved rounds of {results['ops']:,} calls."
    )
    out.append("")
    names = {
        "with": "`with budget(tenant)`: `admit_cost` + `settle_nanos`",
        "decorated": "`@budget(tenant, estimate=)` function",
        "decorated_user": "`@budget(tenant, user=lambda, estimate=)` function",
        "async_with": "`async with budget(tenant)`: `aadmit_cost` + `asettle_nanos`",
    }
    rows = [
        [
            names[name],
            fmt(row["net_us"]),
            fmt(row["best_us"]),
            f"{row['x_dict_update']:.0f}x",
            "yes" if row["net_us"] < 20 else "no",
        ]
        for name, row in mem["calls"].items()
    ]
    out.append(
        table(
            ["guarded call (memory store)", "net / call", "best round", "x dict update", "< 20 µs"],
            rows,
        )
    )
    if "redis" in results:
        red = results["redis"]
        out.append("")
        out.append(
            f"Redis store ({results['url']}), one tenant limit, one connection, sequential. "
            f"raw: two EVALSHA of bench_redis.py's trivial scripts, {fmt(red['raw_us'])} "
            "per pair in this run; own scripts: budgetguard's reserve.lua + settle.lua "
            "called by hand (the server's share, next to no Python)."
        )
        out.append("")
        names["own"] = "own scripts, raw EVALSHA (reference)"
        rows = [
            [
                names[name],
                fmt(row["us"]),
                f"+{fmt(row['over_raw_us'])}",
                f"{row['x_raw']:.2f}x",
                f"{row['x_own']:.2f}x",
                "yes" if row["x_raw"] <= 1.3 else "no",
            ]
            for name, row in red["calls"].items()
        ]
        out.append(
            table(
                [
                    "guarded call (Redis store)",
                    "per call",
                    "over raw",
                    "x raw",
                    "x own scripts",
                    "<= 1.3x raw",
                ],
                rows,
            )
        )

    out.append("")
    out.append("### Overhead vs number of limits per call")
    out.append("")
    out.append(
        "Limits on tenant and user counters (month, day, hour, week, minute, total), "
        "past 12 nested `spend_limit(usd=)` frames; all in the tenant's hash tag."
    )
    out.append("")
    rows = []
    for count in (1, 4, 16):
        row = [str(count), fmt(results["limits"]["memory"][count])]
        if "redis" in results:
            r = results["limits"]["redis"][count]
            row += [fmt(r["us"]), f"{r['x_raw']:.2f}x"]
        rows.append(row)
    cols = ["limits per call", "memory net / call"]
    if "redis" in results:
        cols += ["Redis / call", "Redis x raw"]
    out.append(table(cols, rows))

    out.append("")
    out.append("### Overhead vs reservations held")
    out.append("")
    out.append(
        "K calls admitted and not settled (live holds), then the same K settled "
        "(K tombstones); memory, sweeping: K leases of crashed callers expire at once, "
        "then the next 100 calls are timed: each reserve and each settle frees at most "
        f"{SWEEP_PER_OP}, so from K = {200 * SWEEP_PER_OP:,} on every one of them sweeps a "
        "full batch, and a larger K only makes the backlog last longer (K/128 calls)."
    )
    out.append("")
    rows = []
    by_k = {r["held"]: r for r in results["held"].get("redis", [])}
    for row in results["held"]["memory"]:
        cells = [
            f"{row['held']:,}",
            fmt(row["live_us"]),
            fmt(row["tombstones_us"]),
            fmt(row["sweep_us"]),
        ]
        if "redis" in results:
            r = by_k.get(row["held"])
            cells += (
                [
                    f"{fmt(r['live_us'])} ({r['live_x_raw']:.2f}x)",
                    f"{fmt(r['tombstones_us'])} ({r['tombstones_x_raw']:.2f}x)",
                ]
                if r
                else ["-", "-"]
            )
        rows.append(cells)
    cols = ["K held", "memory: K live", "memory: K tombstones", "memory: sweeping"]
    if "redis" in results:
        cols += ["Redis: K live (x raw)", "Redis: K tombstones (x raw)"]
    out.append(table(cols, rows))
    out.append("")
    out.append(f"total bench time {results['seconds']:.0f} s")
    return "\n".join(out)


@contextmanager
def timer() -> Iterator[list[float]]:
    box = [time.perf_counter()]
    yield box
    box[0] = time.perf_counter() - box[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and rounds (~25 s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--profile", choices=("memory", "redis"))
    args = parser.parse_args()
    if args.profile:
        profile(args.profile, args.url, 100_000 if args.profile == "memory" else 10_000)
        return

    ops, rounds = (5_000, 5) if args.quick else (20_000, 7)
    r_ops, r_rounds = (500, 5) if args.quick else (1_500, 7)
    sizes = (10, 100, 1_000, 10_000) if args.quick else (10, 100, 1_000, 10_000, 100_000)
    results: dict[str, Any] = {"machine": machine(), "ops": ops, "rounds": rounds}
    with timer() as took:
        results["memory"] = memory_per_call(ops, rounds)
        results["limits"] = {"memory": memory_by_limits(ops // 2, rounds)}
        results["held"] = {"memory": memory_by_held(sizes, ops // 4, 3)}
        client = None if args.no_redis else redis_client(args.url)
        if client is not None:
            try:
                results["url"] = args.url
                results["redis_version"] = client.info("server").get("redis_version")
                results["redis"] = redis_per_call(client, r_ops, r_rounds)
                results["limits"]["redis"] = redis_by_limits(client, r_ops // 2, r_rounds)
                results["held"]["redis"] = redis_by_held(client, sizes, r_ops // 3, 5)
            finally:
                cleanup(client)
                client.close()
        bg.reset()
    results["seconds"] = took[0]
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print(report(results))


if __name__ == "__main__":
    main()
