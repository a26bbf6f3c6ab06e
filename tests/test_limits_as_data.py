"""Limits as data (issue 15): limits and plans held in the store, token and request
limits, soft limits - on the MemoryStore and on a real Redis, sync and async.

Redis tests use the suite's Redis (``redis_url``) under a prefix of their own, removed
afterwards; the multi-process tests start real OS processes (``spawn`` / ``python -c``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

import budgetguard as bg
from budgetguard._core.limitbook import EMPTY_BOOK
from budgetguard._engine.flow import aadmit, admit
from budgetguard.stores import MemoryStore, RedisStore
from budgetguard.stores.redis import AsyncRedisStore

DAY = "day"
MESSAGES = [{"role": "user", "content": "Summarise the quarterly report in three bullet points."}]
MODES = ["memory-sync", "memory-async", "redis-sync", "redis-async"]


def usd(amount: str | int) -> int:
    """Dollars -> nano-USD."""
    return bg.Money.usd(amount).nanos


def limits_key(prefix: str) -> str:
    return f"{prefix}:{{:limits}}:defs"


def plans_key(prefix: str) -> str:
    return f"{prefix}:{{:limits}}:plans"


def version_key(prefix: str) -> str:
    return f"{prefix}:{{:limits}}:ver"


def drop_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@dataclass
class Env:
    """One store (memory or Redis) driven through the sync or the async public API."""

    kind: str  # "memory" | "redis"
    use_async: bool
    store: Any
    astore: Any
    url: str = ""
    prefix: str = ""

    def configure(self, policy: bg.Policy, **kw: Any) -> None:
        bg.configure(store=self.store, async_store=self.astore, policy=policy, **kw)

    async def set_limit(self, limit: Any) -> None:
        if self.use_async:
            await bg.aset_limit(limit)
        else:
            bg.set_limit(limit)

    async def remove_limit(self, *args: Any, **kw: Any) -> bool:
        if self.use_async:
            return await bg.aremove_limit(*args, **kw)
        return bg.remove_limit(*args, **kw)

    async def limits(self) -> list[bg.ListedLimit]:
        if self.use_async:
            return await bg.alimits()
        return bg.limits()

    async def set_plan(self, **kw: Any) -> None:
        if self.use_async:
            await bg.aset_plan(**kw)
        else:
            bg.set_plan(**kw)

    async def status(self, *args: Any, **kw: Any) -> bg.BudgetStatus:
        if self.use_async:
            return await bg.astatus(*args, **kw)
        return bg.status(*args, **kw)

    async def admit_cost(self, nanos: int) -> bg.Admission:
        if self.use_async:
            return await bg.aadmit_cost(nanos)
        return bg.admit_cost(nanos)

    async def admit(self, request: bg.LLMRequest) -> bg.Admission:
        if self.use_async:
            return await aadmit(request)
        return admit(request)

    async def settle(self, admission: bg.Admission, nanos: int) -> None:
        if self.use_async:
            await admission.asettle_nanos(nanos)
        else:
            admission.settle_nanos(nanos)

    async def release(self, admission: bg.Admission) -> None:
        if self.use_async:
            await admission.arelease()
        else:
            admission.release()

    async def spend(self, amount: str, **who: str) -> None:
        """Admit a call of ``amount`` dollars under ``who`` and settle it at that cost."""
        with bg.spend_limit(**who):  # type: ignore[arg-type]
            admission = await self.admit_cost(usd(amount))
            await self.settle(admission, usd(amount))

    async def refused(self, amount: str, **who: str) -> bg.BudgetExceeded:
        with bg.spend_limit(**who), pytest.raises(bg.BudgetExceeded) as caught:  # type: ignore[arg-type]
            admission = await self.admit_cost(usd(amount))
            await self.release(admission)
        return caught.value

    def stored_fields(self) -> dict[str, str]:
        """What the store holds, raw: the Redis hash, or the MemoryStore's book."""
        if self.kind == "memory":
            return {
                f"{lim.scope}|{lim.key}|{lim.resolved_window}": lim.model_dump_json()
                for lim in self.store.limit_book().limits
            } | {f"plan {k}": v for k, v in self.store.limit_book().plans.items()}
        import redis

        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            return dict(client.hgetall(limits_key(self.prefix))) | {
                f"plan {k}": v for k, v in client.hgetall(plans_key(self.prefix)).items()
            }
        finally:
            client.close()


async def _make_env(kind: str, use_async: bool, url: str, **redis_options: Any) -> Env:
    if kind == "memory":
        memory = MemoryStore()
        return Env("memory", use_async, memory, memory)
    prefix = f"lad-{uuid.uuid4().hex[:10]}"
    sync = RedisStore(url, prefix=prefix, **redis_options)
    async_ = AsyncRedisStore(url, prefix=prefix, **redis_options)
    return Env("redis", use_async, sync, async_, url=url, prefix=prefix)


async def _close_env(env: Env) -> None:
    if env.kind == "redis":
        env.store.close()
        await env.astore.aclose()
        drop_prefix(env.url, env.prefix)


@pytest.fixture(params=MODES)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    """Every store x (sync API | async API)."""
    kind, api = request.param.split("-")
    url = request.getfixturevalue("redis_url") if kind == "redis" else ""
    made = await _make_env(kind, api == "async", url)
    try:
        yield made
    finally:
        await _close_env(made)


@pytest.fixture(params=["memory", "redis"])
def sync_env(request: pytest.FixtureRequest) -> Iterator[Env]:
    """Every store, for threads calling the sync API."""
    if request.param == "memory":
        memory = MemoryStore()
        yield Env("memory", False, memory, memory)
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"lad-{uuid.uuid4().hex[:10]}"
    store = RedisStore(url, prefix=prefix)
    try:
        yield Env("redis", False, store, None, url=url, prefix=prefix)
    finally:
        store.close()
        drop_prefix(url, prefix)


def rows(listed: list[bg.ListedLimit]) -> list[tuple[str, bg.Limit, str, tuple[str, ...]]]:
    return [(row.source, row.limit, row.note, row.on_plan) for row in listed]


def only(listed: list[bg.ListedLimit], source: str, **match: Any) -> bg.ListedLimit:
    found = [
        row
        for row in listed
        if row.source == source and all(getattr(row.limit, k) == v for k, v in match.items())
    ]
    assert len(found) == 1, (source, match, listed)
    return found[0]


PLANS = {
    "free": [bg.Limit(scope="user", usd="0.10", window=DAY)],
    "pro": [
        bg.Limit(scope="user", usd=1, window=DAY),
        bg.Limit(scope="tenant", usd=5, window=DAY),
    ],
}


