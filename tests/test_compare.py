"""What-if repricing (budgetguard/observe/whatif.py, ``budgetguard compare``) on a real
SQLite file and a real PostgreSQL table: the re-priced costs equal genai-prices' own
answer for the same calls, to the nano-dollar, and the CLI prints them."""

from __future__ import annotations

import csv
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from provider_support import genai_price

from budgetguard._core.errors import ConfigurationError, UnknownModel
from budgetguard._core.money import format_usd, nanos_to_usd, usd_to_nanos
from budgetguard._core.usage import Usage
from budgetguard._engine import config as _config
from budgetguard._engine.flow import admit_cost
from budgetguard._engine.guard import spend_limit
from budgetguard.cli import main
from budgetguard.observe.ledger import Ledger, LedgerRow, PostgresLedger, SQLiteLedger
from budgetguard.observe.whatif import WhatIf, reprice
from budgetguard.pricing.book import PriceBook

PG_DSN = os.environ.get("BUDGETGUARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
HOUR_US = 3_600_000_000


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_DSN, connect_timeout=2):
            return True
    except Exception:
        return False


PG = _pg_available()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    _config.reset()
    yield
    _config.reset()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "sqlite":
        with SQLiteLedger(tmp_path / "ledger.db") as lite:
            yield lite
        return
    if not PG:
        pytest.skip(f"no PostgreSQL at {PG_DSN}")
    import psycopg

    table = f"bg_whatif_{uuid.uuid4().hex[:12]}"
    pg = PostgresLedger(PG_DSN, table=table)
    try:
        yield pg
    finally:
        pg.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def row(**overrides: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "at_us": int(time.time() * 1_000_000) - HOUR_US,
        "outcome": "ok",
        "environment": None,
        "tenant": "acme",
        "user": "u-1",
        "feature": "summarize",
        "tags": {},
        "requested_model": "gpt-4o",
        "model": "gpt-4o",
        "input_tokens": 1000,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 200,
        "reasoning_tokens": 0,
        "estimate_nanos": 9_000_000,
        "cost_nanos": 4_500_123,
        "latency_us": 1_000_000,
        "reservation_id": None,
        "error": None,
    }
    values.update(overrides)
    return LedgerRow(**values)


def _calls() -> list[LedgerRow]:
    """Three features on four models, cache reads and writes, reasoning, and some
    prompts past the 200k-token tier of claude-sonnet-4-5 (cliff pricing)."""
    rows = []
    for n in range(12):
        rows.append(
            row(
                input_tokens=1000 + 37 * n,
                cached_tokens=128 * (n % 3),
                output_tokens=150 + 11 * n,
                reasoning_tokens=5 * (n % 4),
                cost_nanos=4_000_000 + n,
                latency_us=900_000 + 10_000 * n,
            )
        )
    for n in range(5):
        rows.append(
            row(
                model="gpt-4o-mini-2024-07-18",
                outcome="downgraded",
                input_tokens=800 + n,
                output_tokens=90,
                cost_nanos=200_000 + n,
                latency_us=400_000,
            )
        )
    for n in range(6):
        big = n % 2 == 0
        rows.append(
            row(
                feature="research",
                model="claude-sonnet-4-5",
                input_tokens=(250_000 if big else 150_000) + n,
                cached_tokens=20_000,
                cache_write_tokens=3_000 * n,
                output_tokens=2_000 + n,
                cost_nanos=1_000_000_000 + n,
                latency_us=8_000_000,
            )
        )
    for n in range(3):
        rows.append(
            row(
                feature=None,
                model="claude-haiku-4-5",
                outcome="fitted" if n else "over_soft_limit",
                input_tokens=500,
                output_tokens=60 + n,
                cost_nanos=800_000,
                latency_us=600_000,
            )
        )
    return rows


_LEFT_OUT = [
    row(outcome="denied", input_tokens=0, output_tokens=0, cost_nanos=0),
    row(outcome="denied", input_tokens=0, output_tokens=0, cost_nanos=0),
    row(outcome="error", cost_nanos=17),
    row(outcome="unpriced", input_tokens=0, output_tokens=0, cost_nanos=9_000_000),
]


def _fill(ledger: Ledger, rows: list[LedgerRow]) -> None:
    for item in rows:
        ledger.put(item)
    assert ledger.flush(10)


