"""The dashboard: its JSON API against the ledger's own totals, its refusals, the CLI,
and the page itself in a real headless browser (Debian's chromium, driven by playwright).

Set ``BUDGETGUARD_SCREENSHOTS=1`` to refresh docs/img/dashboard-*.png from the browser test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from budgetguard._core.errors import BudgetExceeded
from budgetguard._core.money import nanos_to_usd
from budgetguard._core.policy import Limit, Policy
from budgetguard._core.usage import Usage
from budgetguard._engine import config as _config
from budgetguard._engine.flow import admit_cost
from budgetguard._engine.guard import spend_limit
from budgetguard.cli import main
from budgetguard.cli.context import Context
from budgetguard.cli.dashboard import budget_rows
from budgetguard.observe.dashboard import DashboardServer, parse_query
from budgetguard.observe.dashboard.queries import BadParameter
from budgetguard.observe.ledger import Ledger, LedgerRow, SQLiteLedger, open_ledger
from budgetguard.pricing.book import PriceBook
from budgetguard.stores.memory import MemoryStore

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HOUR_US = 3_600_000_000
NOW_US = int(time.time() * 1_000_000)


def row(hours_ago: float, **fields: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "at_us": NOW_US - int(hours_ago * HOUR_US),
        "outcome": "ok",
        "environment": "prod",
        "tenant": "acme",
        "user": "u-1",
        "feature": "chat",
        "tags": {},
        "requested_model": "gpt-4o",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 200,
        "reasoning_tokens": 0,
        "estimate_nanos": 9_000_000,
        "cost_nanos": 4_500_000,
        "latency_us": 800_000,
        "reservation_id": None,
        "error": None,
    }
    values.update(fields)
    return LedgerRow(**values)


@dataclass
class World:
    ledger: Ledger  # read-only, as the CLI opens it
    ctx: Context
    server: DashboardServer

    def get(self, path: str, *, host: str | None = None, method: str = "GET") -> tuple[int, Any]:
        request = urllib.request.Request(self.server.url + path.lstrip("/"), method=method)
        if host is not None:
            request.add_header("Host", host)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


def _fill(path: Path) -> Context:
    """Real guarded calls (memory store, ledger listener), then rows of every kind."""
    policy = Policy(
        limits=[
            Limit(scope="global", usd=100, window="day"),
            Limit(scope="feature", key="chat", usd="0.05", window="day"),
        ]
    )
    store = MemoryStore()
    writer = SQLiteLedger(path, environment="prod")
    _config.configure(store=store, policy=policy, listeners=[writer])
    try:
        for user, feature, nanos in [
            ("u-1", "chat", 12_345_678),
            ("u-2", "chat", 30_000_001),
            ("u-2", "summarize", 7),
            ("u-3", "chat", 999_999_999),  # past the feature's $0.05: denied
        ]:
            try:
                with spend_limit(tenant="acme", user=user, feature=feature):
                    admission = admit_cost(nanos + 1000, model="gpt-4o")
                    admission.settle_nanos(
                        nanos, model="gpt-4o", usage=Usage(input_tokens=500, output_tokens=100)
                    )
            except BudgetExceeded:
                pass
    finally:
        _config.reset()
    writer.put(row(30, feature="summarize", tenant="globex", user="u-9", cost_nanos=7_000_001))
    writer.put(row(50, feature=None, tenant=None, user=None, environment="staging"))
    writer.put(row(60, requested_model="gpt-4o", model="gpt-4o-mini", outcome="downgraded"))
    writer.put(
        row(
            61,
            requested_model="claude-opus-4-5",
            model="claude-haiku-4-5",
            outcome="downgraded",
            cached_tokens=300,
            cost_nanos=1_234_567,
        )
    )
    for tokens in (300_000, 1_000, 1_000):  # a long-context tier: priced call by call
        writer.put(
            row(
                70,
                requested_model="claude-sonnet-4-5",
                model="claude-haiku-4-5",
                outcome="downgraded",
                input_tokens=tokens,
                cost_nanos=1_000,
            )
        )
    writer.put(row(2, outcome="over_soft_limit", user="u-7", cost_nanos=90_000_000))
    writer.put(row(3, outcome="error", error="provider said 500", cost_nanos=0))
    writer.put(row(400, feature="ancient", cost_nanos=5))  # before the default 7 days
    assert writer.flush(10)
    writer.close()
    return Context(policy=policy, store_obj=store)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    path = tmp_path_factory.mktemp("dash") / "ledger.db"
    ctx = _fill(path)
    ledger = open_ledger(path, must_exist=True)
    server = DashboardServer(
        ledger, budgets=lambda: budget_rows(ctx), prices=PriceBook(), port=0, refresh_s=0
    )
    server.start()
    try:
        yield World(ledger, ctx, server)
    finally:
        server.close()
        ledger.close()


# -- the API equals the ledger -----------------------------------------------------


def test_spend_total_equals_the_ledger_total(world: World) -> None:
    status, spend = world.get("/api/spend")
    cost, calls = world.ledger.total(since="7d")
    assert status == 200
    assert spend["total"]["nanos"] == cost
    assert spend["total"]["usd"] == str(nanos_to_usd(cost))
    assert spend["total"]["calls"] == calls
    assert spend["total"]["denied"] == 1
    assert spend["bucket"] == "day"  # 7 days: daily buckets by default


@pytest.mark.parametrize("by", ["feature", "model", "user", "tenant", "environment"])
def test_groups_equal_the_ledger_report(world: World, by: str) -> None:
    report = {r.key or "(none)": r for r in world.ledger.report(by=by, since="7d")}
    _, spend = world.get(f"/api/spend?by={by}&top=100")
    assert {s["key"]: s["total_usd"] for s in spend["series"]} == {
        k: str(r.cost) for k, r in report.items()
    }
    assert {s["key"]: s["total_calls"] for s in spend["series"]} == {
        k: r.calls for k, r in report.items()
    }
    _, groups = world.get(f"/api/breakdown?by={by}&top=100")
    assert [(g["key"], g["usd"]) for g in groups["rows"]] == sorted(
        ((k, str(r.cost)) for k, r in report.items()),
        key=lambda kv: (-Decimal(kv[1]), -report[kv[0]].calls, kv[0]),
    )


def test_hour_and_day_buckets_hold_the_same_money(world: World) -> None:
    _, hours = world.get("/api/spend?since=3d&bucket=hour")
    _, days = world.get("/api/spend?since=3d&bucket=day")
    assert hours["total"] == days["total"]
    assert len(hours["labels"]) in (73, 74) and len(days["labels"]) in (3, 4)
    for series in (hours, days):
        summed = sum(Decimal(v) for s in series["series"] for v in s["usd"])
        assert summed == Decimal(series["total"]["usd"])


def test_filters_and_the_rest_folded_into_other(world: World) -> None:
    _, chat = world.get("/api/spend?feature=chat")
    rows = [r for r in world.ledger.rows(since="7d") if r.feature == "chat"]
    assert chat["total"]["nanos"] == sum(r.cost_nanos for r in rows)
    _, none = world.get("/api/spend?tenant=(none)")
    assert none["total"]["calls"] == 1
    _, top1 = world.get("/api/spend?by=user&top=1")
    assert [s["key"] for s in top1["series"]][-1] == "(other)"
    _, all_ = world.get("/api/spend")
    assert top1["total"] == all_["total"]


def test_savings_price_the_asked_model(world: World) -> None:
    _, savings = world.get("/api/savings")
    book = PriceBook()
    expected = {
        ("gpt-4o", "gpt-4o-mini"): book.cost("gpt-4o", Usage(input_tokens=1000, output_tokens=200))
        - 4_500_000,
        ("claude-opus-4-5", "claude-haiku-4-5"): book.cost(
            "claude-opus-4-5", Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=300)
        )
        - 1_234_567,
        ("claude-sonnet-4-5", "claude-haiku-4-5"): sum(
            book.cost("claude-sonnet-4-5", Usage(input_tokens=n, output_tokens=200))
            for n in (300_000, 1_000, 1_000)
        )
        - 3_000,
    }
    got = {(r["requested_model"], r["model"]): r["saved_usd"] for r in savings["rows"]}
    assert got == {k: str(nanos_to_usd(v)) for k, v in expected.items()}
    assert savings["saved_usd"] == str(nanos_to_usd(sum(expected.values())))


def test_events_list_denials_and_alerts_newest_first(world: World) -> None:
    _, events = world.get("/api/events")
    outcomes = [e["outcome"] for e in events["rows"]]
    assert sorted(outcomes) == ["denied", "error", "over_soft_limit"]
    assert [e["at"] for e in events["rows"]] == sorted(
        (e["at"] for e in events["rows"]), reverse=True
    )


def test_budgets_come_from_the_store(world: World) -> None:
    status, budgets = world.get("/api/budgets")
    assert status == 200
    by_scope = {b["scope"]: b for b in budgets["rows"]}
    assert by_scope["global"]["limit"] == "100"
    assert Decimal(by_scope["global"]["spent"]) == nanos_to_usd(12_345_678 + 30_000_001 + 7)
    assert by_scope["feature"]["subject"] == "chat"
    assert by_scope["feature"]["hot"] is True  # 85% of its $0.05
    assert by_scope["global"]["resets_at"].endswith("UTC")


def test_what_if_is_budgetguard_compare(world: World) -> None:
    from budgetguard.observe.whatif import reprice

    status, found = world.get("/api/whatif?to=gpt-4o-mini,claude-haiku-4-5&since=7d")
    assert status == 200
    expected = reprice(world.ledger, ["gpt-4o-mini", "claude-haiku-4-5"], since="7d")
    assert found["total"]["usd"] == str(expected.total.cost)
    assert [t["usd"] for t in found["total"]["targets"]] == [
        str(t.cost) for t in expected.total.targets
    ]
    assert [r["key"] for r in found["rows"]] == [c.feature or "(none)" for c in expected.features]
    _, chat = world.get("/api/whatif?to=gpt-4o-mini&feature=chat")
    assert [r["key"] for r in chat["rows"]] == ["chat"]


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("/api/spend?colour=red", "colour"),
        ("/api/spend?since=yesterday", "since"),
        ("/api/spend?since=1d&until=2d", "since"),
        ("/api/spend?until=not-a-date", "until"),
        ("/api/spend?by=planet", "by"),
        ("/api/spend?bucket=week", "bucket"),
        ("/api/spend?since=90d&bucket=hour", "bucket"),
        ("/api/spend?top=0", "top"),
        ("/api/breakdown?top=x", "top"),
        ("/api/events?limit=100000", "limit"),
        ("/api/spend?feature=", "feature"),
        ("/api/spend?user=a&user=b", "user"),
        ("/api/savings?by=model", "by"),
        ("/api/budgets?x=1", "x"),
        ("/api/whatif", "to"),
        ("/api/whatif?to=,", "to"),
        ("/api/whatif?to=no-such-model-anywhere", "to"),
        ("/api/whatif?to=gpt-4o-mini&user=u-1", "user"),
        ("/api/whatif?to=gpt-4o-mini&by=model", "by"),
    ],
)
def test_a_bad_filter_is_a_400_naming_it(world: World, query: str, name: str) -> None:
    status, body = world.get(query)
    assert status == 400
    assert body["parameter"] == name and body["error"].startswith(f"{name}: ")


def test_parse_query_names_the_parameter() -> None:
    with pytest.raises(BadParameter, match=r"^model: expected 1 to 200"):
        parse_query({"model": ["x" * 201]})
    assert parse_query({}).bucket == "day" and parse_query({"since": ["24h"]}).bucket == "hour"


def test_read_only_local_and_offline(world: World) -> None:
    for method in ("POST", "PUT", "DELETE"):
        assert world.get("/api/spend", method=method)[0] == 405
    assert world.get("/api/spend", host="evil.example:80")[0] == 403
    assert world.get("/api/nothing")[0] == 404
    with urllib.request.urlopen(world.server.url, timeout=10) as response:
        csp = response.headers["Content-Security-Policy"]
        page = response.read().decode()
    assert "default-src 'self'" in csp
    for name, body in world.server.files.items():
        if name.endswith((".html", ".js", ".css")) and name != "chart.umd.min.js":
            text = body.decode()
            assert "http://" not in text and "https://" not in text, name
    assert '<script src="/static/chart.umd.min.js"' in page
    assert world.server.server_address[0] == "127.0.0.1"


# -- the command ---------------------------------------------------------------------------


def test_a_ledger_that_does_not_exist_is_an_error_and_nothing_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "ledger.db"
    assert main(["dashboard", "--ledger", f"sqlite:///{missing}"]) == 2
    assert "no SQLite database" in capsys.readouterr().err
    assert not missing.exists() and not missing.parent.exists()
    assert main(["dashboard"]) == 2
    assert "no ledger configured" in capsys.readouterr().err


def test_a_busy_port_or_an_unreadable_ledger_is_a_clear_error(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = world.ledger.path  # type: ignore[attr-defined]
    port = world.server.server_address[1]
    assert main(["dashboard", "--ledger", str(path), "--port", str(port)]) == 2
    assert "--port: cannot listen on 127.0.0.1" in capsys.readouterr().err
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    assert main(["dashboard", "--ledger", str(junk), "--port", "0"]) == 1
    assert "not a database" in capsys.readouterr().err


def test_the_command_serves_until_stopped(world: World, redis_url: str, tmp_path: Path) -> None:
    path = world.ledger.path  # type: ignore[attr-defined]
    config = tmp_path / "budgetguard.toml"
    prefix = f"bgdash{uuid.uuid4().hex[:8]}"  # nothing is written under it: read-only
    config.write_text(
        f'store = "{redis_url}"\nprefix = "{prefix}"\n'
        '[[policy.limits]]\nscope = "global"\nusd = 25\nwindow = "day"\n'
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "budgetguard.cli",
            "dashboard",
            "--config",
            str(config),
            "--ledger",
            str(path),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "BUDGETGUARD_CONFIG": ""},
        cwd=path.parent,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "budgetguard dashboard on http://127.0.0.1:" in line, proc.stderr.read()
        url = line.split(" on ", 1)[1].split()[0]
        with urllib.request.urlopen(url + "api/spend", timeout=10) as response:
            total = json.loads(response.read())["total"]
        assert total["nanos"] == world.ledger.total(since="7d")[0]
        with urllib.request.urlopen(url + "api/budgets", timeout=10) as response:
            budgets = json.loads(response.read())["rows"]
        assert [(b["scope"], b["limit"], b["spent"]) for b in budgets] == [("global", "25", "0")]
        import redis

        client = redis.Redis.from_url(redis_url)
        assert list(client.scan_iter(match=f"{prefix}:*")) == []  # nothing written
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)


# -- the page, in a real browser ----------------------------------------------------------

VIEWS = ("spend", "budgets", "models", "people", "savings", "alerts", "whatif")


def shown(amount: Decimal) -> str:
    """How the page writes an exact amount: $1,234.5 -> $1,234.50, all other digits kept."""
    whole, _, fraction = f"{amount:,f}".partition(".")
    fraction = fraction.rstrip("0")
    return f"${whole}.{fraction if len(fraction) >= 2 else (fraction + '00')[:2]}"


def _playwright() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium binary at {CHROMIUM} (CI installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    return sync_api.sync_playwright


def test_the_page_shows_the_ledger_totals_with_no_console_error(world: World) -> None:
    sync_playwright = _playwright()
    problems: list[str] = []
    shots = ROOT / "docs" / "img" if os.environ.get("BUDGETGUARD_SCREENSHOTS") else None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.goto(world.server.url)
            page.wait_for_selector("body[data-loaded='1']", timeout=15_000)
            cost, calls = world.ledger.total(since="7d")
            total = page.locator("[data-testid=total-usd]")
            assert total.get_attribute("data-exact") == str(nanos_to_usd(cost))
            assert total.inner_text() == shown(nanos_to_usd(cost))  # every digit, no rounding
            assert page.locator("[data-testid=total-calls]").inner_text() == f"{calls:,}"
            _, savings = world.get("/api/savings")
            saved = page.locator("[data-testid=saved-usd]").get_attribute("data-exact")
            assert saved == savings["saved_usd"]
            report = {r.key or "(none)": r for r in world.ledger.report(by="feature", since="7d")}
            for key, r in report.items():
                cells = page.locator(f"#table-spend tr[data-key='{key}'] td").all_inner_texts()
                assert cells == [key, shown(r.cost), f"{r.calls:,}"]
            assert page.locator("#problem").is_hidden()
            for view in VIEWS:
                page.goto(f"{world.server.url}#{view}")
                page.wait_for_selector(f"#view-{view}.active")
                if view == "whatif":
                    loaded = int(page.locator("body").get_attribute("data-loaded") or 0)
                    page.fill("#whatif-to", "gpt-4o-mini,claude-haiku-4-5")
                    page.click("#whatif-form button")
                    page.wait_for_selector(f"body[data-loaded='{loaded + 1}']")
                    _, found = world.get("/api/whatif?to=gpt-4o-mini,claude-haiku-4-5")
                    last = page.locator("#table-whatif tbody tr").last
                    cells = last.locator("td").all_inner_texts()
                    assert cells[:3] == [
                        "(total)",
                        f"{found['total']['calls']:,}",
                        shown(Decimal(found["total"]["usd"])),
                    ]
                    assert cells[4] == shown(Decimal(found["total"]["targets"][0]["usd"]))
                assert page.locator(f"#view-{view} tbody tr").count() >= 1
                if shots is not None:
                    shots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(shots / f"dashboard-{view}.png"), full_page=True)
            models = page.locator("#table-models tbody tr").all()
            assert len(models) == len(world.ledger.report(by="model", since="7d"))
            # a filter chosen in the page: the totals follow it
            page.goto(world.server.url)
            page.wait_for_selector("body[data-loaded='1']")
            page.select_option("#f-dim", "feature")
            page.fill("#f-value", "chat")
            page.click("#filters button")
            page.wait_for_selector("body[data-loaded='2']")
            chat = sum(r.cost_nanos for r in world.ledger.rows(since="7d") if r.feature == "chat")
            assert total.get_attribute("data-exact") == str(nanos_to_usd(chat))
            # it refreshes itself
            again = DashboardServer(world.ledger, port=0, refresh_s=1)
            again.start()
            try:
                page.goto(again.url)
                page.wait_for_selector("body[data-loaded='2']", timeout=10_000)
                assert "every 1 s" in page.locator("#updated").inner_text()
            finally:
                page.goto("about:blank")
                again.close()
        finally:
            browser.close()
    assert problems == []


# -- the same queries on PostgreSQL ------------------------------------------------------

SPEND = ("by", "bucket", "top")
PG_DSN = os.environ.get("BUDGETGUARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def test_postgres_answers_the_same_as_its_report() -> None:
    psycopg = pytest.importorskip("psycopg")
    try:
        psycopg.connect(PG_DSN, connect_timeout=2).close()
    except Exception:
        pytest.skip(f"no PostgreSQL at {PG_DSN}")
    from budgetguard.observe.dashboard import Reader
    from budgetguard.observe.ledger import PostgresLedger

    table = f"bg_dash_{uuid.uuid4().hex[:12]}"
    pg = PostgresLedger(PG_DSN, table=table)
    try:
        for n in range(40):
            pg.put(row(n * 1.7, feature=f"f{n % 3}", user=f"u-{n % 5}", cost_nanos=1_000_003 * n))
        pg.put(row(5, requested_model="gpt-4o", model="gpt-4o-mini", outcome="downgraded"))
        pg.put(row(6, outcome="denied", cost_nanos=0))
        assert pg.flush(10)
        reader = Reader(pg)
        cost, calls = pg.total(since="7d")
        spend = reader.spend(parse_query({"by": ["user"], "top": ["100"]}, SPEND))
        assert (spend["total"]["nanos"], spend["total"]["calls"]) == (cost, calls)
        hours = reader.spend(parse_query({"since": ["3d"], "bucket": ["hour"]}, SPEND))
        assert hours["total"]["nanos"] == pg.total(since="3d")[0]
        report = {r.key: str(r.cost) for r in pg.report(by="user", since="7d")}
        assert {s["key"]: s["total_usd"] for s in spend["series"]} == report
        groups = reader.breakdown(parse_query({"by": ["feature"], "top": ["100"]}, SPEND))
        assert {g["key"]: g["usd"] for g in groups["rows"]} == {
            r.key: str(r.cost) for r in pg.report(by="feature", since="7d")
        }
        saved = reader.savings(parse_query({}))
        asked = PriceBook().cost("gpt-4o", Usage(input_tokens=1000, output_tokens=200))
        assert saved["saved_usd"] == str(nanos_to_usd(asked - 4_500_000))
        assert [e["outcome"] for e in reader.events(parse_query({}))["rows"]] == ["denied"]
    finally:
        pg.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
