"""``budgetguard limits set / rm / plan``, the listing of code, plan and stored limits, and
``status`` / ``reset`` for every kind of limit (dollars, tokens, requests, soft, stored,
on a plan), on a real Redis store; a limit the CLI stores binds the library in this
process through its own store object, as it would another process."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

import budgetguard as bg
from budgetguard._core.limitbook import LimitBook
from budgetguard._core.usage import Usage
from budgetguard._engine import config as _config
from budgetguard._engine.flow import admit_cost
from budgetguard._engine.guard import spend_limit
from budgetguard.cli import main, parse_counter_key
from budgetguard.cli.context import load_context
from budgetguard.cli.counters import key_unit, split_unit
from budgetguard.stores import RedisStore

CONFIG = """\
store = "{store}"
prefix = "{prefix}"

[policy]
enforce = "{enforce}"
{limits}
[policy.plans]
free = [
  {{ scope = "tenant", requests = 1, window = "day" }},
  {{ scope = "user", requests = 5, window = "day" }},
]
pro = [
  {{ scope = "tenant", usd = 500, window = "month" }},
  {{ scope = "user", tokens = 1000000, window = "day" }},
]
"""

CODE_LIMITS = """
[[policy.limits]]
scope = "tenant"
usd = 100
window = "month"

[[policy.limits]]
scope = "user"
usd = 5
window = "day"
"""


@dataclass
class World:
    url: str
    prefix: str
    config: Path

    def run(self, *argv: str, config: bool = True) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        old, sys.stderr = sys.stderr, err
        try:
            code = main([*argv, *(["--config", str(self.config)] if config else [])], out=out)
        finally:
            sys.stderr = old
        return code, out.getvalue(), err.getvalue()

    def ok(self, *argv: str) -> str:
        """Run a command that must succeed; its output."""
        code, out, err = self.run(*argv)
        assert code == 0, (argv, out, err)
        return out

    def book(self) -> LimitBook:
        """What the store holds, read by a store of its own (as another process would)."""
        store = RedisStore.from_url(self.url, prefix=self.prefix)
        try:
            return store.limit_book()
        finally:
            store.close()

    def configure_library(self) -> RedisStore:
        """This process's budgetguard on the same store and policy, limits re-read at once."""
        policy = load_context(config=str(self.config), environ={}).policy
        store = RedisStore.from_url(self.url, prefix=self.prefix, limits_refresh_s=0)
        _config.configure(store=store, policy=policy)
        return store


def make_world(redis_url: str, tmp_path: Path, *, limits: str, enforce: str) -> World:
    prefix = f"bgcl{uuid.uuid4().hex[:8]}"
    config = tmp_path / f"{prefix}.toml"
    config.write_text(CONFIG.format(store=redis_url, prefix=prefix, enforce=enforce, limits=limits))
    return World(redis_url, prefix, config)


def _cleanup(world: World) -> None:
    _config.reset()
    store = RedisStore.from_url(world.url, prefix=world.prefix)
    keys = list(store.client.scan_iter(match=f"{world.prefix}:*"))
    if keys:
        store.client.delete(*keys)
    store.close()


@pytest.fixture
def world(redis_url: str, tmp_path: Path) -> Iterator[World]:
    made = make_world(redis_url, tmp_path, limits=CODE_LIMITS, enforce="refuse")
    try:
        yield made
    finally:
        _cleanup(made)


def call(nanos: int, tokens: tuple[int, int], **who: str) -> None:
    with spend_limit(**who):
        admission = admit_cost(nanos + 1000)
        admission.settle_nanos(nanos, usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]))


def rows_of(out: str) -> list[list[str]]:
    """Table body rows, split on runs of two or more spaces (not the notes under it)."""
    lines = out.splitlines()[2:]
    return [re.split(r"\s{2,}", line.strip()) for line in lines if line.strip()[:1] not in "("]


# -- set / list / rm ------------------------------------------------------------------