def _exact(model: str, r: LedgerRow) -> Decimal:
    """genai-prices' exact (unrounded) price of one recorded call on ``model``."""
    return genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=r.input_tokens,
            cache_read_tokens=r.cached_tokens,
            cache_write_tokens=r.cache_write_tokens,
            output_tokens=r.output_tokens,
            output_reasoning_tokens=r.reasoning_tokens,
        ),
        model,
    ).total_price


def _expected(model: str, rows: list[LedgerRow]) -> int:
    """What budgetguard must answer: genai-prices per call (each at its own tier),
    summed exactly, rounded up once per tier band (a band is priced as one total)."""
    bands: dict[bool, Decimal] = {}
    for r in rows:
        band = r.input_tokens > 200_000
        bands[band] = bands.get(band, Decimal(0)) + _exact(model, r)
    return sum(
        int((total * 1_000_000_000).to_integral_value(rounding=ROUND_CEILING))
        for total in bands.values()
    )


TARGETS = ["gpt-4o-mini", "claude-haiku-4-5", "claude-sonnet-4-5", "gemini-2.5-pro"]


def test_repriced_costs_equal_genai_prices_to_the_nano(ledger: Ledger) -> None:
    calls = _calls()
    _fill(ledger, calls + _LEFT_OUT)
    result = reprice(ledger, TARGETS)
    by_feature = {c.feature: c for c in result.features}
    assert set(by_feature) == {"summarize", "research", None}
    for feature, comparison in by_feature.items():
        mine = [r for r in calls if r.feature == feature]
        assert comparison.calls == len(mine)
        assert comparison.cost_nanos == sum(r.cost_nanos for r in mine)
        assert comparison.latency_us == sum(r.latency_us for r in mine)
        assert [t.model for t in comparison.targets] == TARGETS
        for target in comparison.targets:
            assert target.cost_nanos == _expected(target.model, mine), (feature, target.model)
            assert target.actual_nanos == comparison.cost_nanos
            assert target.difference == nanos_to_usd(target.cost_nanos - comparison.cost_nanos)
    # the total is the sum of the features, so the table adds up
    total = result.total
    assert total.total and total.calls == len(calls)
    assert total.cost_nanos == sum(r.cost_nanos for r in calls)
    for n, target in enumerate(total.targets):
        assert target.cost_nanos == sum(c.targets[n].cost_nanos for c in result.features)
    # most expensive feature first
    assert [c.feature for c in result.features] == ["research", "summarize", None]


def test_untiered_totals_equal_genai_prices_on_the_summed_tokens(ledger: Ledger) -> None:
    """One band: the re-priced cost is genai-prices' price of the summed usage itself."""
    calls = [r for r in _calls() if r.feature == "summarize"]
    _fill(ledger, calls)
    (comparison,) = reprice(ledger, ["gpt-4o-mini", "claude-haiku-4-5"]).features
    summed = {
        "input_tokens": sum(r.input_tokens for r in calls),
        "cache_read_tokens": sum(r.cached_tokens for r in calls),
        "output_tokens": sum(r.output_tokens for r in calls),
        "output_reasoning_tokens": sum(r.reasoning_tokens for r in calls),
    }
    mini, haiku = comparison.targets
    assert mini.cost == genai_price("openai", "gpt-4o-mini", **summed)
    assert haiku.cost == genai_price("anthropic", "claude-haiku-4-5", **summed)


def test_left_out_calls_are_counted_not_repriced(ledger: Ledger) -> None:
    _fill(ledger, [row(), *_LEFT_OUT, row(model=None, cost_nanos=5)])
    result = reprice(ledger, ["gpt-4o-mini"])
    assert result.total.calls == 1
    assert {(e.outcome, e.calls, e.cost_nanos) for e in result.excluded} == {
        ("denied", 2, 0),
        ("error", 1, 17),
        ("unpriced", 1, 9_000_000),
        ("no model", 1, 5),
    }


def test_latency_per_recorded_model_and_per_target_where_known(ledger: Ledger) -> None:
    _fill(ledger, _calls())
    result = reprice(ledger, ["gpt-4o-mini", "claude-haiku-4-5", "o3-mini"])
    summarize = next(c for c in result.features if c.feature == "summarize")
    models = {m.model: m for m in summarize.models}
    assert models["gpt-4o"].avg_latency_s == Decimal("0.955")  # 0.9 .. 1.01 s
    assert models["gpt-4o-mini-2024-07-18"].avg_latency_s == Decimal("0.400")
    mini, haiku, o3 = summarize.targets
    # a dated snapshot is the same model to the price book: its calls give the latency
    assert (mini.latency_calls, mini.avg_latency_s) == (5, Decimal("0.400"))
    assert haiku.avg_latency_s is None  # no haiku call in this feature: unknown, not 0
    assert o3.avg_latency_s is None and o3.latency_calls == 0
    total_haiku = result.total.targets[1]
    assert (total_haiku.latency_calls, total_haiku.avg_latency_s) == (3, Decimal("0.600"))