# -- 1. set_limit / remove_limit / limits() / set_plan ----------------------------------
async def test_set_list_replace_and_remove_stored_limits(env: Env) -> None:
    code = bg.Limit(scope="tenant", usd=1, window=DAY)
    env.configure(bg.Policy(limits=[code], plans=PLANS))
    listed = await env.limits()
    assert [(r.source, r.limit) for r in listed] == [
        ("code", code),
        ("plan:free", PLANS["free"][0]),
        ("plan:pro", PLANS["pro"][0]),
        ("plan:pro", PLANS["pro"][1]),
    ]
    assert all(r.on_plan == () for r in listed)
    assert only(listed, "code").note == "overridden for whoever is on plan pro"

    acme = bg.Limit(scope="tenant", key="acme", usd=3, window=DAY)
    every_user = bg.Limit(scope="user", usd=2, window=DAY)
    await env.set_limit(acme)
    await env.set_limit(every_user)
    await env.set_plan(tenant="acme", plan="pro")
    await env.set_plan(user="u-1", plan="free")
    listed = await env.limits()
    store_rows = [r for r in listed if r.source == "store"]
    assert {r.limit for r in store_rows} == {acme, every_user}
    assert only(listed, "store", key="acme").note == (
        "overrides the code's tenant day limit for 'acme'"
    )
    assert only(listed, "store", scope="user").note == ""  # no code limit for users
    code_note = only(listed, "code").note
    assert "overridden by the store for acme" in code_note
    assert "overridden for whoever is on plan pro" in code_note
    pro_rows = [r for r in listed if r.source == "plan:pro"]
    assert {r.on_plan for r in pro_rows} == {("tenant acme",)}
    assert only(listed, "plan:pro", scope="tenant").note == "overrides the code's tenant day limit"
    assert only(listed, "plan:free").on_plan == ("user u-1",)

    # the same scope, key and window replaces; another window is another limit
    acme_4 = bg.Limit(scope="tenant", key="acme", usd=4, window=DAY)
    acme_month = bg.Limit(scope="tenant", key="acme", usd=50, window="month")
    await env.set_limit(acme_4)
    await env.set_limit(acme_month)
    stored = {r.limit for r in await env.limits() if r.source == "store"}
    assert stored == {acme_4, acme_month, every_user}

    # two windows for acme: which one must be said
    with pytest.raises(bg.ConfigurationError, match="window"):
        await env.remove_limit("tenant", "acme")
    assert await env.remove_limit("tenant", "acme", window="month") is True
    assert await env.remove_limit("tenant", "acme", window="month") is False
    assert await env.remove_limit("tenant", "acme") is True  # one left: no window needed
    assert await env.remove_limit(every_user) is True
    assert await env.remove_limit("tenant", "nobody") is False
    listed = await env.limits()
    assert [r for r in listed if r.source == "store"] == []
    assert "overridden by the store" not in only(listed, "code").note

    await env.set_plan(tenant="acme", plan=None)
    await env.set_plan(user="u-1", plan=None)
    assert all(r.on_plan == () for r in await env.limits())
    assert env.stored_fields() == {}


async def test_keys_with_separators_and_non_ascii_round_trip(env: Env) -> None:
    env.configure(bg.Policy(plans=PLANS))
    keys = ["acme|eu", "a:b{c}", "100%", "x/y=z", "ünï cödé"]
    for key in keys:
        await env.set_limit(bg.Limit(scope="tenant", key=key, usd="0.01", window=DAY))
    await env.set_plan(user="a|b", plan="pro")
    await env.set_plan(tenant="t%1", plan="free")
    listed = await env.limits()
    assert sorted(r.limit.key or "" for r in listed if r.source == "store") == sorted(keys)
    assert only(listed, "plan:pro", scope="user").on_plan == ("user a|b",)
    assert only(listed, "plan:free").on_plan == ("tenant t%1",)
    for key in keys:
        assert (await env.refused("0.02", tenant=key)).key == key
        assert await env.remove_limit("tenant", key) is True
        await env.spend("0.02", tenant=key)  # no limit left for it
    state = await env.status("user", "a|b", tenant="t%1")  # the user's plan wins
    assert (state.limit, state.source) == (1, "plan:pro")


def test_limits_refresh_s_is_bounded_by_one_second(redis_url: str) -> None:
    for bad in (1.5, -0.1):
        with pytest.raises(bg.ConfigurationError, match="limits_refresh_s"):
            RedisStore(redis_url, prefix="lad-never", limits_refresh_s=bad)


async def test_remove_limit_refuses_an_unknown_scope_or_window(env: Env) -> None:
    env.configure(bg.Policy())
    await env.set_limit(bg.Limit(scope="tenant", key="acme", usd=1, window=DAY))
    failures = []
    for args, kw, field_name in (
        (("team", "acme"), {}, "scope"),
        (("run",), {}, "scope"),
        (("tenant", "acme"), {"window": "fortnight"}, "window"),
    ):
        try:
            answer = await env.remove_limit(*args, **kw)
        except bg.ConfigurationError as error:
            if field_name not in str(error):
                failures.append((args, kw, str(error)))
        else:
            failures.append((args, kw, answer))
    assert len([r for r in await env.limits() if r.source == "store"]) == 1
    assert failures == []


async def test_a_stored_limit_overrides_and_can_loosen_the_code_limit(env: Env) -> None:
    env.configure(bg.Policy(limits=[bg.Limit(scope="tenant", usd=1, window=DAY)]))
    await env.set_limit(bg.Limit(scope="tenant", key="acme", usd=3, window=DAY))
    for _ in range(3):
        await env.spend("1", tenant="acme")  # $3 in all: past the code's $1
    stop = await env.refused("0.01", tenant="acme")
    assert (stop.scope, stop.key, stop.limit, stop.spent) == ("tenant", "acme", 3, 3)
    state = await env.status("tenant", "acme")
    assert (state.limit, state.spent, state.held, state.source) == (3, 3, 0, "store")

    # another tenant keeps the code's $1
    await env.spend("1", tenant="beta")
    assert (await env.refused("0.01", tenant="beta")).limit == 1
    assert (await env.status("tenant", "beta")).source == "code"

    # a stored limit for every key sits below a tenant's plan and its own keyed limit
    env.configure(bg.Policy(limits=[bg.Limit(scope="tenant", usd=1, window=DAY)], plans=PLANS))
    await env.set_limit(bg.Limit(scope="tenant", usd=2, window=DAY))
    gamma = await env.status("tenant", "gamma")
    assert (gamma.limit, gamma.source) == (2, "store")
    await env.set_plan(tenant="gamma", plan="pro")
    gamma = await env.status("tenant", "gamma")
    assert (gamma.limit, gamma.source) == (5, "plan:pro")
    await env.set_limit(bg.Limit(scope="tenant", key="gamma", usd="2.5", window=DAY))
    gamma = await env.status("tenant", "gamma")
    assert (gamma.limit, gamma.source) == (Decimal("2.5"), "store")

    # removing the keyed limit gives the tenant back to the code
    assert await env.remove_limit("tenant", "acme", window=DAY) is True
    assert (await env.refused("0.01", tenant="acme")).limit == 2  # unkeyed store now


