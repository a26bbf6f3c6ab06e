"""bg.trial / ``budgetguard trial`` against the local fakes (OpenAI, Anthropic, Gemini):
canned answers make accuracy known, and every cost is genai-prices' on the served usage."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from provider_support import genai_price

import budgetguard as bg
from budgetguard.cli import main
from budgetguard.testing import FakeProvider
from budgetguard.trial import TrialError, load_cases, trial
from budgetguard.trial.run import _capture

pytest.importorskip("google.genai")

MODELS = ["gpt-4o", "claude-haiku-4-5", "gemini-2.5-flash"]
PROVIDER = {"gpt-4o": "openai", "claude-haiku-4-5": "anthropic", "gemini-2.5-flash": "google"}
CASES = [
    {"prompt": "Capital of France?", "expected": "Paris"},
    {
        "messages": [
            {"role": "system", "content": "Answer with a number."},
            {"role": "user", "content": "2+2?"},
        ],
        "expected": "4",
    },
]
# per case, per model (the trial's order): gpt-4o right twice, haiku once, gemini never
ANSWERS = [["Paris", "paris", "Lyon"], ["4", "5", "four"]]
USAGE = {"gpt-4o": (30, 5), "claude-haiku-4-5": (40, 6), "gemini-2.5-flash": (50, 7)}


@pytest.fixture(autouse=True)
def env(fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    fake.clear()
    monkeypatch.setenv("OPENAI_BASE_URL", fake.openai_base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "t")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "t")
    monkeypatch.setenv("GEMINI_API_KEY", "t")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.url)
    yield


def script(fake: FakeProvider, repeat: int = 1) -> None:
    for _ in range(repeat):
        for answers in ANSWERS:
            for model, text in zip(MODELS, answers, strict=True):
                i, o = USAGE[model]
                fake.reply(text=text, input_tokens=i, output_tokens=o)


def write_cases(tmp_path: Path, lines: list[str] | None = None) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(lines or [json.dumps(c) for c in CASES]) + "\n")
    return path


def test_costs_and_accuracy_are_exact(fake: FakeProvider) -> None:
    seen: list[bg.CallRecord] = []
    bg.configure(listeners=[seen.append])
    script(fake, repeat=2)
    result = trial(MODELS, CASES, repeat=2, concurrency=1, check="exact", within=50)
    assert (result.planned, result.made, result.stopped) == (12, 12, None)
    accuracy = {
        "gpt-4o": Decimal("100.0"),
        "claude-haiku-4-5": Decimal("50.0"),
        "gemini-2.5-flash": Decimal("0.0"),
    }
    for row in result.rows:
        i, o = USAGE[row.model]
        one = genai_price(PROVIDER[row.model], row.model, input_tokens=i, output_tokens=o)
        assert row.calls == 4 and row.errors == 0
        assert (row.input_tokens, row.output_tokens) == (4 * i, 4 * o)
        assert row.cost == 4 * one and row.cost_per_call == one
        assert row.accuracy == accuracy[row.model]
        assert row.p50_s is not None and row.p95_s is not None and row.p50_s <= row.p95_s
    assert result.row("gpt-4o").cost_per_correct == result.row("gpt-4o").cost_per_call
    haiku = result.row("claude-haiku-4-5")
    assert haiku.cost_per_correct == 2 * (haiku.cost_per_call or 0)
    assert result.row("gemini-2.5-flash").cost_per_correct is None
    assert result.pick == "claude-haiku-4-5"  # cheaper than gpt-4o, 50 points within 50
    assert result.spent == sum(r.cost for r in result.rows)
    # the ledger's listeners saw every call, as feature "trial"; the trial's own listener
    # stays installed (a no-op outside a trial: two trials at once never swap listeners)
    assert len(seen) == 12 and {r.feature for r in seen} == {"trial"}
    assert {r.tags["trial"] for r in seen} == {seen[0].tags["trial"]}
    assert bg.current().listeners == (seen.append, _capture)


def test_pick_is_the_cheapest_within_points(fake: FakeProvider) -> None:
    script(fake)
    result = trial(MODELS, CASES, concurrency=1, within=2)
    assert result.pick == "gpt-4o"


def test_checks(fake: FakeProvider) -> None:
    fake.reply(text='```json\n{"a": 1}\n```')
    fake.reply(text="The answer is Paris.")
    fake.reply(text="The answer is Paris.")
    cases = [{"prompt": "json", "expected": {"a": 1}}]
    assert trial(["gpt-4o"], cases, check="json").rows[0].correct == 1
    cases = [{"prompt": "where", "expected": "paris"}]
    assert trial(["gpt-4o"], cases, check="contains").rows[0].correct == 1
    assert trial(["gpt-4o"], cases, check=lambda a, e: a.endswith("s.")).rows[0].correct == 1


def test_concurrent_calls_are_bounded_and_all_counted(fake: FakeProvider) -> None:
    fake.default = fake.default.__class__(text="Paris", delay_s=0.05)
    try:
        cases = [{"prompt": f"q{n}", "expected": "Paris"} for n in range(10)]
        result = trial(["gpt-4o", "gpt-4o-mini"], cases, concurrency=5)
    finally:
        fake.default = fake.default.__class__()
    assert [r.calls for r in result.rows] == [10, 10]
    assert [r.accuracy for r in result.rows] == [Decimal("100.0")] * 2
    assert result.pick == "gpt-4o-mini"


def test_the_budget_stops_the_trial_before_the_limit(fake: FakeProvider) -> None:
    cases = [{"prompt": f"q{n}", "expected": "x"} for n in range(20)]
    result = trial(["gpt-4o"], cases, usd="0.001", max_tokens=20, concurrency=1)
    assert result.stopped is not None and "would have passed the $0.001 limit" in result.stopped
    assert 0 < result.made < 20 and result.rows[0].calls == result.made
    assert result.spent <= Decimal("0.001") and result.spent == result.rows[0].cost
    assert len(fake.requests) == result.made  # the refused call was never sent


def test_an_unknown_model_sends_nothing(fake: FakeProvider) -> None:
    with pytest.raises(bg.UnknownModel):
        trial(["gpt-4o", "gpt-nonexistent-9"], CASES)
    with pytest.raises(TrialError, match="cannot tell which client"):
        trial(["llama-3-local"], CASES)
    assert fake.requests == []


def test_a_malformed_line_is_named(tmp_path: Path, fake: FakeProvider) -> None:
    path = write_cases(tmp_path, [json.dumps(CASES[0]), "", "{not json"])
    with pytest.raises(TrialError, match="line 3: not valid JSON"):
        trial(MODELS, path)
    path = write_cases(tmp_path, [json.dumps(CASES[0]), json.dumps({"prompt": "x"})])
    with pytest.raises(TrialError, match="line 2: missing 'expected'"):
        load_cases(path)
    with pytest.raises(TrialError, match="unknown check"):
        trial(MODELS, CASES, check="fuzzy")
    assert fake.requests == []


def test_a_check_that_raises_stops_the_trial(fake: FakeProvider) -> None:
    def broken(answer: str, expected: object) -> bool:
        raise ValueError("no")

    with pytest.raises(TrialError, match=r"check 'broken' raised on line 1 \(gpt-4o\): ValueError"):
        trial(["gpt-4o"], CASES, check=broken, concurrency=1)


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(["trial", *argv], out=out), out.getvalue()


def test_cli_table_json_and_ledger(tmp_path: Path, fake: FakeProvider) -> None:
    cases = write_cases(tmp_path)
    db = tmp_path / "bg.db"
    script(fake)
    code, text = run_cli(
        "--models",
        ",".join(MODELS),
        "--cases",
        str(cases),
        "--concurrency",
        "1",
        "--ledger",
        f"sqlite:///{db}",
    )
    assert code == 0, text
    assert "cheapest within 2 points of the best accuracy: gpt-4o" in text
    assert "100.0%" in text and "spent $" in text and "on 6 of 6 calls" in text
    rows = sqlite3.connect(db).execute("select feature from budgetguard_ledger").fetchall()
    assert rows == [("trial",)] * 6
    script(fake)
    code, text = run_cli(
        "--models", ",".join(MODELS), "--cases", str(cases), "--concurrency", "1", "--json"
    )
    data = json.loads(text)
    assert code == 0 and data["pick"] == "gpt-4o" and data["stopped"] is None
    first = data["models"][0]
    assert first["model"] == "gpt-4o" and first["accuracy"] == "100.0"
    assert Decimal(first["cost"]) == 2 * genai_price(
        "openai", "gpt-4o", input_tokens=30, output_tokens=5
    )


def test_cli_bad_input_exits_2(
    tmp_path: Path, fake: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = write_cases(tmp_path, ["{bad"])
    assert run_cli("--models", "gpt-4o", "--cases", str(cases))[0] == 2
    assert "line 1: not valid JSON" in capsys.readouterr().err
    cases = write_cases(tmp_path)
    assert run_cli("--models", "gpt-4o,gpt-bogus-1", "--cases", str(cases))[0] == 2
    assert "gpt-bogus-1" in capsys.readouterr().err
    assert run_cli("--models", "gpt-4o", "--cases", str(cases), "--usd", "lots")[0] == 2
    assert fake.requests == []


def raising_check(answer: str, expected: object) -> bool:
    raise KeyError(answer)


def test_cli_check_that_raises_prints_no_table(
    tmp_path: Path, fake: FakeProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = write_cases(tmp_path)
    code, text = run_cli(
        "--models",
        "gpt-4o",
        "--cases",
        str(cases),
        "--check",
        "python:test_trial:raising_check",
        "--concurrency",
        "1",  # one at a time: the first case's line is the one that raises first
    )
    assert code == 2 and text == ""
    assert "check 'raising_check' raised on line 1 (gpt-4o): KeyError" in capsys.readouterr().err
    code, text = run_cli("--models", "gpt-4o", "--cases", str(cases), "--check", "python:nope:x")
    assert code == 2 and "cannot load" in capsys.readouterr().err


def test_progress_goes_to_stderr(fake: FakeProvider, capsys: pytest.CaptureFixture[str]) -> None:
    trial(["gpt-4o"], CASES, progress=True)
    assert "trial: 2/2 calls" in capsys.readouterr().err
    trial(["gpt-4o"], CASES)  # not a terminal: silent
    assert capsys.readouterr().err == ""


def test_two_trials_at_once_count_their_own_calls_once(fake: FakeProvider) -> None:
    """Found by review: each trial swapped the process's listeners, so two at once
    counted records twice and one could drop the other's (and a ledger)."""
    import threading

    results: list[Any] = []

    def one() -> None:
        results.append(trial(["gpt-4o-mini"], CASES * 3, concurrency=2))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        row = result.row("gpt-4o-mini")
        assert row.calls == len(CASES) * 3
        assert result.spent == row.cost
    assert bg.current().listeners.count(_capture) == 1