def test_set_list_and_remove(world: World) -> None:
    code, out, _ = world.run("limits", "set", "tenant", "acme", "--usd", "500", "--window", "month")
    assert code == 0, out
    assert "stored tenant acme: $500.00 per month" in out
    assert "overrides the code's tenant month limit for 'acme'" in out
    assert world.book().limits == (bg.Limit("tenant", key="acme", usd=500, window="month"),)

    code, out, _ = world.run(
        "limits", "set", "feature", "chat", "--requests", "12000", "--window", "day", "--warn"
    )
    assert code == 0 and "feature chat: 12,000 requests per day (warn" in out
    code, out, _ = world.run("limits", "set", "user", "--tokens", "1_000_000", "--window", "day")
    assert code == 0 and "every user: 1,000,000 tokens per day" in out

    # replacing keeps one entry per (scope, key, window) and says what it replaced
    code, out, _ = world.run("limits", "set", "tenant", "acme", "--usd", "600", "--window", "month")
    assert code == 0 and "replaces the stored $500.00" in out

    code, out, _ = world.run("limits")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SCOPE", "KEY", "WINDOW", "LIMIT", "ENFORCE", "SOURCE", "NOTE"]
    rows = rows_of(out.split("\n\n")[0])
    assert rows[0][:6] == ["tenant", "*", "month", "$100.00", "refuse", "code"]
    assert "overridden by the store for acme" in rows[0][6]
    assert ["tenant", "acme", "month", "$600.00", "refuse", "store"] in [r[:6] for r in rows]
    assert ["feature", "chat", "day", "12,000 requests", "warn", "store"] in rows
    assert ["user", "*", "day", "1,000,000 tokens", "refuse", "store"] in rows
    assert ["tenant", "*", "day", "1 request", "refuse", "plan:free", "on it: no one"] in rows
    assert "plan pro: no one" in out

    code, out, _ = world.run("limits", "--json")
    data = json.loads(out)
    stored = {(r["scope"], r["key"]): r for r in data["limits"] if r["source"] == "store"}
    assert stored["tenant", "acme"] == {
        "scope": "tenant",
        "key": "acme",
        "window": "month",
        "usd": "600",
        "tokens": None,
        "requests": None,
        "enforce": "refuse",
        "source": "store",
        "note": "overrides the code's tenant month limit for 'acme'",
        "on_plan": [],
    }
    assert stored["feature", "chat"]["requests"] == 12000
    assert stored["feature", "chat"]["enforce"] == "warn"
    assert stored["user", None]["tokens"] == 1_000_000
    assert [r["source"] for r in data["limits"]][:2] == ["code", "code"]
    assert data["assignments"] == [] and data["store_error"] is None

    code, out, _ = world.run("limits", "--csv")
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert {"scope": "feature", "key": "chat", "requests": "12000", "source": "store"}.items() <= (
        next(r for r in parsed if r["key"] == "chat").items()
    )

    code, out, _ = world.run("limits", "rm", "tenant", "acme")
    assert code == 0 and "removed the stored limit tenant acme: $600.00 per month" in out
    code, out, _ = world.run("limits", "rm", "tenant", "acme")
    assert code == 1 and "nothing removed: the store holds no limit for tenant acme" in out
    code, out, _ = world.run("limits", "rm", "user", "--window", "day")
    assert code == 0
    assert {(x.scope, x.key) for x in world.book().limits} == {("feature", "chat")}


def test_options_go_before_or_after_the_action(world: World) -> None:
    code, _, err = world.run(
        "limits",
        "--config",
        str(world.config),
        "set",
        "model",
        "gpt-4o",
        "--usd",
        "0.5",
        "--window",
        "hour",
        config=False,
    )
    assert code == 0, err
    assert world.book().limits[0].key == "gpt-4o"


def test_rm_names_the_window_when_a_key_has_several(world: World) -> None:
    for window in ("day", "month"):
        world.ok("limits", "set", "tenant", "acme", "--usd", "1", "--window", window)
    code, _, err = world.run("limits", "rm", "tenant", "acme")
    assert code == 2 and "limits rm: --window" in err and "['day', 'month']" in err
    code, out, _ = world.run("limits", "rm", "tenant", "acme", "--window", "day")
    assert code == 0 and "per day" in out
    assert [x.resolved_window for x in world.book().limits] == ["month"]
    code, out, _ = world.run("limits", "rm", "tenant")
    assert code == 1 and "no limit for every tenant" in out and "code's limits" in out