# -- 2. a limit set by one process is enforced by another ------------------------------
CHILD = """
import sys, time
import budgetguard as bg
from budgetguard.stores import RedisStore
url, prefix = sys.argv[1], sys.argv[2]
store = RedisStore(url, prefix=prefix)
code = bg.Limit(scope="tenant", usd=100, window="day")
bg.configure(store=store, policy=bg.Policy(limits=[code]))
with bg.spend_limit(tenant="acme"):
    bg.admit_cost(bg.Money.usd("0.02").nanos).release()  # its own copy of the limits is fresh
    bg.set_limit(bg.Limit(scope="tenant", key="acme", usd="0.01", window="day"))
    written = time.time()
    try:
        bg.admit_cost(bg.Money.usd("0.02").nanos).release()
        own = "admitted"
    except bg.BudgetExceeded:
        own = "refused"
print(repr(written), own, flush=True)
store.close()
"""


@pytest.mark.parametrize("refresh_s", [1.0, 0.2])
def test_a_limit_set_by_another_process_is_enforced_within_the_refresh_bound(
    redis_url: str, refresh_s: float
) -> None:
    prefix = f"lad-{uuid.uuid4().hex[:10]}"
    kwargs = {} if refresh_s == 1.0 else {"limits_refresh_s": refresh_s}
    store = RedisStore(redis_url, prefix=prefix, **kwargs)  # type: ignore[arg-type]
    try:
        assert store.limits_refresh_s == refresh_s
        bg.configure(
            store=store, policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd=100, window=DAY)])
        )
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, redis_url, prefix],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        admitted = 0
        refusal: bg.BudgetExceeded | None = None
        deadline = time.monotonic() + 20
        with bg.spend_limit(tenant="acme"):
            while time.monotonic() < deadline:
                try:
                    bg.admit_cost(usd("0.02")).release()
                    admitted += 1
                except bg.BudgetExceeded as error:
                    refused_at = time.time()
                    refusal = error
                    break
                time.sleep(0.005)
        out, err = child.communicate(timeout=20)
        assert child.returncode == 0, err
        written_s, own = out.split()
        assert own == "refused"  # the writing process sees its own write at once
        assert refusal is not None, "the stored limit was never enforced here"
        assert admitted > 0  # this process admitted calls before the write
        assert (refusal.scope, refusal.key, refusal.limit) == ("tenant", "acme", Decimal("0.01"))
        delay = refused_at - float(written_s)
        assert delay <= refresh_s + 0.25, f"enforced {delay:.3f}s after the write"
    finally:
        store.close()
        drop_prefix(redis_url, prefix)


async def test_the_writing_process_sees_its_own_write_at_once(env: Env) -> None:
    env.configure(bg.Policy(limits=[bg.Limit(scope="tenant", usd=100, window=DAY)]))
    await env.spend("0.02", tenant="acme")  # the store's copy of the limits is fresh
    await env.set_limit(bg.Limit(scope="tenant", key="acme", usd="0.03", window=DAY))
    assert (await env.refused("0.02", tenant="acme")).limit == Decimal("0.03")
    assert await env.remove_limit("tenant", "acme") is True
    await env.spend("0.02", tenant="acme")


async def test_a_sync_write_is_seen_at_once_by_the_async_api_of_the_same_process(
    redis_url: str,
) -> None:
    made = await _make_env("redis", True, redis_url)  # as configure(store="redis://...")
    try:
        made.configure(bg.Policy(limits=[bg.Limit(scope="tenant", usd=100, window=DAY)]))
        await made.spend("0.02", tenant="acme")  # the async store's copy is fresh
        bg.set_limit(bg.Limit(scope="tenant", key="acme", usd="0.01", window=DAY))
        assert [r.source for r in bg.limits()] == ["code", "store"]
        assert [r.source for r in await bg.alimits()] == ["code", "store"]
        await made.refused("0.02", tenant="acme")
    finally:
        await _close_env(made)


async def test_a_sync_write_is_enforced_at_once_by_sync_calls_after_async_ones(
    redis_url: str,
) -> None:
    made = await _make_env("redis", True, redis_url)  # as configure(store="redis://...")
    try:
        made.configure(bg.Policy(limits=[bg.Limit(scope="tenant", usd=100, window=DAY)]))
        await made.spend("0.02", tenant="acme")  # the async store's copy is fresh
        made.use_async = False  # from here on, the sync API only
        await made.set_limit(bg.Limit(scope="tenant", key="acme", usd="0.01", window=DAY))
        admitted = []
        with bg.spend_limit(tenant="acme"):
            try:
                admitted.append(bg.admit_cost(usd("0.02")))
            except bg.BudgetExceeded as error:
                assert error.limit == Decimal("0.01")
        for admission in admitted:
            admission.release()
        assert [r.source for r in bg.limits()] == ["code", "store"]  # it reads the store
        assert admitted == [], "admitted past the limit this very process just stored"
    finally:
        await _close_env(made)


def test_a_read_in_flight_during_a_write_does_not_hide_the_write(redis_url: str) -> None:
    prefix = f"lad-{uuid.uuid4().hex[:10]}"
    store = RedisStore(redis_url, prefix=prefix)
    try:
        bg.configure(
            store=store, policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd=100, window=DAY)])
        )
        # Another thread's admission reads the limits: the script has run, its reply is
        # on the way back, when this thread's set_limit lands.
        reading = store.book_plan()
        call = next(reading)
        reply = store._scripts[call.script](keys=call.keys, args=call.args)
        bg.set_limit(bg.Limit(scope="tenant", key="acme", usd="0.01", window=DAY))
        with pytest.raises(StopIteration):
            reading.send(reply)
        assert [r.source for r in bg.limits()] == ["code", "store"]
    finally:
        store.close()
        drop_prefix(redis_url, prefix)


# -- 3. plans ----------------------------------------------------------------------------
async def test_plans_for_tenants_and_users(env: Env) -> None:
    env.configure(bg.Policy(limits=[bg.Limit(scope="user", usd=10, window=DAY)], plans=PLANS))
    await env.set_plan(tenant="acme", plan="free")
    await env.set_plan(user="u-1", plan="pro")

    await env.spend("0.50", tenant="acme", user="u-1")  # pro ($1) beats acme's free ($0.10)
    state = await env.status("user", "u-1", tenant="acme")
    assert (state.limit, state.spent, state.source) == (1, Decimal("0.5"), "plan:pro")
    stop = await env.refused("0.11", tenant="acme", user="u-2")  # acme's plan: $0.10
    assert (stop.scope, stop.key, stop.limit) == ("user", "u-2", Decimal("0.10"))
    assert (await env.status("user", "u-2", tenant="acme")).source == "plan:free"
    await env.spend("0.50", tenant="beta", user="u-2")  # no plan: the code's $10

    # the tenant's plan also sets tenant limits; the user's plan does not touch them
    with pytest.raises(bg.ConfigurationError, match="scope"):
        await env.status("tenant", "acme")  # the free plan sets no tenant limit
    await env.set_plan(tenant="acme", plan="pro")
    # (a counter counts the calls made while a limit keeps it: none so far)
    await env.spend("0.25", tenant="acme", user="u-3")
    acme = await env.status("tenant", "acme")
    assert (acme.limit, acme.spent, acme.source) == (5, Decimal("0.25"), "plan:pro")

    await env.set_plan(user="u-1", plan=None)  # off its plan: acme's pro now ($1)
    assert (await env.status("user", "u-1", tenant="acme")).source == "plan:pro"
    await env.set_plan(tenant="acme", plan=None)  # off every plan: the code's $10
    state = await env.status("user", "u-1", tenant="acme")
    assert (state.limit, state.source) == (10, "code")
    await env.spend("2", tenant="acme", user="u-1")
    with pytest.raises(bg.ConfigurationError, match="scope"):
        await env.status("tenant", "acme")  # no tenant limit in force any more
    assert env.stored_fields() == {}


