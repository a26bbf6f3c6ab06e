"""The usage ledger (budgetguard/observe/ledger/) on SQLite and on a real PostgreSQL.

Every test that writes runs against both backends through the ``ledger``
fixture. PostgreSQL tests use a table unique to the test and drop it after.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from budgetguard._core.errors import BudgetExceeded, ConfigurationError
from budgetguard._core.money import usd_to_nanos
from budgetguard._core.policy import Limit, Policy
from budgetguard._core.usage import Usage
from budgetguard._engine import config as _config
from budgetguard._engine.flow import admit_cost
from budgetguard._engine.guard import spend_limit
from budgetguard._engine.status import status
from budgetguard.observe.ledger import (
    Ledger,
    LedgerRow,
    PostgresLedger,
    SQLiteLedger,
    open_ledger,
    parse_since,
)
from budgetguard.stores import MemoryStore, RedisStore

PG_DSN = os.environ.get("BUDGETGUARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[1]


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=2):
            return True
    except Exception:
        return False


PG = _pg_available()


def drop_pg_table(table: str, schema: str | None = None) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        if schema is not None:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        else:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    _config.reset()
    yield
    _config.reset()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        with SQLiteLedger(tmp_path / "ledger.db", batch_size=64) as lite:
            yield lite
        return
    if not PG:
        pytest.skip(f"no PostgreSQL at {PG_DSN}")
    table = f"bg_test_{uuid.uuid4().hex[:12]}"
    pg = PostgresLedger(PG_DSN, table=table, batch_size=64)
    try:
        yield pg
    finally:
        pg.close()
        drop_pg_table(table)


def row(**overrides: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "at_us": int(time.time() * 1_000_000),
        "outcome": "ok",
        "environment": "test",
        "tenant": "acme",
        "user": "u-1",
        "feature": "summarize",
        "tags": {"team": "search"},
        "requested_model": "gpt-4o",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "cached_tokens": 256,
        "cache_write_tokens": 0,
        "output_tokens": 200,
        "reasoning_tokens": 50,
        "estimate_nanos": 9_000_000,
        "cost_nanos": 4_500_123,
        "latency_us": 1234,
        "reservation_id": uuid.uuid4().hex,
        "error": None,
    }
    values.update(overrides)
    return LedgerRow(**values)


def guarded_call(
    nanos: int,
    *,
    user: str,
    feature: str,
    tenant: str = "acme",
    model: str = "gpt-4o",
    fail: bool = False,
) -> None:
    """One call through the real engine: reserve an estimate, settle the actual cost."""
    usage = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=128, reasoning_tokens=40)
    with spend_limit(user=user, feature=feature, tenant=tenant, tags={"run": "t"}):
        admission = admit_cost(nanos * 2 + 7, model=model)
        if fail:
            admission.release("provider error 500")
        else:
            admission.settle_nanos(nanos, model=model, usage=usage)


# -- round trip ------------------------------------------------------------------


def test_rows_round_trip_every_field(ledger: Ledger) -> None:
    written = [row(), row(outcome="denied", cost_nanos=0, user=None, tags={}, error="over")]
    for item in written:
        ledger.put(item)
    assert ledger.flush(10)
    assert ledger.rows() == written
    assert ledger.written == 2 and ledger.dropped == 0


def test_records_from_the_engine_match_the_store_to_the_nano(ledger: Ledger) -> None:
    """Sum of ledger costs == what the store says was spent, with denials and errors mixed in."""
    _config.configure(
        policy=Policy(limits=[Limit("user", usd="0.02", window="day")]),
        listeners=[ledger],
    )
    costs = [1_234_567, 333_333_333 // 100, 7, 999_999, 4_000_001]
    denied = 0
    for n in range(60):
        try:
            guarded_call(
                costs[n % len(costs)],
                user=f"u-{n % 3}",
                feature=("summarize", "chat")[n % 2],
                fail=n % 7 == 0,
            )
        except BudgetExceeded:
            denied += 1
    assert denied > 0, "the limit should have refused some calls"
    assert ledger.flush(10)
    rows = ledger.rows()
    assert len(rows) == 60
    assert sum(r.outcome == "denied" for r in rows) == denied
    assert {r.outcome for r in rows} == {"ok", "denied", "error"}
    for user in ("u-0", "u-1", "u-2"):
        spent = status("user", user, tenant="acme").spent
        in_ledger = sum(r.cost_nanos for r in rows if r.user == user)
        assert usd_to_nanos(spent) == in_ledger
        report = {r.key: r for r in ledger.report("user")}
        assert report[user].cost == spent
    ok = next(r for r in rows if r.outcome == "ok")
    assert (ok.input_tokens, ok.cached_tokens, ok.output_tokens, ok.reasoning_tokens) == (
        1200,
        128,
        300,
        40,
    )
    assert ok.estimate_nanos == ok.cost_nanos * 2 + 7
    assert ok.tags == {"run": "t"} and ok.tenant == "acme" and ok.model == "gpt-4o"
    error = next(r for r in rows if r.outcome == "error")
    assert error.cost_nanos == 0 and error.error == "provider error 500"


def test_many_threads_nothing_lost(ledger: Ledger) -> None:
    memory = MemoryStore()
    _config.configure(
        store=memory,
        policy=Policy(limits=[Limit("tenant", usd=1000, window="total")]),
        listeners=[ledger],
    )

    def work(worker: int) -> None:
        for n in range(100):
            guarded_call(1000 + worker * 100 + n, user=f"u-{worker}", feature="f")

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ledger.close()
    total, calls = ledger.total()
    assert calls == 800
    assert total == usd_to_nanos(status("tenant", "acme").spent)
    assert ledger.dropped == 0


# -- reports -----------------------------------------------------------------------


def test_report_groups_and_orders_by_cost(ledger: Ledger) -> None:
    day = 86_400_000_000
    now = int(time.time() * 1_000_000)
    ledger.put(row(feature="a", model="gpt-4o", cost_nanos=100, tags={"team": "x"}))
    ledger.put(row(feature="b", model="gpt-4o-mini", cost_nanos=300, tags={"team": "y"}))
    ledger.put(row(feature="b", model="gpt-4o-mini", cost_nanos=5, outcome="downgraded"))
    ledger.put(row(feature="b", outcome="denied", cost_nanos=0))
    ledger.put(row(feature=None, cost_nanos=1, outcome="error"))
    ledger.put(row(feature="old", cost_nanos=10**12, at_us=now - 10 * day))
    assert ledger.flush(10)

    by_feature = ledger.report("feature", since="7d")
    assert [r.key for r in by_feature] == ["b", "a", None]
    b = by_feature[0]
    assert (b.calls, b.ok, b.downgraded, b.denied, b.errors) == (3, 1, 1, 1, 0)
    assert b.cost_nanos == 305 and b.cost == Decimal("0.000000305")
    assert b.input_tokens == 3000 and b.output_tokens == 600

    assert ledger.report("feature")[0].key == "old"  # no since: everything
    assert {r.key: r.cost_nanos for r in ledger.report("model", since="7d")} == {
        "gpt-4o-mini": 305,
        "gpt-4o": 101,
    }
    assert {r.key: r.cost_nanos for r in ledger.report("tag:team", since="7d")} == {
        "y": 300,
        "x": 100,
        "search": 6,
    }
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert [(r.key, r.calls) for r in ledger.report("day", since="7d")] == [(today, 5)]
    assert ledger.report("environment", since="7d")[0].key == "test"
    until = datetime.now(UTC) - timedelta(days=5)
    assert [r.key for r in ledger.report("feature", until=until)] == ["old"]
    assert ledger.total(since="7d") == (406, 5)


def test_calls_over_a_soft_limit_are_rows_with_a_note_and_a_count(ledger: Ledger) -> None:
    """A soft limit (enforce="warn") passed: the row says which, the report counts it."""
    _config.configure(
        policy=Policy(limits=[Limit(scope="tenant", usd="0.01", window="day", enforce="warn")]),
        listeners=[ledger],
    )
    with spend_limit(tenant="acme", feature="soft"):
        for _ in range(3):  # $0.006 each: the 2nd and 3rd pass the soft $0.01
            admit_cost(6 * 10**6).settle_nanos(6 * 10**6)
    assert ledger.flush(10)
    rows = [r for r in ledger.rows(since="1h") if r.feature == "soft"]
    assert [r.outcome for r in rows] == ["ok", "over_soft_limit", "over_soft_limit"]
    assert rows[-1].error == "over soft limit: tenant acme day $0.01"
    [report] = [r for r in ledger.report("feature", since="1h") if r.key == "soft"]
    assert (report.calls, report.ok, report.over_soft, report.cost_nanos) == (3, 1, 2, 18 * 10**6)


def test_report_rejects_unknown_grouping(ledger: Ledger) -> None:
    with pytest.raises(ConfigurationError, match="by: expected one of"):
        ledger.report("colour")
    with pytest.raises(ConfigurationError, match="tag name"):
        ledger.report("tag:x'; drop table")


# -- off the request path -----------------------------------------------------------


def test_a_dead_database_never_slows_the_caller(tmp_path: Path) -> None:
    """PostgreSQL on a port nobody listens on: queueing stays O(1), the queue stays bounded."""
    dead = PostgresLedger("postgresql://postgres@127.0.0.1:1/test", max_queue=1000)
    started = time.perf_counter()
    for _ in range(5000):
        dead.put(row())
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"5000 puts took {elapsed:.3f}s"
    # the queue is bounded; the writer holds at most one batch besides
    assert dead.dropped >= 5000 - dead.max_queue - dead.batch_size
    assert not dead.flush(timeout=0.2)
    started = time.perf_counter()
    dead.close(timeout=1.0)
    assert time.perf_counter() - started < 15
    assert dead.dropped == 5000  # closing gave up on the unwritable rows, and counted them


class FlakySQLite(SQLiteLedger):
    """Fails its first connections, as a database restarting would."""

    retry_max_s = 0.05
    failures = 3

    def _connect(self, *, writer: bool = True) -> Any:
        if writer and self.failures > 0:
            self.failures -= 1
            raise OSError("database restarting")
        return super()._connect(writer=writer)


def test_rows_survive_a_database_outage(tmp_path: Path) -> None:
    with FlakySQLite(tmp_path / "flaky.db") as flaky:
        for n in range(50):
            flaky.put(row(cost_nanos=n))
        assert flaky.flush(10)
        assert flaky.total() == (sum(range(50)), 50)


def test_close_flushes_and_later_puts_are_counted_as_dropped(tmp_path: Path) -> None:
    lite = SQLiteLedger(tmp_path / "l.db", batch_size=7)
    for n in range(1000):
        lite.put(row(cost_nanos=n))
    lite.close()
    lite.close()  # idempotent
    assert SQLiteLedger(tmp_path / "l.db").total() == (sum(range(1000)), 1000)
    lite.put(row())
    assert lite.dropped == 1


def test_rows_are_flushed_at_interpreter_exit(tmp_path: Path) -> None:
    """No close(), no flush(): the atexit hook writes everything accepted."""
    db = tmp_path / "exit.db"
    code = (
        "import sys, dataclasses\n"
        "from budgetguard.observe.ledger import SQLiteLedger, LedgerRow\n"
        f"template = {row()!r}\n"
        "ledger = SQLiteLedger(sys.argv[1], batch_size=10)\n"
        "for n in range(2000): ledger.put(dataclasses.replace(template, cost_nanos=n))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, env=env, timeout=60)
    assert SQLiteLedger(db).total() == (sum(range(2000)), 2000)


def _child_writes(lg: Ledger) -> None:  # pragma: no cover - runs in a forked child
    for n in range(100):
        lg.put(row(cost_nanos=1000 + n, feature="child"))
    lg.close()  # multiprocessing ends children with os._exit: no atexit hooks


def test_a_forked_child_gets_its_own_writer(ledger: Ledger) -> None:
    """The parent's writer thread and connection stay the parent's; both sides' rows land."""
    for n in range(100):
        ledger.put(row(cost_nanos=n))
    assert ledger.flush(10)  # the parent has a live connection when it forks
    child = multiprocessing.get_context("fork").Process(target=_child_writes, args=(ledger,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    for n in range(100):
        ledger.put(row(cost_nanos=n))
    assert ledger.flush(10)
    assert ledger.total() == (2 * sum(range(100)) + sum(range(1000, 1100)), 300)


@pytest.mark.skipif(not PG, reason="needs PostgreSQL")
def test_postgres_schema_and_url_options() -> None:
    schema = f"bg_s_{uuid.uuid4().hex[:10]}"
    pg = open_ledger(f"{PG_DSN}?table=calls&schema={schema}")
    try:
        assert isinstance(pg, PostgresLedger)
        assert pg.dialect.table == f"{schema}.calls"
        pg.put(row(cost_nanos=42))
        assert pg.flush(10)
        assert pg.total() == (42, 1)
    finally:
        pg.close()
        drop_pg_table("calls", schema)


def test_redis_backed_store_and_ledger_agree(redis_url: str, tmp_path: Path) -> None:
    """The same to-the-nano check on the shared store."""
    store = RedisStore.from_url(redis_url, prefix=f"bgt{uuid.uuid4().hex[:8]}")
    with SQLiteLedger(tmp_path / "r.db") as lite:
        _config.configure(
            store=store,
            policy=Policy(limits=[Limit("feature", usd=1, window="total")]),
            listeners=[lite],
        )
        for n in range(30):
            guarded_call(123_456_789 // (n + 1), user="u", feature="summarize")
        assert lite.flush(10)
        spent = status("feature", "summarize").spent
        assert lite.report("feature")[0].cost == spent
        assert lite.total()[0] == usd_to_nanos(spent)
    keys = list(store.client.scan_iter(match=f"{store.prefix}:*"))
    if keys:
        store.client.delete(*keys)
    store.close()


# -- configuration -------------------------------------------------------------------


def test_open_ledger_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_ledger("sqlite:///rel.db")
    assert isinstance(relative, SQLiteLedger) and relative.path == Path("rel.db")
    absolute = open_ledger(f"sqlite:///{tmp_path}/abs.db?table=calls")
    assert isinstance(absolute, SQLiteLedger)
    assert absolute.path == tmp_path / "abs.db" and absolute.dialect.table == "calls"
    assert isinstance(open_ledger("plain.db"), SQLiteLedger)
    with pytest.raises(ConfigurationError, match="ledger: unsupported URL"):
        open_ledger("mysql://x")
    with pytest.raises(ConfigurationError, match="table: expected a SQL identifier"):
        SQLiteLedger("x.db", table="drop table x;")
    with pytest.raises(ConfigurationError, match="batch_size"):
        SQLiteLedger("x.db", batch_size=0)
    for lg in (relative, absolute):
        lg.close()


def test_parse_since() -> None:
    now = datetime.now(UTC)
    assert abs((now - parse_since("7d")) - timedelta(days=7)) < timedelta(seconds=5)
    assert abs((now - parse_since("90m")) - timedelta(minutes=90)) < timedelta(seconds=5)
    assert parse_since("2026-01-02") == datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(ConfigurationError, match="since: expected a duration"):
        parse_since("last tuesday")


# -- issue 11: a bad row never blocks the good ones; nothing lost at a child's exit -------


def test_a_bad_row_never_blocks_the_good_ones(ledger: Ledger) -> None:
    """A NUL in an id (PostgreSQL refuses it) or a number beyond BIGINT (SQLite overflows)
    used to make the writer retry the same batch forever: 50 of 251 rows stored."""
    good = [row(reservation_id=f"good-{n}", cost_nanos=1_000 + n) for n in range(240)]
    nul = [row(reservation_id=f"nul-{n}", tenant="ac\x00me", cost_nanos=7) for n in range(5)]
    huge = [row(reservation_id=f"huge-{n}", input_tokens=2**64) for n in range(6)]
    rows = good[:100] + nul + huge[:3] + good[100:] + huge[3:]
    for one in rows:
        ledger.put(one)
    assert ledger.flush(30)
    stored = {r.reservation_id: r for r in ledger.rows(limit=1000)}
    assert len(stored) == 245 and ledger.written == 245
    assert all(f"good-{n}" in stored for n in range(240))
    assert stored["nul-0"].tenant == "ac\ufffdme"  # cleaned, not lost
    assert (ledger.cleaned, ledger.rejected) == (5, 6)
    assert sorted(r.reservation_id or "" for r, _ in ledger.rejected_rows) == sorted(
        f"huge-{n}" for n in range(6)
    )
    assert all("BIGINT" in why for _, why in ledger.rejected_rows)


def _ledger_child(path: str) -> None:  # pragma: no cover - runs in a forked child
    _config.configure(listeners=[SQLiteLedger(path)])
    for _ in range(251):
        with spend_limit(tenant="t", usd=1):
            admit_cost(1_000).settle_nanos(900)


def test_a_forked_child_exiting_without_close_loses_no_row(tmp_path: Path) -> None:
    """A multiprocessing child ends with os._exit(): no atexit hook ran, and every queued
    row was lost (64% of a run's rows at normal exit)."""
    path = str(tmp_path / "child.db")
    child = multiprocessing.get_context("fork").Process(target=_ledger_child, args=(path,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    with SQLiteLedger(path) as reader:
        assert reader.total()[1] == 251