# -- plans ----------------------------------------------------------------------------


def test_plan_assign_list_and_clear(world: World) -> None:
    code, out, _ = world.run("limits", "plan", "acme", "pro")
    assert code == 0
    assert "tenant acme is on plan pro (was on no plan):" in out
    assert "tenant acme: $500.00 per month" in out
    assert "each user of tenant acme: 1,000,000 tokens per day" in out
    code, out, _ = world.run("limits", "plan", "--user", "u-9", "free")
    assert code == 0 and "user u-9 is on plan free" in out
    assert dict(world.book().plans) == {("tenant", "acme"): "pro", ("user", "u-9"): "free"}

    code, out, _ = world.run("limits")
    assert "plan pro: tenant acme" in out and "plan free: user u-9" in out
    assert out.splitlines()[0].split() == ["SCOPE", "KEY", "WINDOW", "LIMIT", "SOURCE", "NOTE"]
    rows = rows_of(out.split("\n\n")[0])
    assert any(r[4] == "plan:pro" and r[5].startswith("on it: tenant acme") for r in rows)
    data = json.loads(world.run("limits", "--json")[1])
    assert data["assignments"] == [
        {"scope": "tenant", "key": "acme", "plan": "pro", "known": True},
        {"scope": "user", "key": "u-9", "plan": "free", "known": True},
    ]
    assert {tuple(r["on_plan"]) for r in data["limits"] if r["source"] == "plan:pro"} == {
        ("tenant acme",)
    }

    code, out, _ = world.run("limits", "plan", "acme", "free")
    assert code == 0 and "(was pro)" in out
    code, out, _ = world.run("limits", "plan", "acme", "-")
    assert code == 0 and "tenant acme is off plan free" in out
    code, out, _ = world.run("limits", "plan", "--user", "u-9", "--clear")
    assert code == 0
    code, out, _ = world.run("limits", "plan", "acme", "none")
    assert code == 1 and "tenant acme is on no plan: nothing to take off" in out
    assert not world.book().plans


def test_unknown_plan_is_named_with_the_known_ones(world: World) -> None:
    code, out, err = world.run("limits", "plan", "acme", "gold")
    assert code == 2 and out == ""
    assert "PLAN: unknown plan 'gold'" in err and "defines 'free', 'pro'" in err
    assert not world.book()


# -- bad input: exit 2, the field named, nothing stored ---------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["set", "tenant", "acme", "--window", "day"], "name an amount: --usd"),
        (["set", "tenant", "acme", "--usd", "-1", "--window", "day"], "--usd: must be >= 0"),
        (["set", "tenant", "acme", "--usd", "lots", "--window", "day"], "--usd: 'lots'"),
        (["set", "tenant", "a", "--tokens", "1.5", "--window", "day"], "--tokens: expected"),
        (["set", "tenant", "a", "--tokens", "-3", "--window", "day"], "--tokens: must be between"),
        (["set", "tenant", "a", "--requests", "x", "--window", "day"], "--requests: expected"),
        (["set", "tenant", "a", "--requests", str(2**53), "--window", "day"], "--requests: must"),
        (["set", "galaxy", "a", "--usd", "1", "--window", "day"], "SCOPE: expected one of global"),
        (["set", "run", "--usd", "1"], "SCOPE: a run limit belongs to one spend_limit block"),
        (["set", "tenant", "a", "--usd", "1", "--window", "fortnight"], "--window: expected one"),
        (["set", "tenant", "a", "--usd", "1"], "--window: name the window"),
        (["set", "global", "a", "--usd", "1", "--window", "day"], "KEY: a global limit takes no"),
        (["set", "request", "--requests", "3"], "--requests: a request limit caps one call"),
        (["set", "tenant", "ev\nil", "--usd", "1", "--window", "day"], "KEY: must not contain"),
        (["set", "tenant", "", "--usd", "1", "--window", "day"], "KEY: must be a non-empty"),
        (["rm", "run"], "SCOPE: a run limit"),
        (["rm", "tenant", "a", "--window", "fortnight"], "--window: expected one"),
        (["rm", "tenant", "ev\til"], "KEY: must not contain control characters"),
        (["plan"], "name the tenant"),
        (["plan", "acme"], "PLAN: name one plan"),
        (["plan", "acme", "pro", "--clear"], "--clear takes no PLAN"),
        (["plan", "ev\x1bil", "pro"], "TENANT: must not contain control characters"),
    ],
)
def test_bad_input_is_exit_2_and_stores_nothing(
    world: World, argv: list[str], expected: str
) -> None:
    code, out, err = world.run("limits", *argv)
    assert code == 2, (out, err)
    assert expected in err, err
    assert err.startswith("budgetguard: error: limits ")
    assert not world.book()


