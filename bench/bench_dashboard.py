"""The dashboard's default view on a 1-million-row SQLite ledger: target <= 1 s.

    python bench/bench_dashboard.py [--rows 1000000] [--quick] [--keep PATH]
    python bench/bench_dashboard.py --screenshots     # refresh docs/img/dashboard-*.png

Builds a ledger with the library's own table and indexes (``Dialect.create()``),
rows in time order as the ledger's writer appends them, then times, over HTTP,
every request the page makes when it opens (spend by feature - which also feeds
cost per call - model, user and tenant breakdowns, savings, denials): one after
the other, and all at once as the browser sends them. Cold (first) and warm
(median of 5) figures, on two shapes of the same million rows:

- all of them in the last 7 days: the default view aggregates every row (worst case);
- spread over 90 days: the default view reads its 7 days out of 90.

Then the same worst case without the dashboard's indexes (why they exist), and
what the indexes cost the ledger's writer (rows per second, batches of 500).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from budgetguard._core.usage import Usage
from budgetguard.observe.dashboard import DashboardServer
from budgetguard.observe.ledger import open_ledger
from budgetguard.observe.ledger.sql import DASHBOARD_INDEXES, Dialect
from budgetguard.pricing.book import PriceBook

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import header, table

TABLE = "budgetguard_ledger"
DEFAULT_VIEW = [
    "spend?since=7d&by=feature",
    "breakdown?since=7d&by=model&top=10",
    "breakdown?since=7d&by=user&top=10",
    "breakdown?since=7d&by=tenant&top=10",
    "savings?since=7d",
    "events?since=7d&limit=50",
]
FEATURES = [
    ("chat", 6),
    ("summarize", 3),
    ("document_analysis", 2),
    ("search", 2),
    ("classify", 4),
    ("agent", 1),
]
MODELS = [  # (asked, used, weight): a downgrade when they differ
    ("gpt-4o", "gpt-4o", 3),
    ("gpt-4o", "gpt-4o-mini", 2),
    ("gpt-4o-mini", "gpt-4o-mini", 6),
    ("claude-sonnet-4-5", "claude-sonnet-4-5", 2),
    ("claude-opus-4-5", "claude-haiku-4-5", 1),
    ("claude-haiku-4-5", "claude-haiku-4-5", 2),
]


def _weighted(items: list[Any], rnd: random.Random, n: int) -> list[Any]:
    return rnd.choices([i[:-1] if len(i) > 2 else i[0] for i in items], [i[-1] for i in items], k=n)


def build(path: Path, rows: int, days: int, *, indexes: bool = True, seed: int = 16) -> float:
    """A ledger of ``rows`` calls over the last ``days``; returns seconds taken."""
    started = time.perf_counter()
    rnd = random.Random(seed)
    book = PriceBook()
    shapes = [(rnd.randrange(200, 8000), rnd.randrange(20, 1200)) for _ in range(64)]
    costs = {
        (model, s): book.cost(model, Usage(input_tokens=i, output_tokens=o))
        for _, model, _ in MODELS
        for s, (i, o) in enumerate(shapes)
    }
    now_us = int(time.time() * 1_000_000)
    span = days * 86_400 * 1_000_000
    at = sorted(now_us - rnd.randrange(span) for _ in range(rows))
    features = _weighted(FEATURES, rnd, rows)
    pairs = _weighted(MODELS, rnd, rows)
    dialect = Dialect("sqlite", TABLE)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    statements = dialect.create()
    conn.execute(statements[0])  # the table; indexes after the bulk insert (faster)

    def values() -> Any:
        for n in range(rows):
            asked, used = pairs[n]
            shape = rnd.randrange(64)
            luck = rnd.random()
            outcome = "ok" if asked == used else "downgraded"
            cost = costs[used, shape]
            if luck < 0.01:
                outcome, cost = "denied", 0
            elif luck < 0.012:
                outcome = "over_soft_limit"
            elif luck < 0.014:
                outcome, cost = "error", 0
            i, o = shapes[shape]
            tenant = f"tenant-{min(int(rnd.paretovariate(1.2)), 60):02d}"
            yield (
                at[n],
                outcome,
                "production" if luck < 0.85 else "staging",
                tenant,
                f"user-{min(int(rnd.paretovariate(0.9)), 3000):04d}",
                features[n],
                "{}",
                asked,
                used,
                i,
                0,
                0,
                o,
                0,
                cost + 1000,
                cost,
                rnd.randrange(200_000, 4_000_000),
                None,
                "provider returned 529 overloaded" if outcome == "error" else None,
            )

    conn.executemany(dialect.insert(), values())
    conn.commit()
    for statement in statements[1:] if indexes else statements[1:2]:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return time.perf_counter() - started


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read()
        json.loads(body)
        return len(body)


def time_view(path: Path) -> dict[str, float]:
    """Seconds for the default view: sequential cold, sequential warm, parallel warm."""
    ledger = open_ledger(path, must_exist=True)
    server = DashboardServer(ledger, port=0, refresh_s=0)
    server.start()
    urls = [server.url + "api/" + q for q in DEFAULT_VIEW]
    try:

        def sequential() -> float:
            t = time.perf_counter()
            for url in urls:
                _get(url)
            return time.perf_counter() - t

        def parallel() -> float:
            t = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
                list(pool.map(_get, urls))
            return time.perf_counter() - t

        cold = sequential()
        warm = statistics.median(sequential() for _ in range(5))
        both = statistics.median(parallel() for _ in range(5))
        each = {}
        for q, url in zip(DEFAULT_VIEW, urls, strict=True):
            t = time.perf_counter()
            _get(url)
            each[q.split("&top")[0].split("&limit")[0]] = time.perf_counter() - t
    finally:
        server.close()
        ledger.close()
    return {"cold": cold, "warm": warm, "parallel": both, **each}


def writer_cost(folder: Path, rows: int = 100_000) -> dict[str, float]:
    """Rows per second the ledger's writer commits (batches of 500), with and
    without the dashboard's indexes."""
    out = {}
    for label, indexes in (("without", False), ("with", True)):
        path = folder / f"writer-{label}.db"
        build(path, 1, 1, indexes=indexes)  # the table (and indexes) only
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        dialect = Dialect("sqlite", TABLE)
        now = int(time.time() * 1_000_000)
        row = ["ok", "production", "t", "u", "chat", "{}", "gpt-4o", "gpt-4o"]
        batch = [
            (now + n, *row, 1000, 0, 0, 100, 0, 5000, 4000, 1000, None, None) for n in range(500)
        ]
        t = time.perf_counter()
        for k in range(rows // 500):
            conn.executemany(dialect.insert(), [(b[0] + k * 500, *b[1:]) for b in batch])
            conn.commit()
        out[label] = rows / (time.perf_counter() - t)
        conn.close()
    return out


def screenshots(folder: Path) -> None:
    """A realistic 60,000-row ledger and budgets, one screenshot per view."""
    from playwright.sync_api import sync_playwright

    from budgetguard._core.errors import BudgetExceeded
    from budgetguard._core.policy import Limit, Policy
    from budgetguard._engine import config as _config
    from budgetguard._engine.flow import admit_cost
    from budgetguard._engine.guard import spend_limit
    from budgetguard.cli.context import Context
    from budgetguard.cli.dashboard import budget_rows
    from budgetguard.stores.memory import MemoryStore

    path = folder / "shots.db"
    build(path, 60_000, 7)
    policy = Policy(
        limits=[
            Limit(scope="global", usd=500, window="month"),
            Limit(scope="tenant", usd=40, window="day"),
            Limit(scope="feature", key="agent", usd=5, window="day"),
            Limit(scope="user", usd=2, window="day", enforce="warn"),
        ]
    )
    store = MemoryStore()
    _config.configure(store=store, policy=policy)
    rnd = random.Random(3)
    for _ in range(150):
        try:
            tenant = f"tenant-{rnd.randrange(1, 4):02d}"
            user = f"user-{rnd.randrange(1, 4):04d}"
            feature = rnd.choice(["chat", "agent", "summarize"])
            with spend_limit(tenant=tenant, user=user, feature=feature):
                admit_cost(300_000_000, model="gpt-4o").settle_nanos(
                    rnd.randrange(20_000_000, 300_000_000), model="gpt-4o"
                )
        except BudgetExceeded:
            pass
    _config.reset()
    ctx = Context(policy=policy, store_obj=store)
    ledger = open_ledger(path, must_exist=True)
    server = DashboardServer(ledger, budgets=lambda: budget_rows(ctx), port=0, refresh_s=0)
    server.start()
    out = Path(__file__).resolve().parents[1] / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            for view in ("spend", "budgets", "models", "people", "savings", "alerts", "whatif"):
                page.goto(f"{server.url}#{view}")
                page.wait_for_selector("body[data-loaded='1']")
                if view == "whatif":
                    page.fill("#whatif-to", "gpt-4o-mini,gemini-2.5-flash")
                    page.click("#whatif-form button")
                    page.wait_for_selector("body[data-loaded='2']")
                page.screenshot(path=str(out / f"dashboard-{view}.png"), full_page=True)
                print(f"docs/img/dashboard-{view}.png")
            browser.close()
    finally:
        server.close()
        ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 rows")
    parser.add_argument("--keep", type=Path, help="build the worst-case ledger here, keep it")
    parser.add_argument("--screenshots", action="store_true", help="refresh docs/img")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.screenshots:
            screenshots(folder)
            return
        rows = 100_000 if args.quick else args.rows
        results = []
        for label, days, indexes in (
            ("all rows in the last 7 days", 7, True),
            ("rows over 90 days", 90, True),
            ("all in 7 days, no dashboard indexes", 7, False),
        ):
            path = args.keep if args.keep and days == 7 and indexes else folder / "l.db"
            path.unlink(missing_ok=True)
            built = build(path, rows, days, indexes=indexes)
            size = path.stat().st_size / 1e6
            timing = time_view(path)
            results.append((label, built, size, timing))
            if path.parent == folder:
                path.unlink()
        write = writer_cost(folder)
    print(header(f"Dashboard: default view on a {rows:,}-row SQLite ledger"))
    print()
    print(
        table(
            ["ledger", "build s", "file MB", "cold s", "warm s", "parallel s"],
            [
                (
                    label,
                    f"{built:.1f}",
                    f"{size:.0f}",
                    f"{t['cold']:.3f}",
                    f"{t['warm']:.3f}",
                    f"{t['parallel']:.3f}",
                )
                for label, built, size, t in results
            ],
        )
    )
    print()
    worst = results[0][3]
    print(
        table(
            ["request (worst case, warm)", "s"],
            [(q, f"{s:.3f}") for q, s in worst.items() if q not in ("cold", "warm", "parallel")],
        )
    )
    print()
    print(
        table(
            ["ledger writer (batches of 500)", "rows/s"],
            [
                (f"{label} the {len(DASHBOARD_INDEXES)} dashboard indexes", f"{rate:,.0f}")
                for label, rate in write.items()
            ],
        )
    )
    target = "met" if worst["cold"] <= 1.0 else "MISSED"
    print(f"\ntarget <= 1 s for the default view (worst case, cold, sequential): {target}")


if __name__ == "__main__":
    main()
