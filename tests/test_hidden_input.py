"""Issue 19, part 2: input the request does not show - server-side tools' results, the
conversation behind a ``previous_response_id`` - is held, or refused when nothing bounds
it and the policy says so; search fees are in the hold; an overrun says its cause."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import budgetguard as bg
from budgetguard.providers.openai_responses import ADAPTER as RESPONSES
from budgetguard.testing import FakeProvider

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
genai = pytest.importorskip("google.genai")

MESSAGES = [{"role": "user", "content": "What changed in the tax rules this year?"}]
SEARCH = {"type": "web_search_20250305", "name": "web_search"}


def claude(fake: FakeProvider) -> Any:
    return bg.instrument(
        anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="t", max_retries=0)
    )


def plain_hold(model: str, **request: Any) -> bg.Estimate:
    return bg.estimate(bg.LLMRequest(model, MESSAGES, max_tokens=300, **request))


def test_server_tool_uses_are_held_at_the_allowance_plus_their_fees(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    fake.reply(input_tokens=30_000, output_tokens=200, web_searches=3)
    with bg.spend_limit(tenant="acme"):
        claude(fake).messages.create(
            model="claude-sonnet-4-5",
            max_tokens=300,
            messages=MESSAGES,
            tools=[{**SEARCH, "max_uses": 3}],
        )
    (record,) = records
    rates = bg.current().prices.rates("claude-sonnet-4-5")
    plain = plain_hold("claude-sonnet-4-5", tools=[{**SEARCH, "max_uses": 3}])
    allowance = 3 * bg.current().policy.server_tool_tokens
    expected = rates.worst_case(
        plain.input_tokens + allowance, 300, cache_write_tokens=0
    ) + rates.search_fees(3)
    assert record.estimate == expected  # was: the visible prompt only, no fee
    assert rates.search_fees(3) == 30_000_000  # $10 per 1,000 searches
    assert record.cost <= record.estimate  # 30,000 tokens of search results fit


def test_a_server_tool_without_max_uses_is_held_at_one_allowance_or_refused(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    estimate = plain_hold("claude-sonnet-4-5")
    with bg.spend_limit(tenant="acme"):
        claude(fake).messages.create(
            model="claude-sonnet-4-5", max_tokens=300, messages=MESSAGES, tools=[SEARCH]
        )
    assert records[-1].estimate > estimate.nanos
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="tenant", usd=100, window="day")], unbounded_input="refuse"
        )
    )
    sent = len(fake.requests)
    with pytest.raises(bg.UnboundedInput, match="without max_uses"), bg.spend_limit(tenant="acme"):
        claude(fake).messages.create(
            model="claude-sonnet-4-5", max_tokens=300, messages=MESSAGES, tools=[SEARCH]
        )
    assert len(fake.requests) == sent  # refused before sending
    with pytest.raises(bg.UnboundedInput, match="mcp_servers"):
        bg.estimate(
            bg.LLMRequest("claude-sonnet-4-5", MESSAGES, max_tokens=1, unbounded=("mcp_servers",))
        )


def test_a_previous_response_is_billed_again_and_held_again(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    client = bg.instrument(openai.OpenAI(base_url=fake.openai_base_url, api_key="t"))
    fake.reply(input_tokens=5_000, output_tokens=700)
    with bg.spend_limit(tenant="acme"):
        first = client.responses.create(model="gpt-4o", input="hi", max_output_tokens=800)
        client.responses.create(
            model="gpt-4o", input="and then?", previous_response_id=first.id, max_output_tokens=50
        )
    rates = bg.current().prices.rates("gpt-4o")
    alone = bg.estimate(
        RESPONSES.request({"model": "gpt-4o", "input": "and then?", "max_output_tokens": 50})
    ).input_tokens
    assert records[-1].estimate == rates.worst_case(alone + 5_700, 50)  # was: alone


def test_an_unseen_previous_response_has_no_bound(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    bg.configure(policy=bg.Policy(unbounded_input="refuse"))
    client = bg.instrument(openai.OpenAI(base_url=fake.openai_base_url, api_key="t"))
    with pytest.raises(bg.UnboundedInput, match="previous_response_id"):
        client.responses.create(model="gpt-4o", input="?", previous_response_id="resp_other")
    assert not fake.requests


def test_built_in_tools_are_bounded_by_max_tool_calls(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    client = bg.instrument(openai.OpenAI(base_url=fake.openai_base_url, api_key="t"))
    sent = {
        "model": "gpt-4o",
        "input": "news?",
        "tools": [{"type": "web_search"}],
        "max_tool_calls": 2,
        "max_output_tokens": 100,
    }
    with bg.spend_limit(tenant="acme"):
        client.responses.create(**sent)
    request = RESPONSES.request(dict(sent))
    assert (request.server_tool_uses, request.web_searches, request.unbounded) == (2, 2, ())
    assert records[-1].estimate == bg.estimate(request).nanos
    rates = bg.current().prices.rates("gpt-4o")
    none_allowed = bg.estimate(RESPONSES.request({**sent, "max_tool_calls": 0})).nanos
    allowance = 2 * bg.current().policy.server_tool_tokens * 2_500  # $2.50 / MTok input
    assert records[-1].estimate - none_allowed == allowance + rates.search_fees(2)


def test_gemini_grounding_is_unbounded_and_held_with_its_search_fee(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    gemini = bg.instrument(genai.Client(api_key="t", http_options={"base_url": fake.url}))
    fake.reply(model="gemini-2.5-flash")
    with bg.spend_limit(tenant="acme"):
        gemini.models.generate_content(
            model="gemini-2.5-flash",
            contents="news?",
            config={"tools": [{"google_search": {}}], "max_output_tokens": 100},
        )
    rates = bg.current().prices.rates("gemini-2.5-flash")
    assert rates.search_fees(1) > 0
    assert records[-1].estimate > rates.worst_case(bg.current().policy.server_tool_tokens, 100)


def test_an_overrun_of_unbounded_input_names_its_cause(
    fake: FakeProvider, records: list[bg.CallRecord], caplog: Any
) -> None:
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="tenant", usd=100, window="day")], server_tool_tokens=1_000
        )
    )
    fake.reply(input_tokens=400_000, output_tokens=100, web_searches=5)  # the case
    with caplog.at_level(logging.WARNING), bg.spend_limit(tenant="acme"):
        claude(fake).messages.create(
            model="claude-sonnet-4-5", max_tokens=300, messages=MESSAGES, tools=[SEARCH]
        )
    record = records[-1]
    assert record.overrun > 0 and record.cost > record.estimate
    assert "had no bound" in caplog.text and "without max_uses" in caplog.text
    assert bg.status("tenant", "acme").overrun == record.overrun_usd


def test_the_ledger_sums_overruns(
    fake: FakeProvider, records: list[bg.CallRecord], tmp_path: Any
) -> None:
    ledger = bg.SQLiteLedger(str(tmp_path / "l.db"))
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="tenant", usd=100, window="day")], server_tool_tokens=1_000
        ),
        listeners=[records.append, ledger],
    )
    fake.reply(input_tokens=400_000, output_tokens=100, web_searches=5)
    with bg.spend_limit(tenant="acme"):
        claude(fake).messages.create(
            model="claude-sonnet-4-5", max_tokens=300, messages=MESSAGES, tools=[SEARCH]
        )
    ledger.close()
    (row,) = ledger.rows()
    (summary,) = ledger.report("tenant")
    assert row.overrun_nanos == summary.overrun_nanos == records[-1].overrun > 0


def test_bad_server_tool_settings_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="server_tool_tokens"):
        bg.Policy(server_tool_tokens=0)
    with pytest.raises(ValueError, match="unbounded_input"):
        bg.Policy(unbounded_input="ignore")  # type: ignore[arg-type]