def test_a_memory_store_is_refused_for_writes(tmp_path: Path) -> None:
    config = tmp_path / "plans.toml"  # no store: the default, in-process
    config.write_text('[policy.plans]\npro = [{ scope = "tenant", usd = 5, window = "day" }]\n')
    for argv in (
        ["set", "tenant", "acme", "--usd", "5", "--window", "day"],
        ["rm", "tenant", "acme"],
        ["plan", "acme", "pro"],
    ):
        for where in (["--config", str(config)], ["--store", "memory://"]):
            err = io.StringIO()
            old, sys.stderr = sys.stderr, err
            try:
                code = main(["limits", *argv, *where], out=io.StringIO())
            finally:
                sys.stderr = old
            assert code == 2
            assert f"limits {argv[0]}: the store" in err.getvalue()
            assert "lives inside this one process" in err.getvalue()
            assert "--store redis://" in err.getvalue()


# -- the library obeys what the CLI stored ----------------------------------------------


def test_a_limit_set_by_the_cli_binds_the_library(world: World) -> None:
    store = world.configure_library()
    try:
        code, _, _ = world.run(
            "limits", "set", "feature", "chat", "--requests", "2", "--window", "day"
        )
        assert code == 0
        for _ in range(2):
            call(1_000, (10, 5), tenant="acme", user="u-1", feature="chat")
        with pytest.raises(bg.BudgetExceeded) as refused:
            call(1_000, (10, 5), tenant="acme", user="u-1", feature="chat")
        assert (refused.value.scope, refused.value.unit) == ("feature", "requests")
        call(1_000, (10, 5), tenant="acme", user="u-1", feature="search")  # others unaffected

        # a plan put by the CLI: free allows one call a day per tenant
        world.ok("limits", "plan", "initech", "free")
        call(1_000, (10, 5), tenant="initech", user="u-2", feature="search")
        with pytest.raises(bg.BudgetExceeded) as refused:
            call(1_000, (10, 5), tenant="initech", user="u-2", feature="search")
        assert (refused.value.scope, refused.value.unit) == ("tenant", "requests")

        # and removing it lets calls through again
        world.ok("limits", "rm", "feature", "chat")
        call(1_000, (10, 5), tenant="acme", user="u-1", feature="chat")
        # no limit counts chat's requests any more: the counter keeps the 2 it had
        assert bg.status("feature", "chat", window="day", unit="requests").spent == 2
    finally:
        _config.reset()
        store.close()


# -- status for every kind of limit -----------------------------------------------------


