"""RedisStore / AsyncRedisStore beyond the shared contract: keys, clocks, round
trips, many processes, crashes and restarts, always on a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import free_port, start_redis_server

from budgetguard._core.errors import ConfigurationError, StoreUnavailable
from budgetguard._core.money import MAX_NANOS as MAX_EXACT
from budgetguard._core.windows import CALENDAR_WINDOWS, window_span
from budgetguard.stores import (
    AsyncRedisStore,
    AsyncStore,
    Counter,
    Denial,
    RedisStore,
    Reservation,
    Store,
)
from budgetguard.stores.redis import LocalReservation

DOLLAR = 1_000_000_000


def counter(
    key: str = "k",
    limit: int = 1_000,
    window: str = "day",
    tag: str = "t",
    tz: str = "UTC",
) -> Counter:
    return Counter(key=key, limit=limit, window=window, scope="tenant", tag=tag, tz=tz)  # type: ignore[arg-type]


def rid() -> str:
    return uuid.uuid4().hex


def granted(
    store: RedisStore, counters: tuple[Counter, ...], amount: int, lease: float = 60
) -> Reservation:
    outcome = store.reserve(rid(), counters, amount, lease)
    assert isinstance(outcome, Reservation), outcome
    return outcome


@pytest.fixture
def store(redis_client: redis.Redis) -> RedisStore:
    return RedisStore(redis_client)


class CountingCalls:
    """Counts commands sent by one redis-py client: round trips, without MONITOR."""

    def __init__(self, client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commands: list[str] = []
        original = client.execute_command

        def counted(*args: Any, **options: Any) -> Any:
            self.commands.append(str(args[0]))
            return original(*args, **options)  # type: ignore[no-untyped-call]

        monkeypatch.setattr(client, "execute_command", counted)

    def take(self) -> list[str]:
        taken, self.commands = self.commands, []
        return taken


# -- API -----------------------------------------------------------------------
def test_stores_satisfy_their_protocols(redis_url: str) -> None:
    sync, async_ = RedisStore.from_url(redis_url), AsyncRedisStore.from_url(redis_url)
    assert isinstance(sync, Store) and not isinstance(sync, AsyncStore)
    assert isinstance(async_, AsyncStore) and not isinstance(async_, Store)
    sync.close()


def test_bad_options_are_configuration_errors(redis_client: redis.Redis) -> None:
    with pytest.raises(ConfigurationError, match="fail"):
        RedisStore(redis_client, fail="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisStore(redis_client, prefix="a{b}")
    store = RedisStore(redis_client)
    with pytest.raises(ConfigurationError, match="tag"):
        store.reserve(rid(), (counter(tag="a}b"),), 1, 60)
    with pytest.raises(ConfigurationError, match="limit"):
        store.reserve(rid(), (counter(limit=MAX_EXACT + 1),), 1, 60)
    with pytest.raises(ConfigurationError, match="amount"):
        store.reserve(rid(), (counter(),), MAX_EXACT + 1, 60)


# -- data model ------------------------------------------------------------------
def test_key_layout_and_expiry(store: RedisStore, redis_client: redis.Redis) -> None:
    day, total, run = counter("d"), counter("t", window="total"), counter("r", window="run")
    reservation = granted(store, (day, total, run), 10)
    start, end = window_span("day", time.time())
    assert end is not None
    assert reservation.buckets == ((day, start), (total, 0), (run, 0))
    assert redis_client.hgetall(f"bg:{{t}}:c:d:{start}") == {b"held": b"10"}
    assert redis_client.hgetall(f"bg:{{t}}:r:{reservation.id}")[b"s"] == b"held"
    assert redis_client.zscore("bg:{t}:leases", reservation.id) is not None
    server_now = redis_client.time()[0]
    day_ttl = redis_client.ttl(f"bg:{{t}}:c:d:{start}")
    assert abs(day_ttl - (end + 86_400 - server_now)) <= 2  # window end + grace
    assert redis_client.ttl("bg:{t}:c:t:0") == -1  # totals never expire
    assert 86_400 <= redis_client.ttl("bg:{t}:c:r:0") <= 86_400 + 61  # grace after last touch
    store.settle(reservation, 7)
    assert redis_client.hgetall("bg:{t}:c:t:0") == {b"held": b"0", b"spent": b"7"}
    assert redis_client.hgetall(f"bg:{{t}}:r:{reservation.id}") == {b"s": b"done"}
    assert 0 < redis_client.ttl(f"bg:{{t}}:r:{reservation.id}") <= 86_400  # tombstone
    assert redis_client.zscore("bg:{t}:leases", reservation.id) is None


def test_money_above_1e14_stays_exact(store: RedisStore) -> None:
    """Lua would print 1e15 as '1e+15'; amounts travel as strings to HINCRBY."""
    big = counter(limit=MAX_EXACT)
    amount = 5 * 10**15 + 3
    reservation = granted(store, (big,), amount)
    assert store.status(big).held == amount
    store.settle(reservation, amount - 1)
    assert store.status(big).spent == amount - 1
    denial = store.reserve(rid(), (big,), MAX_EXACT - amount + 2, 60)
    assert isinstance(denial, Denial) and denial.spent == amount - 1


@pytest.mark.parametrize("tz", ["UTC", "Etc/GMT+5", "Etc/GMT-14", "Asia/Kolkata"])
@pytest.mark.parametrize("window", sorted(CALENDAR_WINDOWS))
def test_buckets_agree_with_window_span(store: RedisStore, window: str, tz: str) -> None:
    """UTC and fixed-offset zones: the bucket of server TIME, as window_span computes it."""
    c = counter(f"{window}-{tz}", window=window, tz=tz)
    before = store.client.time()
    reservation = granted(store, (c,), 1)
    after = store.client.time()
    spans = {window_span(window, t[0] + t[1] / 1e6, tz) for t in (before, after)}
    status = store.status(c)
    assert (reservation.buckets[0][1], status.resets_at) in spans
    assert (status.window_start, status.resets_at) in spans


def test_a_skewed_client_clock_still_uses_the_servers_bucket(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's TIME decides: a client 40 days ahead is corrected, at one extra round trip."""
    calls = CountingCalls(store.client, monkeypatch)  # type: ignore[arg-type]
    store._clock.offset = 40 * 86_400.0
    c = counter(window="month")
    reservation = granted(store, (c,), 1)
    server_now = float(store.client.time()[0])
    assert reservation.buckets[0][1] == window_span("month", server_now)[0]
    assert calls.take().count("EVALSHA") == 2  # stale bucket, then the right one
    granted(store, (c,), 1)
    assert calls.take().count("EVALSHA") == 1  # the offset was learned
    assert abs(store._clock.offset) < 5