def test_feature_and_period_filters(ledger: Ledger) -> None:
    old = row(at_us=int(time.time() * 1_000_000) - 10 * 24 * HOUR_US, cost_nanos=1)
    _fill(ledger, [*_calls(), old])
    research = reprice(ledger, ["gpt-4o-mini"], feature="research")
    assert [c.feature for c in research.features] == ["research"]
    assert research.total.calls == 6
    assert reprice(ledger, ["gpt-4o-mini"]).total.calls == len(_calls())  # 7d: old row out
    assert reprice(ledger, ["gpt-4o-mini"], since="30d").total.calls == len(_calls()) + 1
    assert reprice(ledger, ["gpt-4o-mini"], since="30d", until="2h").total.calls == 1


def test_engine_recorded_calls_reprice_on_their_own_model(ledger: Ledger) -> None:
    """Calls through the real engine, charged at the price book: re-priced on their own
    model, the total is within one nano-dollar per call of what was charged (rounded
    up once instead of per call); on another model it equals genai-prices."""
    book = PriceBook()
    _config.configure(listeners=[ledger])
    usage = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=128, reasoning_tokens=40)
    for n in range(7):
        with spend_limit(user=f"u-{n % 2}", feature="chat"):
            admission = admit_cost(50_000_000, model="gpt-4o")
            admission.settle_nanos(book.cost("gpt-4o", usage), model="gpt-4o", usage=usage)
    assert ledger.flush(10)
    (chat,) = reprice(ledger, ["gpt-4o", "gpt-4o-mini"]).features
    same, mini = chat.targets
    assert chat.calls == 7 and chat.cost_nanos == 7 * book.cost("gpt-4o", usage)
    assert 0 <= chat.cost_nanos - same.cost_nanos < 7
    tokens = {
        "input_tokens": 7 * 1200,
        "output_tokens": 7 * 300,
        "cache_read_tokens": 7 * 128,
        "output_reasoning_tokens": 7 * 40,
    }
    assert mini.cost == genai_price("openai", "gpt-4o-mini", **tokens)
    assert mini.ratio == (Decimal(mini.cost_nanos) / Decimal(chat.cost_nanos)).quantize(
        Decimal("0.0001")
    )


def test_bad_targets_and_periods_fail_before_reading(tmp_path: Path) -> None:
    with SQLiteLedger(tmp_path / "x.db") as lite:
        with pytest.raises(UnknownModel, match="no-such-model"):
            reprice(lite, ["gpt-4o-mini", "no-such-model"])
        with pytest.raises(ConfigurationError, match="at least one model"):
            reprice(lite, [" ", ""])
        with pytest.raises(ConfigurationError, match="since"):
            reprice(lite, ["gpt-4o-mini"], since="last tuesday")
    assert not (tmp_path / "x.db").exists()


def test_price_overrides_apply(tmp_path: Path) -> None:
    book = PriceBook({"house-model": {"input": "1", "output": "2"}})
    with SQLiteLedger(tmp_path / "o.db") as lite:
        _fill(lite, [row(input_tokens=1_000_000, output_tokens=1_000_000)])
        (only,) = reprice(lite, ["house-model"], prices=book).features
    assert only.targets[0].cost == Decimal(3)


# -- the CLI ----------------------------------------------------------------------