def test_status_shows_tokens_requests_soft_stored_and_plan_limits(world: World) -> None:
    world.ok("limits", "plan", "acme", "pro")
    world.ok("limits", "plan", "--user", "u-7", "pro")  # has not spent: shows nowhere
    world.ok("limits", "set", "tenant", "globex", "--tokens", "5000", "--window", "day")
    code, _, _ = world.run(
        "limits", "set", "feature", "chat", "--requests", "10", "--window", "day", "--warn"
    )
    assert code == 0
    store = world.configure_library()
    try:
        call(12_345_678, (1200, 300), tenant="acme", user="u-1", feature="chat")
        call(7_000_000, (500, 50), tenant="globex", user="u-3", feature="chat")
        assert bg.status("tenant", "globex", unit="tokens").spent == 550
    finally:
        _config.reset()
        store.close()

    code, out, _ = world.run("status", "--json")
    assert code == 0
    rows = {(r["scope"], r["key"], r["tenant"], r["window"], r["unit"]): r for r in json.loads(out)}
    acme = rows["tenant", "acme", None, "month", "usd"]
    assert (acme["limit"], acme["spent"], acme["source"]) == ("500", "0.012345678", "plan:pro")
    assert acme["spent_nanos"] == 12_345_678 and acme["limit_usd"] == "500"
    globex = rows["tenant", "globex", None, "day", "tokens"]
    assert (globex["limit"], globex["spent"], globex["remaining"]) == (5000, 550, 4450)
    assert globex["source"] == "store" and globex["enforce"] == "refuse"
    assert globex["spent_nanos"] is None and globex["limit_usd"] is None
    assert rows["tenant", "globex", None, "month", "usd"]["source"] == "code"
    u1 = rows["user", "u-1", "acme", "day", "tokens"]
    assert (u1["limit"], u1["spent"], u1["source"]) == (1_000_000, 1500, "plan:pro")
    assert rows["user", "u-1", "acme", "day", "usd"]["source"] == "code"
    assert ("user", "u-3", "globex", "day", "tokens") not in rows  # globex is on no plan
    chat = rows["feature", "chat", None, "day", "requests"]
    assert (chat["limit"], chat["spent"], chat["enforce"], chat["source"]) == (
        10,
        2,
        "warn",
        "store",
    )

    code, out, _ = world.run("status")
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[-2:] == ["ENFORCE", "SOURCE"]
    table = {(r[0], r[1], r[3] if len(r) > 3 else ""): r for r in rows_of(out)}
    assert table["feature", "chat", "day"][4:9] == [
        "10 requests",
        "2 requests",
        "0 requests",
        "8 requests",
        "20.0%",
    ]
    assert table["feature", "chat", "day"][-2:] == ["warn", "store"]
    assert "1,500 tokens" in out and "998,500 tokens" in out

    code, out, _ = world.run("status", "--unit", "tokens", "--json")
    assert {r["unit"] for r in json.loads(out)} == {"tokens"}
    code, out, _ = world.run("status", "--scope", "user", "--tenant", "acme", "--csv")
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert [(r["key"], r["unit"], r["spent"]) for r in parsed] == [
        ("u-1", "usd", "0.012345678"),
        ("u-1", "tokens", "1500"),
    ]
    code, out, _ = world.run("status", "--scope", "user", "--key", "u-7")
    assert "(user 'u-7' has not spent in the current day yet)" not in out  # named: shown
    assert "1,000,000 tokens" in out and "plan:pro" in out
    code, out, _ = world.run("status", "--scope", "user", "--tenant", "globex")
    assert "u-7" in out and "has not spent" in out and "u-7  " not in out


def test_status_with_only_stored_limits(redis_url: str, tmp_path: Path) -> None:
    world = make_world(redis_url, tmp_path, limits="", enforce="refuse")
    try:
        code, _, err = world.run("status")
        assert code == 2 and "no limits configured" in err
        world.ok("limits", "set", "tenant", "acme", "--usd", "1", "--window", "day")
        code, out, _ = world.run("status", "--json")
        assert code == 0
        assert [(r["key"], r["limit"], r["source"]) for r in json.loads(out)] == [
            ("acme", "1", "store")
        ]
        world.ok("limits", "rm", "tenant", "acme")
        world.ok("limits", "plan", "acme", "free")  # a plan alone is enough
        code, out, _ = world.run("status", "--json")
        assert [(r["key"], r["unit"], r["source"]) for r in json.loads(out)] == [
            ("acme", "requests", "plan:free")
        ]
    finally:
        _cleanup(world)