async def test_an_unknown_plan_is_refused_naming_plan(env: Env) -> None:
    env.configure(bg.Policy(plans=PLANS))
    before = rows(await env.limits())
    with pytest.raises(bg.ConfigurationError, match=r"^plan: unknown plan 'gold'") as caught:
        await env.set_plan(tenant="acme", plan="gold")
    assert "'free'" in str(caught.value) and "'pro'" in str(caught.value)
    env.configure(bg.Policy())
    with pytest.raises(bg.ConfigurationError, match="plan"):
        await env.set_plan(user="u-1", plan="free")
    tenant_only = {**PLANS, "seats": [bg.Limit(scope="tenant", usd=9, window=DAY)]}
    env.configure(bg.Policy(plans=tenant_only))
    with pytest.raises(bg.ConfigurationError, match=r"^plan: 'seats' holds only tenant"):
        await env.set_plan(user="u-1", plan="seats")  # it would apply nothing to a user
    env.configure(bg.Policy(plans=PLANS))
    assert rows(await env.limits()) == before
    assert env.stored_fields() == {}


async def test_a_stored_plan_this_policy_does_not_define_is_skipped_with_a_warning(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    plan = f"gold-{uuid.uuid4().hex[:6]}"  # warnings are once per plan per process
    gold = [bg.Limit(scope="tenant", usd=50, window=DAY)]
    env.configure(bg.Policy(plans={plan: gold}))
    await env.set_plan(tenant="acme", plan=plan)  # another deployment defines it
    env.configure(bg.Policy(limits=[bg.Limit(scope="tenant", usd=1, window=DAY)], plans=PLANS))
    await env.set_limit(bg.Limit(scope="user", usd="0.40", window=DAY))
    caplog.set_level(logging.WARNING, logger="budgetguard")
    await env.spend("0.30", tenant="acme", user="u-1")
    stop = await env.refused("0.20", tenant="acme", user="u-1")  # the stored $0.40 applies
    assert (stop.scope, stop.limit) == ("user", Decimal("0.40"))
    await env.spend("0.30", tenant="acme", user="u-2")
    await env.spend("0.30", tenant="acme", user="u-3")
    stop = await env.refused("0.20", tenant="acme", user="u-4")  # the code's $1 applies
    assert (stop.scope, stop.limit) == ("tenant", 1)
    warned = [r for r in caplog.records if plan in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in caplog.records]
    assert "acme" in warned[0].getMessage() and warned[0].levelno == logging.WARNING


# -- 4. request limits: exactly N -------------------------------------------------------
def test_a_requests_limit_admits_exactly_n_under_16_threads(sync_env: Env) -> None:
    sync_env.configure(
        bg.Policy(
            limits=[bg.Limit(scope="feature", key="chat", requests=12, window=DAY)],
            contention_wait_s=10,
        )
    )
    with bg.spend_limit(feature="chat"):
        for _ in range(5):
            bg.admit_cost(usd("0.001")).release()  # failed calls: they count 0
    state = bg.status("feature", "chat")
    assert (state.unit, state.limit, state.spent, state.held) == ("requests", 12, 0, 0)

    barrier = threading.Barrier(16)
    lock = threading.Lock()
    settled: list[int] = []
    released: list[int] = []
    refusals: list[bg.BudgetExceeded] = []
    failures: list[BaseException] = []

    def caller(n: int) -> None:
        try:
            barrier.wait()
            for attempt in range(4):
                with bg.spend_limit(feature="chat"):
                    try:
                        admission = bg.admit_cost(usd("0.001"))
                    except bg.BudgetExceeded as error:
                        with lock:
                            refusals.append(error)
                        continue
                    time.sleep(0.001)
                    if attempt == 0 and n % 3 == 0:
                        admission.release()
                        with lock:
                            released.append(n)
                    else:
                        admission.settle_nanos(usd("0.001"))
                        with lock:
                            settled.append(n)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
    assert len(settled) == 12
    assert len(settled) + len(released) + len(refusals) == 64
    assert released  # some calls failed while others waited for their hold
    for error in refusals:
        assert (error.unit, error.scope, error.key, error.limit) == (
            "requests",
            "feature",
            "chat",
            12,
        )
        assert error.spent == 12
    state = bg.status("feature", "chat")
    assert (state.spent, state.held, state.remaining) == (12, 0, 0)


async def test_a_requests_limit_admits_exactly_n_under_16_tasks_on_async_redis(
    redis_url: str,
) -> None:
    made = await _make_env("redis", True, redis_url)
    try:
        made.configure(
            bg.Policy(limits=[bg.Limit(scope="feature", key="chat", requests=12, window=DAY)])
        )
        request = bg.LLMRequest(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
        settled: list[int] = []
        released: list[int] = []
        refusals: list[bg.BudgetExceeded] = []

        async def caller(n: int) -> None:
            for attempt in range(3):
                async with bg.spend_limit(feature="chat"):
                    try:
                        admission = await aadmit(request)
                    except bg.BudgetExceeded as error:
                        refusals.append(error)
                        continue
                    await asyncio.sleep(0.001)
                    if attempt == 0 and n % 4 == 0:
                        await admission.arelease()
                        released.append(n)
                    else:
                        await admission.asettle(bg.Usage(input_tokens=5, output_tokens=20))
                        settled.append(n)

        await asyncio.gather(*(caller(n) for n in range(16)))
        assert len(settled) == 12
        assert released and len(settled) + len(released) + len(refusals) == 48
        assert {(e.unit, e.limit) for e in refusals} == {("requests", 12)}
        state = await bg.astatus("feature", "chat")
        assert (state.unit, state.spent, state.held) == ("requests", 12, 0)
    finally:
        await _close_env(made)


# -- 5. token limits never overshoot ----------------------------------------------------
TOKEN_LIMIT = 6_000


def test_a_tokens_limit_never_overshoots_under_16_threads(sync_env: Env) -> None:
    sync_env.configure(bg.Policy(limits=[bg.Limit(scope="user", tokens=TOKEN_LIMIT, window=DAY)]))
    barrier = threading.Barrier(16)
    lock = threading.Lock()
    used: list[int] = []
    refusals: list[bg.BudgetExceeded] = []
    failures: list[BaseException] = []

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        try:
            barrier.wait()
            for _ in range(8):
                max_tokens = rng.randint(40, 400)
                request = bg.LLMRequest(
                    model="gpt-4o-mini", messages=MESSAGES, max_tokens=max_tokens
                )
                with bg.spend_limit(user="u-tok"):
                    try:
                        admission = admit(request)
                    except bg.BudgetExceeded as error:
                        with lock:
                            refusals.append(error)
                        continue
                    assert admission.input_tokens is not None
                    assert admission.tokens == admission.input_tokens + max_tokens
                    if rng.random() < 0.15:
                        admission.release()
                        continue
                    usage = bg.Usage(
                        input_tokens=rng.randint(1, admission.input_tokens),
                        output_tokens=rng.randint(0, max_tokens),
                    )
                    admission.settle(usage)
                    with lock:
                        used.append(usage.input_tokens + usage.output_tokens)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
    assert refusals, "the limit was never reached: the test proves nothing"
    assert {e.unit for e in refusals} == {"tokens"}
    assert all(e.limit == TOKEN_LIMIT for e in refusals)
    state = bg.status("user", "u-tok", tenant=None, unit="tokens")
    assert (state.unit, state.limit, state.held) == ("tokens", TOKEN_LIMIT, 0)
    assert state.spent == sum(used)
    assert state.spent <= TOKEN_LIMIT
    assert state.spent > TOKEN_LIMIT // 2


HAMMER_REQUESTS = 40
HAMMER_TOKENS = 4_000


def hammer_policy() -> bg.Policy:
    return bg.Policy(
        limits=[
            bg.Limit(scope="feature", key="chat", requests=HAMMER_REQUESTS, window=DAY),
            bg.Limit(scope="feature", key="tok", tokens=HAMMER_TOKENS, window="month"),
        ]
    )


def hammer(url: str, prefix: str, seed: int, start: Any, results: Any) -> None:
    """One worker process: 4 threads, each alternating calls on a requests-limited and a
    tokens-limited feature of a shared Redis; what it did goes on ``results``."""
    store = RedisStore(url, prefix=prefix)
    bg.configure(store=store, policy=hammer_policy())
    lock = threading.Lock()
    done: dict[str, list[Any]] = {"settled": [], "released": [], "units": [], "tokens": []}

    def caller(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        for attempt in range(24):
            feature = ("chat", "tok")[attempt % 2]
            max_tokens = rng.randint(20, 200)
            request = bg.LLMRequest(model="gpt-4o-mini", messages=MESSAGES, max_tokens=max_tokens)
            with bg.spend_limit(feature=feature):
                try:
                    admission = admit(request)
                except bg.BudgetExceeded as error:
                    with lock:
                        done["units"].append((feature, error.unit))
                    continue
                if rng.random() < 0.2:
                    admission.release()
                    with lock:
                        done["released"].append(feature)
                    continue
                assert admission.input_tokens is not None
                usage = bg.Usage(
                    input_tokens=admission.input_tokens,
                    output_tokens=rng.randint(max_tokens // 2, max_tokens),
                )
                admission.settle(usage)
                with lock:
                    done["settled"].append(feature)
                    if feature == "tok":
                        done["tokens"].append(usage.input_tokens + usage.output_tokens)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    start.wait(30)  # every process ready: they all start at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    store.close()
    results.put(done)


def test_processes_sharing_request_and_token_limits_on_redis_never_pass_them(
    redis_url: str,
) -> None:
    prefix = f"lad-{uuid.uuid4().hex[:10]}"
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=hammer, args=(redis_url, prefix, n, start, results)) for n in range(4)
    ]
    try:
        for worker in workers:
            worker.start()
        done = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(10)
            assert worker.exitcode == 0
        store = RedisStore(redis_url, prefix=prefix)
        try:
            bg.configure(store=store, policy=hammer_policy())
            requests = bg.status("feature", "chat")
            tokens = bg.status("feature", "tok")
        finally:
            store.close()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
        drop_prefix(redis_url, prefix)
    settled = [f for d in done for f in d["settled"]]
    assert all(d["settled"] or d["units"] for d in done)
    assert {f for d in done for f in d["released"]} == {"chat", "tok"}  # failed calls: 0
    assert {u for d in done for u in d["units"]} == {("chat", "requests"), ("tok", "tokens")}
    assert (requests.unit, requests.held, tokens.unit, tokens.held) == ("requests", 0, "tokens", 0)
    assert requests.spent == settled.count("chat") == HAMMER_REQUESTS  # exactly
    assert tokens.spent == sum(t for d in done for t in d["tokens"])
    assert HAMMER_TOKENS - 250 < tokens.spent <= HAMMER_TOKENS


# -- 6. soft limits ---------------------------------------------------------------------
async def test_a_soft_limit_records_instead_of_refusing_and_a_hard_one_still_refuses(
    env: Env,
) -> None:
    records: list[bg.CallRecord] = []
    env.configure(
        bg.Policy(
            limits=[
                bg.Limit(scope="tenant", usd="0.10", window=DAY, enforce="warn"),
                bg.Limit(scope="user", usd="0.20", window=DAY),
            ]
        ),
        listeners=[records.append],
    )
    await env.spend("0.08", tenant="acme", user="u-1")
    assert records[-1].outcome == "ok" and records[-1].over_soft == ()
    await env.spend("0.08", tenant="acme", user="u-1")  # tenant $0.16 > $0.10: passes
    over = records[-1]
    assert over.outcome == "over_soft_limit"
    assert [(c.scope, c.subject, c.window, c.soft) for c in over.over_soft] == [
        ("tenant", "acme", DAY, True)
    ]
    assert over.error == "over soft limit: tenant acme day $0.10"
    assert over.cost == usd("0.08")
    state = await env.status("tenant", "acme")
    assert (state.enforce, state.limit, state.spent) == ("warn", Decimal("0.10"), Decimal("0.16"))
    assert state.spent > state.limit
    user = await env.status("user", "u-1", tenant="acme")
    assert user.enforce == "refuse"

    stop = await env.refused("0.08", tenant="acme", user="u-1")  # user $0.24 > $0.20: hard
    assert (stop.scope, stop.key, stop.limit) == ("user", "u-1", Decimal("0.20"))
    assert records[-1].outcome == "denied"

    # a soft stored requests limit: counted, never refused
    await env.set_limit(
        bg.Limit(scope="feature", key="chat", requests=1, window=DAY, enforce="warn")
    )
    await env.spend("0.01", tenant="beta", feature="chat")
    assert records[-1].outcome == "ok"
    await env.spend("0.01", tenant="beta", feature="chat")
    assert records[-1].outcome == "over_soft_limit"
    assert records[-1].error == "over soft limit: feature chat day 1 requests"
    chat = await env.status("feature", "chat")
    assert (chat.unit, chat.enforce, chat.limit, chat.spent, chat.source) == (
        "requests",
        "warn",
        1,
        2,
        "store",
    )


async def test_policy_enforce_warn_makes_every_limit_soft(env: Env) -> None:
    records: list[bg.CallRecord] = []
    env.configure(
        bg.Policy(
            limits=[
                bg.Limit(scope="tenant", usd="0.10", window=DAY),
                bg.Limit(scope="user", usd="0.20", window=DAY),
                bg.Limit(scope="request", usd="0.05"),
            ],
            enforce="warn",
        ),
        listeners=[records.append],
    )
    for _ in range(3):
        await env.spend("0.08", tenant="acme", user="u-1")
    assert [r.outcome for r in records] == ["over_soft_limit"] * 3  # each over the $0.05 cap
    last = records[-1]
    assert {(c.scope, c.unit) for c in last.over_soft} == {
        ("tenant", "usd"),
        ("user", "usd"),
        ("request", "usd"),
    }
    for scope, key, kw in (("tenant", "acme", {}), ("user", "u-1", {"tenant": "acme"})):
        state = await env.status(scope, key, **kw)
        assert state.enforce == "warn" and state.spent == Decimal("0.24") > state.limit


# -- 7. changing a limit while calls are in flight --------------------------------------
async def test_lowering_a_limit_with_calls_in_flight(env: Env) -> None:
    env.configure(
        bg.Policy(limits=[bg.Limit(scope="tenant", usd=1, window=DAY)], contention_wait_s=0)
    )
    await env.set_limit(bg.Limit(scope="tenant", key="acme", usd=10, window=DAY))
    held: list[bg.Admission] = []
    with bg.spend_limit(tenant="acme"):
        for _ in range(5):
            held.append(await env.admit_cost(usd(1)))
    before = await env.status("tenant", "acme")
    assert (before.spent, before.held) == (0, 5)
    reserved = sum(a.estimate for a in held)

    await env.set_limit(bg.Limit(scope="tenant", key="acme", usd=2, window=DAY))
    stop = await env.refused("0.000001", tenant="acme")  # held $5 > $2: at once
    assert stop.limit == 2
    for admission in held:
        await env.settle(admission, usd("0.8"))
    await env.refused("0.000001", tenant="acme")
    after = await env.status("tenant", "acme")
    assert (after.limit, after.spent, after.held, after.overrun) == (2, 4, 0, 0)
    assert usd(after.spent) <= usd(2) + reserved

    # raising it again lets calls through at once
    await env.set_limit(bg.Limit(scope="tenant", key="acme", usd=5, window=DAY))
    await env.spend("1", tenant="acme")
    assert (await env.status("tenant", "acme")).remaining == 0


def test_lowering_a_limit_while_threads_spend_never_lets_new_calls_past_it(
    sync_env: Env,
) -> None:
    sync_env.configure(bg.Policy(limits=[bg.Limit(scope="tenant", usd=100, window=DAY)]))
    new_limit = usd(1)
    changed = threading.Event()
    lock = threading.Lock()
    before_change: list[int] = []  # estimates of calls whose admission began before
    admitted = [0]
    stopped: list[bg.BudgetExceeded] = []
    failures: list[BaseException] = []

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(60):
                early = not changed.is_set()
                with bg.spend_limit(tenant="acme"):
                    try:
                        admission = bg.admit_cost(usd("0.05"))
                    except bg.BudgetExceeded as error:
                        stopped.append(error)  # by the new limit, whenever it began
                        return
                    with lock:
                        admitted[0] += 1
                        if early:
                            before_change.append(admission.estimate)
                    time.sleep(rng.random() * 0.002)
                    admission.settle_nanos(rng.randint(usd("0.01"), usd("0.05")))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    while admitted[0] < 24 and any(t.is_alive() for t in threads):
        time.sleep(0.001)
    bg.set_limit(bg.Limit(scope="tenant", key="acme", usd=1, window=DAY))
    changed.set()
    for thread in threads:
        thread.join(30)
    assert not failures
    assert len(stopped) == 8  # every caller was refused by the new limit
    assert {e.limit for e in stopped} == {1}
    state = bg.status("tenant", "acme")
    assert state.held == 0
    assert usd(state.spent) <= new_limit + sum(before_change), (state, sum(before_change))


# -- 8. bad input -----------------------------------------------------------------------
BAD_LIMITS: list[tuple[str, Callable[[], Any], str]] = [
    ("no amount", lambda: bg.Limit(scope="tenant", key="acme", window=DAY), "usd"),
    ("fractional tokens", lambda: bg.Limit(scope="user", tokens=1.5, window=DAY), "tokens"),
    ("negative requests", lambda: bg.Limit(scope="user", requests=-1, window=DAY), "requests"),
    ("bool requests", lambda: bg.Limit(scope="user", requests=True, window=DAY), "requests"),
    ("string tokens", lambda: bg.Limit(scope="user", tokens="10", window=DAY), "tokens"),
    ("tokens past 2**53-1", lambda: bg.Limit(scope="user", tokens=2**53, window=DAY), "tokens"),
    ("negative usd", lambda: bg.Limit(scope="user", usd=-1, window=DAY), "usd"),
    ("unknown scope", lambda: bg.Limit(scope="team", usd=1, window=DAY), "scope"),
    ("unknown window", lambda: bg.Limit(scope="user", usd=1, window="fortnight"), "window"),
    ("newline in key", lambda: bg.Limit(scope="tenant", key="ac\nme", usd=1, window=DAY), "key"),
    ("NUL in key", lambda: bg.Limit(scope="tenant", key="acme\x00", usd=1, window=DAY), "key"),
    ("requests per request", lambda: bg.Limit(scope="request", requests=1), "requests"),
]


async def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(env: Env) -> None:
    env.configure(bg.Policy(limits=[bg.Limit(scope="tenant", usd=1, window=DAY)], plans=PLANS))
    await env.set_limit(bg.Limit(scope="tenant", key="acme", usd=3, window=DAY))
    await env.set_plan(tenant="acme", plan="pro")
    listed, raw = rows(await env.limits()), env.stored_fields()

    def check(name: str, error: BaseException, field_name: str) -> None:
        assert isinstance(error, ValueError), (name, error)
        assert field_name in str(error), (name, field_name, str(error))

    for name, make, field_name in BAD_LIMITS:
        with pytest.raises(ValueError) as caught:
            await env.set_limit(make())
        check(name, caught.value, field_name)

    calls: list[tuple[str, Callable[[], Any], str]] = [
        ("run scope", lambda: env.set_limit(bg.Limit(scope="run", usd=1)), "scope"),
        ("not a Limit", lambda: env.set_limit({"scope": "tenant", "usd": 1}), "limit"),
        ("both subjects", lambda: env.set_plan(tenant="a", user="b", plan="free"), "tenant"),
        ("no subject", lambda: env.set_plan(plan="free"), "tenant"),
        ("control char", lambda: env.set_plan(user="u\x07", plan="free"), "user"),
        ("unknown plan", lambda: env.set_plan(tenant="acme", plan="platinum"), "plan"),
        ("bad key", lambda: env.remove_limit("tenant", "ac\rme"), "key"),
    ]
    for name, call, field_name in calls:
        with pytest.raises(bg.ConfigurationError) as caught:
            await call()
        check(name, caught.value, field_name)

    assert rows(await env.limits()) == listed
    assert env.stored_fields() == raw


async def test_amounts_at_the_bounds(env: Env) -> None:
    env.configure(bg.Policy())
    top = bg.Limit(scope="feature", key="chat", requests=2**53 - 1, window=DAY)
    none_ = bg.Limit(scope="user", tokens=0, window=DAY)
    await env.set_limit(top)
    await env.set_limit(none_)
    assert {r.limit for r in await env.limits() if r.source == "store"} == {top, none_}

    await env.spend("0.01", feature="chat")
    state = await env.status("feature", "chat")
    assert (state.unit, state.limit, state.spent) == ("requests", 2**53 - 1, 1)
    assert state.remaining == 2**53 - 2

    request = bg.LLMRequest(model="gpt-4o-mini", messages=MESSAGES, max_tokens=1)
    with bg.spend_limit(user="u-1"), pytest.raises(bg.BudgetExceeded) as caught:
        await env.admit(request)
    assert (caught.value.unit, caught.value.limit, caught.value.scope) == ("tokens", 0, "user")
    assert caught.value.requested == bg.estimate(request).input_tokens + 1
    await env.spend("0.01", user="u-1")  # a fixed-cost call holds no tokens
    state = await env.status("user", "u-1", tenant=None)
    assert (state.unit, state.limit, state.spent, state.held) == ("tokens", 0, 0, 0)


# -- 9. a malformed entry in the Redis hash ---------------------------------------------
async def test_a_malformed_stored_entry_is_skipped_and_logged_once(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    import redis

    made = await _make_env("redis", False, redis_url, limits_refresh_s=0)
    client = redis.Redis.from_url(redis_url)
    try:
        made.configure(bg.Policy(limits=[bg.Limit(scope="tenant", usd=100, window=DAY)]))
        await made.set_limit(bg.Limit(scope="tenant", key="acme", usd="0.05", window=DAY))
        client.hset(limits_key(made.prefix), "tenant|evil|day", "{not json")
        client.hset(
            limits_key(made.prefix),
            "tenant|noamount|day",
            json.dumps({"scope": "tenant", "key": "noamount", "window": "day"}),
        )
        client.hset(
            limits_key(made.prefix),
            "user||day",
            json.dumps({"scope": "user", "usd": "-3", "window": "day"}),
        )
        client.hset(plans_key(made.prefix), "nobody", "pro")
        client.hincrby(version_key(made.prefix), "n", 1)
        caplog.set_level(logging.ERROR, logger="budgetguard")

        stop = await made.refused("0.06", tenant="acme")  # the good stored limit holds
        assert (stop.limit, stop.scope) == (Decimal("0.05"), "tenant")
        await made.spend("0.04", tenant="acme", user="u-1")  # no user limit came in
        await made.set_limit(bg.Limit(scope="tenant", key="beta", usd="0.02", window=DAY))
        await made.refused("0.03", tenant="beta")  # re-read: the new one applies too
        client.hincrby(version_key(made.prefix), "n", 1)
        await made.refused("0.03", tenant="beta")
        stored = [r.limit.key for r in await made.limits() if r.source == "store"]
        assert sorted(stored) == ["acme", "beta"]  # type: ignore[type-var]

        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        for bad in ("tenant|evil|day", "tenant|noamount|day", "user||day", "nobody"):
            assert sum(bad in m for m in messages) == 1, (bad, messages)
    finally:
        client.close()
        await _close_env(made)


# -- 10. status for every kind of limit -------------------------------------------------
async def test_status_reads_every_kind_of_limit(env: Env) -> None:
    env.configure(
        bg.Policy(
            limits=[
                bg.Limit(scope="tenant", usd=1, window=DAY),
                bg.Limit(scope="feature", key="chat", tokens=10_000, window=DAY),
                bg.Limit(scope="model", key="gpt-4o-mini", requests=100, window="month"),
            ],
            plans={"pro": [bg.Limit(scope="user", usd=2, window=DAY)]},
        )
    )
    await env.set_plan(tenant="acme", plan="pro")
    await env.set_limit(bg.Limit(scope="feature", key="chat", usd=5, window=DAY))
    await env.set_limit(
        bg.Limit(scope="feature", key="search", usd="0.01", window=DAY, enforce="warn")
    )

    request = bg.LLMRequest(model="gpt-4o-mini", messages=MESSAGES, max_tokens=200)
    with bg.spend_limit(tenant="acme", user="u-1", feature="chat"):
        admission = await env.admit(request)
        assert admission.input_tokens is not None
        usage = bg.Usage(input_tokens=admission.input_tokens, output_tokens=150)
        if env.use_async:
            cost = await admission.asettle(usage)
        else:
            cost = admission.settle(usage)
    await env.spend("0.02", tenant="acme", feature="search")

    code = await env.status("tenant", "acme")
    assert (code.source, code.unit, code.limit, code.enforce) == ("code", "usd", 1, "refuse")
    assert code.spent == cost + Decimal("0.02") and code.held == 0
    assert code.remaining == code.limit - code.spent and code.resets_at is not None

    plan = await env.status("user", "u-1", tenant="acme")
    assert (plan.source, plan.limit, plan.spent) == ("plan:pro", 2, cost)

    store = await env.status("feature", "chat", unit="usd")  # beside the code's tokens
    assert (store.source, store.unit, store.limit, store.spent) == ("store", "usd", 5, cost)

    tokens = await env.status("feature", "chat", unit="tokens")
    assert (tokens.source, tokens.unit, tokens.limit) == ("code", "tokens", 10_000)
    assert tokens.spent == usage.input_tokens + usage.output_tokens and tokens.held == 0

    requests = await env.status("model", "gpt-4o-mini", window="month")
    assert (requests.unit, requests.limit, requests.spent) == ("requests", 100, 1)
    assert requests.remaining == 99

    soft = await env.status("feature", "search")
    assert (soft.enforce, soft.source, soft.limit) == ("warn", "store", Decimal("0.01"))
    assert soft.spent == Decimal("0.02") > soft.limit

    frame_limit = bg.Limit(scope="tenant", usd="0.50", window=DAY)
    with bg.spend_limit(tenant="zeta", limits=[frame_limit]):
        await env.spend("0.10", tenant="zeta")
        inside = await env.status("tenant", "zeta")
        assert (inside.source, inside.limit, inside.spent) == (
            "frame",
            Decimal("0.50"),
            Decimal("0.10"),
        )
    env.configure(bg.Policy())  # no code limit for tenants: only the block knew one
    with pytest.raises(bg.ConfigurationError, match="window"):
        await env.status("tenant", "zeta")
    outside = await env.status("tenant", "zeta", window=DAY)
    assert (outside.limit, outside.remaining, outside.spent) == (None, None, Decimal("0.10"))
    assert outside.source == "none"


# -- found by review: what a soft or unkeyed limit may never do ---------------------------
async def test_a_soft_limit_beside_a_hard_one_warns_and_never_loosens_it(env: Env) -> None:
    """Shadow-running a tighter limit for a key (enforce="warn") keeps the code's hard
    limit in force: both are checked on the one counter (its ``warn_at``)."""
    records: list[bg.CallRecord] = []
    env.configure(bg.Policy(limits=[bg.Limit(scope="tenant", usd=1, window=DAY)]))
    bg.configure(listeners=[records.append])
    await env.set_limit(
        bg.Limit(scope="tenant", key="acme", usd="0.50", window=DAY, enforce="warn")
    )
    await env.spend("0.40", tenant="acme")
    await env.spend("0.40", tenant="acme")  # past the soft $0.50: passes, recorded
    stop = await env.refused("0.40", tenant="acme")  # the hard $1 still refuses
    assert (stop.limit, stop.spent) == (1, Decimal("0.80"))
    assert [r.outcome for r in records[:2]] == ["ok", "over_soft_limit"]
    assert records[1].error == "over soft limit: tenant acme day $0.50"
    state = await env.status("tenant", "acme")
    assert (state.limit, state.enforce, state.source) == (1, "refuse", "code")


async def test_a_stored_limit_for_every_key_never_loosens_a_keyed_code_limit(env: Env) -> None:
    """The code's limit for one key stays in force beside a stored limit for every key
    (the tightest of the two); the stored one replaces the code's for every key."""
    code = [
        bg.Limit(scope="feature", key="summarize", usd="0.02", window=DAY),
        bg.Limit(scope="feature", usd="0.05", window=DAY),
    ]
    env.configure(bg.Policy(limits=code))
    await env.set_limit(bg.Limit(scope="feature", usd="0.10", window=DAY))
    await env.spend("0.02", feature="summarize")
    assert (await env.refused("0.01", feature="summarize")).limit == Decimal("0.02")
    await env.spend("0.08", feature="chat")  # the stored $0.10 replaced the code's $0.05
    assert (await env.refused("0.03", feature="chat")).limit == Decimal("0.10")


def test_a_store_written_before_token_limits_is_refused_those_and_keeps_dollars() -> None:
    """A custom store with the older reserve signature (no tokens=, no units): dollar
    limits work as before; a request, token or soft limit is a clear error, never
    dollars held on a request counter or a refusal instead of a warning."""

    class OlderStore(MemoryStore):
        supports_units = False

        def reserve(  # type: ignore[override]
            self, reservation_id: str, counters: Any, amount: int, lease_s: float
        ) -> Any:
            return super().reserve(reservation_id, counters, amount, lease_s)

        def settle(self, reservation: Any, actual: int) -> bool:  # type: ignore[override]
            return super().settle(reservation, actual)

    store = OlderStore()
    dollars = bg.Limit(scope="tenant", usd="0.05", window=DAY)
    bg.configure(store=store, policy=bg.Policy(limits=[dollars]))
    with bg.spend_limit(tenant="acme"):
        bg.admit_cost(usd("0.03")).settle_nanos(usd("0.03"))
        with pytest.raises(bg.BudgetExceeded):
            bg.admit_cost(usd("0.03"))
    for extra in (
        bg.Limit(scope="tenant", requests=10, window=DAY),
        bg.Limit(scope="user", tokens=1_000, window=DAY),
        bg.Limit(scope="feature", usd=1, window=DAY, enforce="warn"),
    ):
        bg.configure(policy=bg.Policy(limits=[dollars, extra]))
        with (
            bg.spend_limit(tenant="beta", user="u-1", feature="chat"),
            pytest.raises(bg.ConfigurationError, match=r"^store: OlderStore predates token"),
        ):
            bg.admit_cost(usd("0.01"))


async def test_a_usage_of_more_tokens_than_a_store_counts_is_charged_as_held(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed usage (2**53 tokens) neither corrupts the token counter nor leaves the
    settle unapplied: the tokens held are charged, the dollars priced, once, logged."""
    env.configure(bg.Policy(limits=[bg.Limit(scope="user", tokens=100_000, window=DAY)]))
    model = f"house-{uuid.uuid4().hex[:6]}"  # its own: the warning is once per model
    bg.configure(prices={model: {"input": 0, "output": 0}})  # $0: only the tokens count
    request = bg.LLMRequest(model=model, messages=MESSAGES, max_tokens=100)
    caplog.set_level(logging.WARNING, logger="budgetguard")
    with bg.spend_limit(user="u-1"):
        admission = await env.admit(request)
        usage = bg.Usage(input_tokens=2**53, output_tokens=5)
        if env.use_async:
            await admission.asettle(usage)
        else:
            admission.settle(usage)
    state = await env.status("user", "u-1", tenant=None, unit="tokens")
    assert (state.spent, state.held) == (admission.tokens, 0)
    assert any("more than a store counts" in r.getMessage() for r in caplog.records)


async def test_an_after_the_fact_charge_counts_on_stored_limits(env: Env) -> None:
    """A decorated function that reserved nothing but returned a provider response is
    charged to the store's limits too, even before this process ever read them."""
    env.configure(bg.Policy())
    await env.set_limit(bg.Limit(scope="feature", key="chat", requests=5, window=DAY))
    if env.kind == "redis":  # as in a process that never read the stored limits
        for store in (env.store, env.astore):
            store._book, store._book_read_at = EMPTY_BOOK, float("-inf")
    response = {
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }

    @bg.budget(feature="chat")
    def unguarded() -> dict[str, Any]:
        return response

    @bg.budget(feature="chat")
    async def aunguarded() -> dict[str, Any]:
        return response

    for _ in range(3):
        if env.use_async:
            await aunguarded()
        else:
            unguarded()
    state = await env.status("feature", "chat", unit="requests")
    assert (state.spent, state.held) == (3, 0)


def test_a_lost_version_key_never_hides_a_new_write(redis_url: str) -> None:
    """The version survives being lost and counted up again to a number a reader knows
    (a failover, a deleted key): its epoch differs, so the reader re-reads."""
    import redis

    prefix = f"lad-{uuid.uuid4().hex[:10]}"
    reader = RedisStore(redis_url, prefix=prefix, limits_refresh_s=0)
    writer = RedisStore(redis_url, prefix=prefix)
    client = redis.Redis.from_url(redis_url)
    try:
        writer.put_limit(bg.Limit(scope="tenant", key="acme", usd=1000, window=DAY))
        assert [lim.usd for lim in reader.limit_book().limits] == [1000]
        client.delete(version_key(prefix))  # lost
        time.sleep(0.002)  # the epoch is the moment the version is made again
        writer.put_limit(bg.Limit(scope="tenant", key="acme", usd=1, window=DAY))
        assert [lim.usd for lim in reader.limit_book().limits] == [1]
    finally:
        reader.close()
        writer.close()
        client.close()
        drop_prefix(redis_url, prefix)