def _url(ledger: Ledger) -> str:
    if isinstance(ledger, SQLiteLedger):
        return f"sqlite:///{ledger.path}"
    assert isinstance(ledger, PostgresLedger)
    return f"{ledger.dsn}?table={ledger.dialect.table}"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_cli_table_shows_each_feature_target_and_the_total(ledger: Ledger) -> None:
    _fill(ledger, _calls() + _LEFT_OUT)
    expected = reprice(ledger, ["gpt-4o-mini", "claude-haiku-4-5"])
    code, text = run("compare", "--ledger", _url(ledger), "--to", "gpt-4o-mini,claude-haiku-4-5")
    assert code == 0, text
    lines = text.splitlines()
    header = "FEATURE MODEL CALLS COST VS ACTUAL OF ACTUAL AVG LATENCY (s)"
    assert lines[0].split() == header.split()
    research = next(c for c in expected.features if c.feature == "research")
    mini = research.targets[0]
    line = next(x for x in lines if "-> gpt-4o-mini" in x)  # research comes first
    assert format_usd(mini.cost_nanos) in line
    assert format_usd(mini.difference_nanos) in line and mini.difference_nanos < 0
    assert any(x.startswith("TOTAL") for x in lines)
    assert "(no feature)" in text
    assert "= actual" in text  # summarize ran on two models
    assert "left out (no usage to re-price): 2 denied; 1 error, $0.000000017" in text
    assert "1 unpriced, $0.009" in text


def test_cli_json_and_csv_carry_exact_amounts(ledger: Ledger) -> None:
    _fill(ledger, _calls() + _LEFT_OUT)
    expected = reprice(ledger, TARGETS)
    code, text = run("compare", "--ledger", _url(ledger), "--to", ",".join(TARGETS), "--json")
    assert code == 0, text
    rows = json.loads(text)
    _check_machine_rows(rows, expected)
    code, text = run("compare", "--ledger", _url(ledger), "--to", ",".join(TARGETS), "--csv")
    assert code == 0
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert len(parsed) == len(rows)
    assert [r["cost_usd"] for r in parsed] == [r["cost_usd"] for r in rows]


def _check_machine_rows(rows: list[dict[str, Any]], expected: WhatIf) -> None:
    repriced = [r for r in rows if r["kind"] == "repriced" and not r["total"]]
    assert len(repriced) == len(expected.features) * len(TARGETS)
    for r in repriced:
        comparison = next(c for c in expected.features if c.feature == r["feature"])
        target = next(t for t in comparison.targets if t.model == r["model"])
        assert Decimal(r["cost_usd"]) == target.cost
        assert r["cost_nanos"] == target.cost_nanos
        assert Decimal(r["difference_usd"]) == target.difference
        assert r["ratio"] == (None if target.ratio is None else f"{target.ratio:f}")
    (total,) = [r for r in rows if r["kind"] == "actual" and r["total"]]
    assert Decimal(total["cost_usd"]) == expected.total.cost
    assert usd_to_nanos(Decimal(total["cost_usd"])) == expected.total.cost_nanos
    excluded = {r["outcome"]: r["calls"] for r in rows if r["kind"] == "excluded"}
    assert excluded == {"denied": 2, "error": 1, "unpriced": 1}


def test_cli_feature_filter(ledger: Ledger) -> None:
    _fill(ledger, _calls())
    code, text = run(
        "compare",
        "--ledger",
        _url(ledger),
        "--to",
        "gpt-4o-mini",
        "--feature",
        "research",
        "--json",
    )
    assert code == 0
    assert {r["feature"] for r in json.loads(text) if not r["total"]} == {"research"}


def test_cli_bad_input_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SQLiteLedger(tmp_path / "l.db") as lite:
        _fill(lite, [row()])
    url = f"sqlite:///{tmp_path / 'l.db'}"
    code, _ = run("compare", "--ledger", url, "--to", "gpt-4o-mini,not-a-model")
    assert code == 2
    assert "--to: unknown model 'not-a-model'" in capsys.readouterr().err
    code, _ = run("compare", "--ledger", url, "--to", "gpt-4o-mini", "--since", "fortnight")
    assert code == 2 and "--since" in capsys.readouterr().err
    code, _ = run("compare", "--ledger", url, "--to", ",")
    assert code == 2 and "--to" in capsys.readouterr().err
    code, _ = run("compare", "--ledger", url)
    assert code == 2 and "--to" in capsys.readouterr().err
    missing = tmp_path / "nowhere" / "ledger.db"
    code, _ = run("compare", "--ledger", f"sqlite:///{missing}", "--to", "gpt-4o-mini")
    assert code == 2 and "no SQLite database" in capsys.readouterr().err
    assert not missing.parent.exists()  # nothing created, not even the folder


def test_cli_empty_ledger(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()  # a database file with no ledger table yet
    code, text = run("compare", "--ledger", f"sqlite:///{path}", "--to", "gpt-4o-mini")
    assert code == 0
    assert "(no calls with usage recorded)" in text