# -- round trips -------------------------------------------------------------------
def test_one_round_trip_per_reserve_and_per_settle(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    counters = (counter("a"), counter("b", window="month"), counter("c", window="total"))
    granted(store, counters, 1)  # loads the scripts, learns the clock
    calls = CountingCalls(store.client, monkeypatch)  # type: ignore[arg-type]
    reservation = granted(store, counters, 1)
    assert calls.take() == ["EVALSHA"]
    store.settle(reservation, 1)
    assert calls.take() == ["EVALSHA"]


def test_the_stored_limits_cost_one_round_trip_per_refresh_not_per_call(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guarded calls on Redis read the limits held in the store once per
    ``limits_refresh_s`` (and at once after this process writes one), never per call."""
    import budgetguard as bg
    from budgetguard._engine import config

    store = RedisStore(redis_client, prefix=f"rt{uuid.uuid4().hex[:8]}", limits_refresh_s=0.3)
    config.configure(store=store, policy=bg.Policy())
    try:
        bg.set_limit(bg.Limit(scope="tenant", key="acme", usd=1, window="day"))

        def calls_made(n: int) -> list[str]:
            calls = CountingCalls(redis_client, monkeypatch)
            with bg.spend_limit(tenant="acme"):
                for _ in range(n):
                    bg.admit_cost(1_000).settle_nanos(1_000)
            monkeypatch.undo()
            return calls.take()

        assert len(calls_made(20)) == 1 + 20 * 2  # the book read after the write, then 2/call
        assert len(calls_made(20)) == 20 * 2  # within 0.3 s: no read
        time.sleep(0.35)
        assert len(calls_made(20)) == 1 + 20 * 2  # stale: one read, answered "unchanged"
        assert bg.status("tenant", "acme").spent == Decimal("0.00006")
    finally:
        config.reset()


def test_two_tags_take_one_round_trip_each_and_roll_back(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = counter("a", tag="t1"), counter("b", limit=10, tag="t2")
    granted(store, (first,), 1)
    store.release(granted(store, (counter("warm-up"),), 1))  # every script now loaded
    calls = CountingCalls(store.client, monkeypatch)  # type: ignore[arg-type]
    reservation = granted(store, (first, second), 5)
    assert calls.take() == ["EVALSHA", "EVALSHA"]
    denial = store.reserve(rid(), (first, second), 6, 60)
    assert isinstance(denial, Denial) and denial.counter == second
    assert calls.take() == ["EVALSHA", "EVALSHA", "EVALSHA"]  # t1, t2 denied, t1 rolled back
    assert store.status(first).held == 1 + 5  # the warm-up hold and ours, not the rolled back one
    store.settle(reservation, 5)
    assert calls.take() == ["EVALSHA", "EVALSHA", "EVALSHA"]  # 2 settles + the status


def test_a_resent_reserve_recognises_its_own_hold(store: RedisStore) -> None:
    """A reply lost after the script ran: the retry gets the hold, not 'already used'."""
    c = counter()
    plan = store.reserve_plan("lost", (c,), 10, 60)
    call = next(plan)
    script = store._scripts["reserve"]
    script(keys=call.keys, args=call.args)  # ran; pretend the reply was lost
    assert int(script(keys=call.keys, args=call.args)[0]) == 3  # a plain second call
    reply = script(keys=call.keys, args=call.retry_args)
    with pytest.raises(StopIteration) as done:
        plan.send(reply)
    assert isinstance(done.value.value, Reservation)
    assert store.status(c).held == 10  # held once


def test_scripts_reload_after_script_flush(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    proc = start_redis_server(port, tmp_path)
    try:
        store = RedisStore(f"redis://127.0.0.1:{port}/0")
        granted(store, (counter(),), 1)
        store.client.script_flush()  # NOSCRIPT next time: redis-py reloads
        granted(store, (counter(),), 1)
        assert store.status(counter()).held == 2
        store.close()
    finally:
        proc.kill()
        proc.wait()


# -- async specifics -------------------------------------------------------------------
async def test_async_store_shares_state_with_the_sync_one(
    store: RedisStore, redis_url: str
) -> None:
    async_store = AsyncRedisStore.from_url(redis_url)
    try:
        c = counter(limit=100)
        reservation = await async_store.areserve(rid(), (c,), 60, 60)
        assert isinstance(reservation, Reservation)
        assert isinstance(store.reserve(rid(), (c,), 60, 60), Denial)
        assert store.settle(reservation, 10)
        assert not await async_store.asettle(reservation, 10)
        assert (await async_store.astatus(c)).spent == 10
    finally:
        await async_store.aclose()


# -- many processes ----------------------------------------------------------------------
HAMMER_PROCESSES, HAMMER_THREADS = 8, 8
HAMMER_MAX_ESTIMATE = 1_000_000  # 0.1 cent: ~4000 settles fill the dollar


def _hammer_process(url: str, seed: int, results: Any) -> None:
    store = RedisStore.from_url(url, prefix="hammer")
    c = counter("dollar", limit=DOLLAR, window="day", tag="hammer")
    stats = {"granted": 0, "denied": 0, "errors": 0}
    lock = threading.Lock()

    def worker(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        misses = 0
        while misses < 30:
            estimate = rng.randint(1, HAMMER_MAX_ESTIMATE)
            try:
                outcome = store.reserve(uuid.uuid4().hex, (c,), estimate, 30)
                if isinstance(outcome, Denial):
                    misses += 1
                    with lock:
                        stats["denied"] += 1
                    time.sleep(0.001)
                    continue
                misses = 0
                if rng.random() < 0.1:
                    store.release(outcome)  # a failed call
                else:
                    store.settle(outcome, rng.randint(0, estimate))
                    store.settle(outcome, estimate)  # a second settle changes nothing
                with lock:
                    stats["granted"] += 1
            except Exception:  # pragma: no cover - reported to the parent
                with lock:
                    stats["errors"] += 1
                raise

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(HAMMER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    results.put(stats)


def test_hammer_many_processes_never_overspend(redis_client: redis.Redis, redis_url: str) -> None:
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    started = time.monotonic()
    procs = [
        ctx.Process(target=_hammer_process, args=(redis_url, seed, results))
        for seed in range(HAMMER_PROCESSES)
    ]
    for proc in procs:
        proc.start()
    stats = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(10)
        assert proc.exitcode == 0
    elapsed = time.monotonic() - started
    store = RedisStore(redis_client, prefix="hammer")
    status = store.status(counter("dollar", limit=DOLLAR, window="day", tag="hammer"))
    assert sum(s["errors"] for s in stats) == 0
    print(f"hammer: {stats} in {elapsed:.1f}s")
    assert sum(s["granted"] for s in stats) > 2_000
    assert status.spent <= DOLLAR
    assert status.held == 0
    assert status.spent >= DOLLAR * 95 // 100  # no leaked or stranded holds


async def test_many_tasks_never_overspend(redis_client: redis.Redis, redis_url: str) -> None:
    store = AsyncRedisStore.from_url(redis_url, prefix="tasks")
    c = counter("dollar", limit=DOLLAR // 10, tag="tasks")

    async def worker(seed: int) -> None:
        rng = random.Random(seed)
        misses = 0
        while misses < 10:
            estimate = rng.randint(1, HAMMER_MAX_ESTIMATE)
            outcome = await store.areserve(uuid.uuid4().hex, (c,), estimate, 30)
            if isinstance(outcome, Denial):
                misses += 1
                await asyncio.sleep(0.001)
                continue
            misses = 0
            await asyncio.sleep(0)  # other tasks reserve while this call is "in flight"
            if rng.random() < 0.1:
                await store.arelease(outcome)
            else:
                await store.asettle(outcome, rng.randint(0, estimate))

    try:
        await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(100))), 30)
        status = await store.astatus(c)
    finally:
        await store.aclose()
    assert status.spent <= c.limit
    assert status.held == 0
    assert status.spent >= c.limit * 95 // 100


# -- crashes -------------------------------------------------------------------------------
def test_a_killed_process_hold_is_freed_after_its_lease(store: RedisStore, redis_url: str) -> None:
    lease = 0.5
    c = counter("crash", limit=100)
    code = textwrap.dedent(
        f"""
        import sys, time
        from budgetguard.stores import Counter, RedisStore, Reservation
        store = RedisStore.from_url({redis_url!r})
        c = Counter(key="crash", limit=100, window="day", scope="tenant", tag="t")
        outcome = store.reserve("doomed", (c,), 100, {lease})
        print("held" if isinstance(outcome, Reservation) else "denied", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert store.status(c).held == 100
        assert isinstance(store.reserve(rid(), (c,), 1, 60), Denial)
        time.sleep(lease + 0.2)
        assert store.status(c).held == 0
        assert isinstance(store.reserve(rid(), (c,), 100, 60), Reservation)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_sweep_is_bounded_and_a_backlog_drains(
    store: RedisStore, redis_client: redis.Redis
) -> None:
    """A reserve that fits frees 64 expired leases; a status (or a denial) frees them all,
    so it never shows a hold whose lease is over."""
    c = counter("backlog", limit=10_000)
    for _ in range(150):
        granted(store, (c,), 1, lease=0.05)
    time.sleep(0.1)
    leases = store.index_key(c.tag)
    granted(store, (c,), 1, lease=60)
    assert redis_client.zcard(leases) == 150 - 64 + 1
    assert store.status(c).held == 1
    assert redis_client.zcard(leases) == 1


# -- outages -------------------------------------------------------------------------------
class OwnRedis:
    """A redis-server on a free port with fsync'ed AOF: stop it, restart it, same data."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_redis_server(
            self.port, self.workdir, "--appendonly", "yes", "--appendfsync", "always"
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None:
            server.proc.kill()
            server.proc.wait()


def test_restart_fail_closed_raises_and_loses_nothing_acknowledged(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore.from_url(own_redis.url, retry_total_s=0.3, probe_interval_s=0.1)
    c = counter("acked", limit=DOLLAR, window="month")
    for _ in range(20):
        store.settle(granted(store, (c,), 1_000), 700)
    in_flight = granted(store, (c,), 1_000)
    own_redis.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        store.reserve(rid(), (c,), 1, 60)
    assert time.monotonic() - started < 1.5  # bounded by retry_total_s
    assert isinstance(raised.value.__cause__, redis.ConnectionError)
    with pytest.raises(StoreUnavailable):
        store.settle(in_flight, 500)  # the caller keeps it and retries later
    with pytest.raises(StoreUnavailable):
        store.status(c)
    own_redis.start()
    time.sleep(0.15)  # the next probe
    assert store.settle(in_flight, 500)  # retried after the outage: charged once
    status = store.status(c)
    assert (status.spent, status.held) == (20 * 700 + 500, 0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "unreachable" in errors[0].getMessage()
    assert any("answers again" in r.getMessage() for r in caplog.records)
    store.close()


def test_restart_fail_open_counts_locally_and_logs_once(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore.from_url(
        own_redis.url, fail="open", retry_total_s=0.3, probe_interval_s=0.1, open_allowance=0.5
    )
    c = counter("open", limit=10_000)
    store.settle(granted(store, (c,), 1_000), 1_000)
    own_redis.stop()
    # Locally: at most half the limit (open_allowance), and never past limit - known spend.
    local = [store.reserve(rid(), (c,), 1_000, 60) for _ in range(5)]
    assert all(isinstance(r, LocalReservation) for r in local)
    assert isinstance(store.reserve(rid(), (c,), 1, 60), Denial)  # the allowance is used up
    for reservation in local:
        assert isinstance(reservation, Reservation)
        assert store.settle(reservation, 600)  # settles locally
        assert not store.settle(reservation, 600)
    assert store.status(c).spent == 3_000  # the local view during the outage
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # loud, but once per outage
    own_redis.start()
    time.sleep(0.15)
    back = store.reserve(rid(), (c,), 1_000, 60)
    assert isinstance(back, Reservation) and not isinstance(back, LocalReservation)
    store.settle(back, 1_000)
    assert store.status(c).spent == 1_000 + 3_000 + 1_000  # the local spend reconciled
    assert any("5 reservations were counted locally" in r.getMessage() for r in caplog.records)
    assert any("now counted in Redis" in r.getMessage() for r in caplog.records)
    store.close()


def test_fail_open_is_bounded_across_processes_and_reconciled(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Four processes on a $0.30 limit, Redis down: each used to get a fresh, empty local
    budget (4.96x the limit spent) and Redis never learned of it. Now each may spend at
    most open_allowance (10%) of the limit on its own, never past what Redis last
    reported, and all of it is in Redis once it answers."""
    limit = 300_000_000
    c = counter("fleet", limit=limit)
    stores = [
        RedisStore.from_url(own_redis.url, fail="open", retry_total_s=0.2, probe_interval_s=0.05)
        for _ in range(4)  # one per process: each has its own local view
    ]
    for store in stores:  # each learns the spend so far with its own calls
        store.settle(granted(store, (c,), 60_000_000), 60_000_000)
    known = 4 * 60_000_000
    own_redis.stop()
    spent_locally = 0
    for store in stores:
        while isinstance(reservation := store.reserve(rid(), (c,), 1_000_000, 60), Reservation):
            assert isinstance(reservation, LocalReservation)
            store.settle(reservation, 1_000_000)
            spent_locally += 1_000_000
    assert known + spent_locally <= limit + 4 * limit // 10  # at most 4 x 10% over
    own_redis.start()
    time.sleep(0.1)
    for store in stores:
        store.status(c)  # any call, once Redis answers, reconciles
    back = stores[0].reserve(rid(), (c,), 1, 60)
    assert isinstance(back, Denial)  # the fleet's local spend is in Redis
    assert back.spent == known + spent_locally
    for store in stores:
        store.close()


async def test_async_restart_fail_open_and_closed(own_redis: OwnRedis) -> None:
    closed = AsyncRedisStore.from_url(own_redis.url, retry_total_s=0.3, probe_interval_s=0.1)
    opened = AsyncRedisStore.from_url(
        own_redis.url, fail="open", retry_total_s=0.3, probe_interval_s=0.1
    )
    c = counter("async-outage", limit=10_000)
    done = await closed.areserve(rid(), (c,), 100, 60)
    assert isinstance(done, Reservation)
    assert await closed.asettle(done, 100)
    own_redis.stop()
    with pytest.raises(StoreUnavailable):
        await closed.areserve(rid(), (c,), 1, 60)
    local = await opened.areserve(rid(), (c,), 100, 60)
    assert isinstance(local, LocalReservation)
    assert await opened.asettle(local, 50)
    own_redis.start()
    await asyncio.sleep(0.15)
    assert (await closed.astatus(c)).spent == 100
    await closed.aclose()
    await opened.aclose()


def test_status_of_an_unused_counter_is_empty(store: RedisStore) -> None:
    status = store.status(counter("never", window="week"))
    start, end = window_span("week", time.time())
    assert (status.spent, status.held, status.window_start, status.resets_at) == (0, 0, start, end)
    assert status.remaining == 1_000


def test_a_tag_broken_by_an_expired_zero_hold_is_repaired(
    store: RedisStore, redis_client: redis.Redis
) -> None:
    """Earlier versions left a $0 lease behind whose sweep failed forever (HINCRBY "-0"),
    breaking every reserve, settle and status of its hash tag. Planted as they left it,
    the next script sweeps it cleanly."""
    c = counter("victim", limit=1_000)
    bucket = store.bucket_key(c, 0)
    record = store.lease_key(c.tag, "old-zero")
    redis_client.hset(bucket, mapping={"spent": 0, "held": 0})
    redis_client.hset(record, mapping={"s": "held", "a": "0", "e": "1000", "k": f'["{bucket}"]'})
    redis_client.zadd(store.index_key(c.tag), {"old-zero": 1000})
    reservation = granted(store, (c,), 300)
    assert store.settle(reservation, 120)
    status = store.status(c)
    assert (status.spent, status.held) == (120, 0)
    assert redis_client.hget(record, "s") == b"expired"


# -- a fleet half upgraded: token and request holds out of an older script's reach ----
OLD_SWEEP = """
local rec = redis.call('HMGET', KEYS[1], 's', 'a', 'k')
for _, key in ipairs(cjson.decode(rec[3])) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'held', '-' .. rec[2])
  end
end
return 1
"""
"""What the sweep of a version before token and request limits does to an expired lease
record: ``a`` off every key of ``k``."""


def test_an_older_versions_sweep_never_takes_dollars_off_a_request_counter(
    store: RedisStore, redis_client: redis.Redis
) -> None:
    """A new-version hold on dollars, requests and tokens, swept by an old process: the
    dollars are freed, the request and token holds stay (until their window ends: a
    brief false denial), never go negative - which once let every call through."""
    dollars = counter("mixed-usd")
    calls = Counter(
        key="mixed-req", limit=1, window="day", scope="tenant", tag="t", unit="requests"
    )
    tokens = Counter(
        key="mixed-tok", limit=900, window="day", scope="tenant", tag="t", unit="tokens"
    )
    held = store.reserve(rid(), (dollars, calls, tokens), 500, 60, tokens=800)
    assert isinstance(held, Reservation)
    record = store.lease_key("t", held.id)
    redis_client.register_script(OLD_SWEEP)(keys=[record])
    assert [store.status(c).held for c in (dollars, calls, tokens)] == [0, 1, 800]
    refused = store.reserve(rid(), (calls,), 1, 60)
    assert isinstance(refused, Denial)  # fail-safe: not admitted past requests=1


def test_a_record_without_token_or_request_keys_frees_its_dollars_on_every_path(
    store: RedisStore, redis_client: redis.Redis
) -> None:
    """Dollar-only records keep the older layout (``a`` on every key of ``k``, no ``x``):
    what an older version wrote is freed by release, settle and the sweep alike."""
    for end in ("release", "settle", "expire"):
        first, second = counter(f"old-1-{end}"), counter(f"old-2-{end}")
        reservation = granted(store, (first, second), 300, lease=60)
        fields = redis_client.hkeys(store.lease_key("t", reservation.id))
        assert sorted(fields) == [b"a", b"e", b"k", b"s"]
        if end == "release":
            assert store.release(reservation)
        elif end == "settle":
            assert store.settle(reservation, 120)
        else:
            redis_client.zadd(store.index_key("t"), {reservation.id: 1})  # its lease ran out
            granted(store, (counter(f"other-{end}"),), 1)  # any script of the tag sweeps it
        spent = 120 if end == "settle" else 0
        assert [(store.status(c).spent, store.status(c).held) for c in (first, second)] == [
            (spent, 0),
            (spent, 0),
        ]


def test_fail_open_bounds_hard_limits_only() -> None:
    """While Redis is down each process may spend a share of a hard limit; a soft limit
    refuses nothing, so it is not bounded (bounding it only raised false warnings)."""
    from budgetguard.stores.redis.fail_open import FailOpen

    local = FailOpen(0.1)
    soft = Counter(key="s", limit=10_000, window="day", scope="tenant", tag="t", soft=True)
    hard = counter("h", limit=10_000)
    passed = local.reserve(rid(), (soft,), 2_000, 60)
    assert isinstance(passed, LocalReservation) and passed.over_soft == ()
    refused = local.reserve(rid(), (hard,), 2_000, 60)  # above 10% of the hard limit
    assert isinstance(refused, Denial) and refused.counter.limit == 1_000