def test_a_soft_policy_shows_warn(redis_url: str, tmp_path: Path) -> None:
    world = make_world(redis_url, tmp_path, limits=CODE_LIMITS, enforce="warn")
    try:
        code, out, _ = world.run("limits")
        assert code == 0 and "enforce: warn" in out
        assert {r[4] for r in rows_of(out.split("\n\n")[0])} == {"warn"}
        code, out, _ = world.run("status", "--scope", "tenant", "--key", "acme", "--json")
        assert [(r["enforce"], r["limit"]) for r in json.loads(out)] == [("warn", "100")]
    finally:
        _cleanup(world)


# -- reset and counter keys with a unit ---------------------------------------------------


def test_reset_a_token_counter(world: World) -> None:
    world.ok("limits", "set", "tenant", "--tokens", "5000", "--window", "day")
    store = world.configure_library()
    try:
        call(2_000_000, (400, 100), tenant="acme", user="u-1", feature="chat")
    finally:
        _config.reset()
        store.close()

    def spent(unit: str, window: str) -> object:
        out = world.ok("status", "--scope", "tenant", "--key", "acme", "--json")
        rows = {(r["unit"], r["window"]): r["spent"] for r in json.loads(out)}
        return rows[unit, window]

    assert (spent("tokens", "day"), spent("usd", "month")) == (500, "0.002")
    code, out, _ = world.run(
        "reset", "--scope", "tenant", "--key", "acme", "--unit", "tokens", "--yes"
    )
    assert code == 0, out
    assert "1 counter bucket(s) of scope=tenant key=acme unit=tokens" in out
    assert ":day:tokens:" in out
    assert (spent("tokens", "day"), spent("usd", "month")) == (0, "0.002")
    code, out, _ = world.run("reset", "--scope", "tenant", "--key", "acme", "--yes")
    assert code == 0 and "reset 1 counter bucket(s)" in out  # the dollars; tokens are gone
    assert spent("usd", "month") == "0"
    code, _, err = world.run("reset", "--all", "--unit", "tokens", "--yes")
    assert code == 2 and "--unit" in err


def test_counter_keys_with_a_unit() -> None:
    assert parse_counter_key("tenant=acme:day:tokens") == ("tenant", "acme", "acme", "day")
    assert parse_counter_key("tenant=a/user=u%3A1:month:requests") == (
        "user",
        "u:1",
        "a",
        "month",
    )
    assert parse_counter_key("tenant=acme:day") == ("tenant", "acme", "acme", "day")
    assert split_unit("feature=x:day:requests") == ("feature=x:day", "requests")
    assert split_unit("feature=tokens:day") == ("feature=tokens:day", "usd")
    assert key_unit("bg:{acme}:c:tenant=acme:day:tokens:1700000000") == "tokens"
    assert key_unit("bg:{acme}:c:tenant=acme:day:1700000000") == "usd"
    assert key_unit("bg:{acme}:a:tenant=acme:day:requests:1700000000:0.8", "a") == "requests"
    assert key_unit("bg:{acme}:a:tenant=acme:day:1700000000:0.8", "a") == "usd"
    assert key_unit("bg:{acme}:lease:x") is None


def test_listing_survives_an_unreadable_store(tmp_path: Path) -> None:
    err = io.StringIO()
    old, sys.stderr = sys.stderr, err
    try:
        out = io.StringIO()
        code = main(["limits", "--store", "redis://127.0.0.1:1/0?socket_timeout=0.5"], out=out)
    finally:
        sys.stderr = old
    assert code == 0 and "(no limits configured)" in out.getvalue()
    assert "could not be read" in out.getvalue() and "could not be read" in err.getvalue()


def test_amounts_are_exact_in_json(world: World) -> None:
    code, _, _ = world.run(
        "limits", "set", "user", "u-1", "--usd", "0.000000001", "--tokens", "7", "--window", "week"
    )
    assert code == 0
    row = next(r for r in json.loads(world.run("limits", "--json")[1])["limits"] if r["key"])
    assert (row["usd"], row["tokens"]) == ("0.000000001", 7)
    assert Decimal(row["usd"]) == Decimal("1E-9")
    code, out, _ = world.run("limits")
    assert "$0.000000001, 7 tokens" in out
