"""Once the provider answered, the caller gets its response and the bill lands, whatever
the store, the body or the stream does next. One fault test per defect a review found
(issue 12): a settle the store refuses or a cancellation interrupts, a raw body that
does not parse, Anthropic's async raw stream, a stream that ends without usage,
``n`` / ``candidate_count``, Vertex model names, a key echoed in an error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import budgetguard as bg
from budgetguard._core.counters import Reservation
from budgetguard._core.errors import describe_error
from budgetguard._engine.upkeep import unapplied
from budgetguard.stores import MemoryStore
from budgetguard.stores.redis import AsyncRedisStore
from budgetguard.testing import FakeProvider

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
genai = pytest.importorskip("google.genai")
# The SDK's own HTTP client (httpx2 in openai 3.x, httpx before).
httpx: Any = getattr(openai._base_client, "httpx2", None) or pytest.importorskip("httpx")

MESSAGES = [{"role": "user", "content": "hi"}]
LIMIT = bg.Policy(limits=[bg.Limit(scope="tenant", usd=100, window="day")], lease_s=0.5)


@pytest.fixture
def records(fake: FakeProvider) -> Iterator[list[bg.CallRecord]]:
    fake.clear()
    seen: list[bg.CallRecord] = []
    bg.configure(policy=LIMIT, listeners=[seen.append])
    yield seen
    unapplied.take(bg.current().store, bg.current().async_store)


def acme() -> Any:
    return bg.status("tenant", "acme")


def wait_for_spend(expected: Decimal, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while acme().spent != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return acme()


class RefusesOneSettle(MemoryStore):
    """The store errs once on settle with something other than StoreUnavailable
    (Redis' "OOM command not allowed", an auth error)."""

    failed = False

    def settle(self, reservation: Reservation, actual: int) -> int | None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("OOM command not allowed when used memory > 'maxmemory'")
        return super().settle(reservation, actual)


def test_a_settle_the_store_refuses_keeps_the_response_and_lands_later(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    bg.configure(store=RefusesOneSettle())
    client = bg.instrument(openai.OpenAI(base_url=fake.openai_base_url, api_key="t"))
    fake.reply(input_tokens=20, output_tokens=10)
    with bg.spend_limit(tenant="acme"):
        response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert response.choices[0].message.content  # was: the RuntimeError, after the call
    cost = records[-1].cost_usd
    assert records[-1].outcome == "ok" and cost > 0
    status = wait_for_spend(cost)  # re-sent by the upkeep thread
    assert (status.spent, status.held) == (cost, 0)  # was: $0 spent, the hold kept forever


class SlowSettle(MemoryStore):
    """A network store: its async settle waits for I/O."""

    async def asettle(self, reservation: Reservation, actual: int) -> int | None:
        await asyncio.sleep(3.0)
        return self.settle(reservation, actual)


async def test_a_settle_interrupted_by_a_cancellation_still_lands(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    bg.configure(store=SlowSettle())
    client = bg.instrument(openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="t"))

    async def call() -> Any:
        async with bg.spend_limit(tenant="acme"):
            return await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    with pytest.raises(TimeoutError):  # the call is quick; the timeout hits in the settle
        await asyncio.wait_for(call(), timeout=1.5)
    cost = records[-1].cost_usd
    assert cost > 0
    deadline = time.monotonic() + 5
    while acme().spent != cost and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert (acme().spent, acme().held) == (cost, 0)  # was: $0 spent, the hold kept forever


class AsyncOnlyRefusesOneSettle(AsyncRedisStore):
    failed = False

    async def asettle(self, reservation: Reservation, actual: int) -> int | None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("READONLY You can't write against a read only replica.")
        return await super().asettle(reservation, actual)


async def test_an_async_only_store_gets_its_kept_settle_on_its_own_loop(
    fake: FakeProvider, records: list[bg.CallRecord], redis_client: Any, redis_url: str
) -> None:
    store = AsyncOnlyRefusesOneSettle(redis_url, prefix="kept")
    bg.configure(store=store)
    assert bg.current().store is None
    client = bg.instrument(openai.AsyncOpenAI(base_url=fake.openai_base_url, api_key="t"))
    async with bg.spend_limit(tenant="acme"):
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    cost = records[-1].cost_usd
    deadline = time.monotonic() + 5
    while (await bg.astatus("tenant", "acme")).spent != cost and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # the loop must run: the upkeep thread sends on it
    assert (await bg.astatus("tenant", "acme")).spent == cost > 0
    await store.aclose()


def test_a_raw_body_that_does_not_parse_still_reaches_the_caller_and_is_charged(
    records: list[bg.CallRecord],
) -> None:
    def broken(request: Any) -> Any:
        body = b'{"id": "x", "trunc'
        return httpx.Response(200, headers={"content-type": "application/json"}, content=body)

    http = httpx.Client(transport=httpx.MockTransport(broken))
    client = bg.instrument(openai.OpenAI(api_key="t", max_retries=0, http_client=http))
    with bg.spend_limit(tenant="acme"):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=50
        )
    assert raw.http_response.status_code == 200  # was: JSONDecodeError, and a hold kept
    (record,) = records
    assert record.outcome == "unpriced" and "could not be parsed" in (record.error or "")
    assert (acme().spent, acme().held) == (record.cost_usd, 0) and record.cost == record.estimate


async def test_anthropic_async_raw_stream_is_awaited_and_metered(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    client = bg.instrument(
        anthropic.AsyncAnthropic(base_url=fake.anthropic_base_url, api_key="t", max_retries=0)
    )
    fake.reply(input_tokens=30, output_tokens=12)
    async with bg.spend_limit(tenant="acme"):
        raw = await client.messages.with_raw_response.create(
            model="claude-sonnet-4-5", max_tokens=100, messages=MESSAGES, stream=True
        )
        stream = await raw.parse()  # was: TypeError, the stream charged its input only
        events = [event async for event in stream]
    assert events
    (record,) = records
    assert record.usage is not None
    assert (record.usage.input_tokens, record.usage.output_tokens) == (30, 12)


@pytest.mark.parametrize("options", [{"stream_options": {"include_usage": False}}, {}])
def test_a_stream_that_ends_without_usage_is_charged_its_reservation(
    fake: FakeProvider, records: list[bg.CallRecord], options: dict[str, Any]
) -> None:
    client = bg.instrument(openai.OpenAI(base_url=fake.openai_base_url, api_key="t"))
    # o3 thinks out of sight: its text says nothing of the 4,990 reasoning tokens billed.
    fake.reply(input_tokens=20, output_tokens=5_000, reasoning_tokens=4_990, include_usage=False)
    with bg.spend_limit(tenant="acme"):
        for _ in client.chat.completions.create(
            model="o3", messages=MESSAGES, max_tokens=6_000, stream=True, **options
        ):
            pass
    (record,) = records
    assert record.outcome == "unpriced" and "without reporting its usage" in (record.error or "")
    assert record.cost == record.estimate  # was: input + visible text, ~600x under the bill


def test_n_choices_are_held_n_times(fake: FakeProvider, records: list[bg.CallRecord]) -> None:
    client = bg.instrument(openai.OpenAI(base_url=fake.openai_base_url, api_key="t"))
    gemini = bg.instrument(genai.Client(api_key="t", http_options={"base_url": fake.url}))
    with bg.spend_limit(tenant="acme"):
        for n in (1, 8):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1_000, n=n)
        for n in (1, 8):
            fake.reply(model="gemini-2.5-flash")
            gemini.models.generate_content(
                model="gemini-2.5-flash",
                contents="hi",
                config={"candidate_count": n, "max_output_tokens": 1_000},
            )
    one, eight, g_one, g_eight = (r.estimate for r in records)
    output = 1_000 * 10_000  # 1,000 tokens at gpt-4o's $10 / MTok, in nano-USD
    assert eight - one == 7 * output  # was: the same hold for n=8 as for n=1
    assert g_eight - g_one == 7 * 1_000 * 2_500  # gemini-2.5-flash: $2.50 / MTok out


def test_vertex_model_paths_are_priced_as_their_model(
    fake: FakeProvider, records: list[bg.CallRecord]
) -> None:
    gemini = bg.instrument(genai.Client(api_key="t", http_options={"base_url": fake.url}))
    fake.reply(model="gemini-2.5-flash")
    with bg.spend_limit(tenant="acme"):
        gemini.models.generate_content(
            model="publishers/google/models/gemini-2.5-flash", contents="hi"
        )
    (record,) = records
    assert record.outcome == "ok" and record.model == "gemini-2.5-flash"  # was: UnknownModel


def test_an_api_key_echoed_in_an_error_is_masked() -> None:
    echoed = openai.AuthenticationError(
        "Incorrect API key provided: sk-proj-abc123****wxyz. You can find your API key at ...",
        response=httpx.Response(401, request=httpx.Request("GET", "http://x")),
        body=None,
    )
    reason = describe_error(echoed)
    assert "abc123" not in reason and "wxyz" not in reason and "[redacted]" in reason
    assert describe_error(ValueError("Bearer eyJhbGciOiJIUzI1NiJ9.payload")).count("eyJ") == 0
    assert describe_error(asyncio.CancelledError()) == "CancelledError"
    google = "API key not valid: AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW (400)"
    assert "AIzaSy" not in describe_error(ValueError(google))  # was kept: no separator
    assert "ya29" not in describe_error(ValueError("token ya29.a0AfB_byC-example_token"))


def test_what_is_not_guarded_names_methods_the_sdks_have() -> None:
    from budgetguard.providers.instrument import UNGUARDED

    clients = {
        "openai": openai.OpenAI(api_key="t"),
        "anthropic": anthropic.Anthropic(api_key="t"),
        "google": genai.Client(api_key="t"),
    }
    for sdk, entries in UNGUARDED.items():
        for path, methods in entries:
            resource: Any = clients[sdk]
            for name in path:
                resource = getattr(resource, name)
            for method in methods or ():
                assert callable(getattr(resource, method)), (sdk, path, method)