def test_bad_budgets_and_unknown_models_build_nothing(fake: FakeProvider) -> None:
    with pytest.raises(bg.ConfigurationError, match="usd"):
        trial(["gpt-4o"], CASES, usd="1e400")  # was a decimal.InvalidOperation traceback
    built: list[Any] = []
    from budgetguard.trial import clients as trial_clients

    original = trial_clients._build

    def counting(kind: str) -> Any:
        client = original(kind)
        built.append(client)
        return client

    trial_clients._build = counting  # type: ignore[assignment]
    try:
        with pytest.raises(bg.UnknownModel):
            trial(["gpt-4o", "gpt-bogus-1"], CASES)
    finally:
        trial_clients._build = original  # type: ignore[assignment]
    assert built == []  # every price first: no client built for a refused trial


def test_a_model_whose_calls_all_fail_is_never_picked(fake: FakeProvider) -> None:
    """Found by review: failed calls counted as $0 calls, so a model that never answered
    looked cheapest and could be picked within N points of a low best accuracy."""
    fake.clear()
    for _ in CASES:  # each case goes to gpt-4o, then to gpt-4o-mini (one at a time)
        fake.reply(text="no idea", input_tokens=10, output_tokens=5)
        fake.reply(status=400)
    result = trial(["gpt-4o", "gpt-4o-mini"], CASES, concurrency=1, within=100)
    failed = result.row("gpt-4o-mini")
    assert failed.errors == len(CASES) and failed.cost_per_call is None
    assert result.row("gpt-4o").cost_per_call is not None
    assert result.pick == "gpt-4o"
