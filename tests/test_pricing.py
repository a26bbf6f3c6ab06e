"""Pricing: integer rates must reproduce genai-prices' own figures, to the nano-dollar."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices.data_snapshot import get_snapshot
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetguard._core.errors import ConfigurationError, UnknownModel
from budgetguard._core.usage import Usage, UsageDetails
from budgetguard.pricing import book as _pricing
from budgetguard.pricing.book import PriceBook
from budgetguard.pricing.output_limits import DEFAULT_MAX_OUTPUT_TOKENS
from budgetguard.pricing.prices import Price
from budgetguard.pricing.rates import ModelRates, TieredRate

MODELS = [
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "o3",
    "gpt-5",
    "claude-opus-4-5",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-3-5-sonnet-20241022",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
]

USAGES = [
    Usage(input_tokens=0, output_tokens=0),
    Usage(input_tokens=1, output_tokens=1),
    Usage(input_tokens=1234, output_tokens=567),
    Usage(input_tokens=10_000, output_tokens=2_000, cache_read_tokens=8_192),
    Usage(input_tokens=10_000, output_tokens=2_000, cache_write_tokens=9_000),
    Usage(input_tokens=50_000, output_tokens=30_000, cache_read_tokens=20_000,
          cache_write_tokens=10_000, reasoning_tokens=25_000),
    Usage(input_tokens=200_000, output_tokens=100),  # exactly at a 200k tier start: base rate
    Usage(input_tokens=200_001, output_tokens=100),  # past it: the tier rate for every token
    Usage(input_tokens=250_000, output_tokens=8_000, cache_read_tokens=100_000,
          cache_write_tokens=50_000, reasoning_tokens=4_000),
    # Anthropic's one-hour cache writes: a dearer part of the writes
    Usage(input_tokens=10_000, output_tokens=2_000, cache_write_tokens=9_000,
          cache_write_1h_tokens=4_000),
    Usage(input_tokens=250_000, output_tokens=8_000, cache_read_tokens=100_000,
          cache_write_tokens=50_000, cache_write_1h_tokens=50_000),
]  # fmt: skip


def genai_nanos(model: str, usage: Usage, provider: str | None = None) -> int:
    """genai-prices' own total for ``usage``, in nano-USD rounded up."""
    calc = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage.input_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            output_tokens=usage.output_tokens,
            output_reasoning_tokens=usage.reasoning_tokens,
        ),
        model,
        provider_id=provider,
    )
    return math.ceil(calc.total_price * 10**9)


def draw_usage(data: st.DataObject, inputs: Any, outputs: Any) -> Usage:
    """A valid usage: the cache and reasoning parts drawn within their totals."""
    input_tokens = data.draw(inputs, label="input")
    cache_read = data.draw(st.integers(0, input_tokens), label="cache_read")
    cache_write = data.draw(st.integers(0, input_tokens - cache_read), label="cache_write")
    one_hour = data.draw(st.integers(0, cache_write), label="cache_write_1h")
    output_tokens = data.draw(outputs, label="output")
    reasoning = data.draw(st.integers(0, output_tokens), label="reasoning")
    return Usage(input_tokens, output_tokens, cache_read, cache_write, reasoning, one_hour)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("usage", USAGES, ids=range(len(USAGES)))
def test_cost_matches_genai_prices(book: PriceBook, model: str, usage: Usage) -> None:
    assert book.rates(model).cost(usage) == genai_nanos(model, usage)
    assert book.cost(model, usage) == genai_nanos(model, usage)


def test_the_table_exercises_tiers_caches_and_reasoning(book: PriceBook) -> None:
    # Guard the table above: it must reach the code paths it claims to test.
    sonnet = book.rates("claude-sonnet-4-5")
    assert isinstance(sonnet.input_rate, TieredRate)
    small = Usage(input_tokens=200_000, output_tokens=100)
    big = Usage(input_tokens=200_001, output_tokens=100)
    assert sonnet.cost(big) > 1.9 * sonnet.cost(small)  # the cliff doubles the input rate
    assert sonnet.cache_write_rate is not None and sonnet.cache_read_rate is not None
    cached = Usage(input_tokens=10_000, output_tokens=0, cache_read_tokens=10_000)
    assert sonnet.cost(cached) < sonnet.cost(Usage(input_tokens=10_000))


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro", "o3"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_cost_matches_genai_prices_for_random_usage(
    book: PriceBook, model: str, data: st.DataObject
) -> None:
    usage = draw_usage(data, st.integers(0, 2_000_000), st.integers(0, 200_000))
    assert book.rates(model).cost(usage) == genai_nanos(model, usage)


@pytest.mark.parametrize(
    "model", ["gpt-4o", "claude-sonnet-4-5", "claude-opus-4-5", "gemini-2.5-pro"]
)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_worst_case_bounds_every_usage_with_those_counts(
    book: PriceBook, model: str, data: st.DataObject
) -> None:
    rates = book.rates(model)
    usage = draw_usage(data, st.integers(0, 1_000_000), st.integers(0, 100_000))
    worst = rates.worst_case(usage.input_tokens, usage.output_tokens)
    assert worst >= rates.cost(usage)
    assert worst >= genai_nanos(model, usage)


@pytest.mark.parametrize(
    "model", ["gpt-4o", "claude-sonnet-4-5", "claude-opus-4-5", "gemini-2.5-pro"]
)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_hold_with_known_cache_marks_bounds_every_usage_within_them(
    book: PriceBook, model: str, data: st.DataObject
) -> None:
    rates = book.rates(model)
    usage = draw_usage(data, st.integers(0, 1_000_000), st.integers(0, 100_000))
    marked_1h = data.draw(st.integers(usage.cache_write_1h_tokens, usage.input_tokens))
    marked = data.draw(st.integers(max(marked_1h, usage.cache_write_tokens), usage.input_tokens))
    hold = rates.worst_case(
        usage.input_tokens,
        usage.output_tokens,
        cache_write_tokens=marked,
        cache_write_1h_tokens=marked_1h,
    )
    assert hold >= rates.cost(usage)
    assert hold <= rates.worst_case(usage.input_tokens, usage.output_tokens)


def test_claude_input_is_held_at_the_base_rate_without_a_cache_mark(book: PriceBook) -> None:
    sonnet = book.rates("claude-sonnet-4-5")
    plain = sonnet.worst_case(10_000, 0, cache_write_tokens=0)
    assert plain == sonnet.cost(Usage(input_tokens=10_000))  # $3 / MTok, not 2x for 1h writes
    assert sonnet.worst_case(10_000, 0) == 2 * plain  # nothing known: the one-hour write rate
    five = sonnet.worst_case(10_000, 0, cache_write_tokens=4_000)
    assert five == sonnet.cost(Usage(input_tokens=10_000, cache_write_tokens=4_000))
    with pytest.raises(ConfigurationError):
        sonnet.worst_case(10, 0, cache_write_tokens=11)


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro"])
@settings(max_examples=60, deadline=None)
@given(
    budget=st.integers(0, 5 * 10**9),
    input_tokens=st.integers(0, 300_000),
    choices=st.integers(1, 4),
)
def test_output_fitting_is_the_largest_cap_that_fits(
    book: PriceBook, model: str, budget: int, input_tokens: int, choices: int
) -> None:
    rates = book.rates(model)
    fits = rates.output_fitting(budget, input_tokens, cache_write_tokens=0, choices=choices)

    def hold(output: int) -> int:
        return rates.worst_case(input_tokens, output * choices, cache_write_tokens=0)

    if hold(0) > budget:
        assert fits == 0
        return
    assert hold(fits) <= budget
    assert fits == rates.max_output_tokens or hold(fits + 1) > budget


def test_worst_case_is_uncached_input_plus_output(book: PriceBook) -> None:
    rates = book.rates("gpt-4o")
    plain = Usage(input_tokens=1000, output_tokens=500)
    assert rates.worst_case(1000, 500) == genai_nanos("gpt-4o", plain)
    with pytest.raises(ConfigurationError):
        rates.worst_case(-1, 0)


def test_rates_carry_canonical_ids_and_limits(book: PriceBook) -> None:
    dated = book.rates("claude-3-5-sonnet-20241022")
    assert (dated.model, dated.provider, dated.source) == (
        "claude-3-5-sonnet",
        "anthropic",
        "genai-prices",
    )
    assert dated.max_output_tokens == 8192
    assert book.rates("gpt-4o-2024-08-06").model == "gpt-4o"
    assert book.rates("gpt-4o").max_output_tokens == 16384
    assert book.rates("claude-opus-4-1").max_output_tokens == 32000
    assert book.rates("claude-opus-4-5").max_output_tokens == 64000
    _, info = get_snapshot().find_provider_model("gpt-4o", None, None, None)
    assert book.rates("gpt-4o").context_window == info.context_window


def test_provider_prefixed_names(book: PriceBook) -> None:
    usage = Usage(input_tokens=3000, output_tokens=700, cache_read_tokens=1000)
    assert book.rates("openai/gpt-4o").cost(usage) == genai_nanos("gpt-4o", usage)
    prefixed = book.rates("anthropic/claude-sonnet-4-5")
    assert (prefixed.model, prefixed.provider) == ("claude-sonnet-4-5", "anthropic")


def test_max_output_falls_back_to_context_window_then_constant() -> None:
    # gpt-5.1 is not in the table (a "gpt-5" prefix followed by "." does not match).
    rates = PriceBook().rates("gpt-5.1")
    _, info = get_snapshot().find_provider_model("gpt-5.1", None, None, None)
    assert info.context_window is not None
    assert rates.max_output_tokens == info.context_window
    custom = PriceBook({"m": {"input": 1, "output": 2}}).rates("m")
    assert custom.max_output_tokens == DEFAULT_MAX_OUTPUT_TOKENS
    windowed = PriceBook({"m": Price(1, 2, context_window=9000)}).rates("m")
    assert windowed.max_output_tokens == 9000
    # A name in the table keeps the table's value even when overridden without one.
    assert (
        PriceBook({"gpt-4o": {"input": 1, "output": 2}}).rates("gpt-4o").max_output_tokens == 16384
    )


def test_unknown_model_raises_naming_it() -> None:
    with pytest.raises(UnknownModel, match="my-private-llm") as info:
        PriceBook().rates("my-private-llm")
    assert info.value.model == "my-private-llm"
    with pytest.raises(UnknownModel, match="nope-9000"):
        PriceBook().cost("nope-9000", Usage(1, 1))


def test_known_model_without_token_prices_is_unknown() -> None:
    # whisper-1 is priced per audio hour in genai-prices: no token price, never $0.
    _, info = get_snapshot().find_provider_model("whisper-1", None, None, None)
    prices = info.get_prices(datetime.now(UTC))
    assert prices.input_mtok is None
    with pytest.raises(UnknownModel, match="whisper-1"):
        PriceBook().rates("whisper-1")
    overridden = PriceBook({"whisper-1": {"input": 1, "output": 1}}).rates("whisper-1")
    assert overridden.source == "override"


def test_fallback_prices_unknown_models() -> None:
    book = PriceBook(fallback=Price(input=10, output=30, max_output_tokens=4096))
    rates = book.rates("my-private-llm")
    assert (rates.model, rates.source, rates.max_output_tokens) == (
        "my-private-llm",
        "fallback",
        4096,
    )
    # 1M input at $10 + 1M output at $30 = $40 exactly.
    assert rates.cost(Usage(input_tokens=1_000_000, output_tokens=1_000_000)) == 40 * 10**9
    # Known models still use genai-prices.
    assert book.rates("gpt-4o").source == "genai-prices"
    assert PriceBook(fallback={"input": "1", "output": "2"}).rates("x").source == "fallback"


def test_overrides_win_over_genai_prices() -> None:
    book = PriceBook({"gpt-4o": {"input": "1", "output": "2", "cache_read": "0.5"}})
    rates = book.rates("gpt-4o")
    assert (rates.provider, rates.source) == ("custom", "override")
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cache_read_tokens=400_000)
    # 600k x $1 + 400k x $0.5 + 1M x $2 = $2.8
    assert rates.cost(usage) == 2_800_000_000
    assert rates.cost(usage) != genai_nanos("gpt-4o", usage)
    assert book.rates("gpt-4o-mini").source == "genai-prices"  # exact names only


def test_one_hour_cache_writes_fall_back_to_the_write_rate() -> None:
    usage = Usage(
        input_tokens=1_000_000,
        output_tokens=0,
        cache_write_tokens=600_000,
        cache_write_1h_tokens=200_000,
    )
    own = PriceBook({"m": {"input": 1, "output": 2, "cache_write": 3, "cache_write_1h": 5}})
    # 400k x $1 + 400k x $3 + 200k x $5 = $2.6
    assert own.rates("m").cost(usage) == 2_600_000_000
    no_1h = PriceBook({"m": {"input": 1, "output": 2, "cache_write": 3}})
    assert no_1h.rates("m").cost(usage) == 2_200_000_000  # 400k x $1 + 600k x $3
    assert own.rates("m").worst_case(1_000_000, 0) == 5 * 10**9  # the dearest input rate


def test_override_values_are_exact_and_rates_round_up() -> None:
    price = Price(input=0.1, output="$0.3", cache_write=Decimal("0.0000000001"))
    assert price.input == Decimal("0.1") and price.output == Decimal("0.3")
    rates = PriceBook({"m": price}).rates("m")
    assert rates.input_rate == 100_000_000
    assert rates.cache_write_rate == 1  # 1e-10 USD/MTok -> 0.1 nano/MTok, rounded up
    assert rates.cost(Usage(input_tokens=3)) == 300  # 3 x $0.1 / 1M = 300 nano-USD
    # Three tokens at $0.0001/MTok is 0.3 nano-USD: charged as 1, never 0.
    tiny = PriceBook({"t": {"input": "0.0001", "output": 1}}).rates("t")
    assert tiny.cost(Usage(input_tokens=3)) == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input": -1, "output": 1}, r"prices\['my-model'\]\.input: must be >= 0"),
        ({"input": 1, "output": "lots"}, r"prices\['my-model'\]\.output: "),
        ({"input": 1, "output": float("nan")}, r"prices\['my-model'\]\.output: "),
        ({"input": 1, "output": 1, "cache_read": [1]}, r"prices\['my-model'\]\.cache_read: "),
        ({"input": True, "output": 1}, r"prices\['my-model'\]\.input: "),
        ({"output": 1}, r"prices\['my-model'\]\.input: required"),
        ({"input": 1, "output": 1, "max_output_tokens": 0}, r"\.max_output_tokens: must be > 0"),
        ({"input": 1, "output": 1, "context_window": "big"}, r"\.context_window: expected"),
        ({"input": 1, "output": 1, "inptu": 1}, r"prices\['my-model'\]\.inptu: unknown field"),
    ],
)
def test_bad_override_fields_name_model_and_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        PriceBook({"my-model": fields})


def test_bad_price_objects_and_fallbacks() -> None:
    with pytest.raises(ConfigurationError, match=r"price\.input: must be >= 0"):
        Price(input=-1, output=1)
    with pytest.raises(ConfigurationError, match=r"fallback\.output: must be >= 0"):
        PriceBook(fallback={"input": 1, "output": "-0.5"})
    with pytest.raises(ConfigurationError, match=r"prices\['m'\]: expected a Price"):
        PriceBook({"m": 3})  # type: ignore[dict-item]


def test_provider_override() -> None:
    # "claude-sonnet-4-5" is listed by Anthropic and by Google (Vertex).
    default = PriceBook().rates("claude-sonnet-4-5")
    assert default.provider == "anthropic"
    via_map = PriceBook(providers={"claude-sonnet-4-5": "google"}).rates("claude-sonnet-4-5")
    via_arg = PriceBook().rates("claude-sonnet-4-5", provider="google")
    assert via_map.provider == via_arg.provider == "google"
    usage = Usage(input_tokens=5000, output_tokens=1000, cache_read_tokens=1000)
    assert via_arg.cost(usage) == genai_nanos("claude-sonnet-4-5", usage, provider="google")
    with pytest.raises(ConfigurationError, match=r"providers\['x'\]: unknown provider 'nope'"):
        PriceBook(providers={"x": "nope"})
    with pytest.raises(UnknownModel, match="gpt-4o"):
        PriceBook().rates("gpt-4o", provider="anthropic")


def test_cache_returns_the_same_object(book: PriceBook) -> None:
    first = book.rates("gpt-4o-mini")
    assert book.rates("gpt-4o-mini") is first
    assert book.rates("gpt-4o-mini", "openai") is not first  # keyed by what was asked
    assert book.rates("gpt-4o-mini", "openai") == first


def test_cache_entries_are_refreshed_after_an_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(_pricing.time, "monotonic", lambda: now[0])
    book = PriceBook()
    first = book.rates("gpt-4o")
    now[0] += _pricing.REFRESH_SECONDS - 1
    assert book.rates("gpt-4o") is first
    now[0] += 2
    second = book.rates("gpt-4o")
    assert second is not first and second == first


def test_dated_prices_expire_at_their_boundary() -> None:
    # deepseek-chat has an off-peak (time-of-day) price: its next switch is within a day.
    _, deepseek = get_snapshot().find_provider_model("deepseek-chat", None, None, None)
    now = datetime.now(UTC)
    change = _pricing._next_price_change(deepseek, now)
    assert change is not None and now < change <= now + timedelta(days=1)
    usage = Usage(input_tokens=4000, output_tokens=1000, cache_read_tokens=1000)
    assert PriceBook().cost("deepseek-chat", usage) == genai_nanos("deepseek-chat", usage)


def test_model_rates_direct_construction() -> None:
    rates = ModelRates(
        model="m",
        provider="custom",
        input_rate=TieredRate(1_000_000_000, ((10, 2_000_000_000),)),
        output_rate=3_000_000_000,
        reasoning_rate=5_000_000_000,
    )
    # 10 input tokens stay at base; 11 switch all of them to the tier rate.
    assert rates.cost(Usage(input_tokens=10)) == 10_000
    assert rates.cost(Usage(input_tokens=11)) == 22_000
    assert rates.cost(Usage(output_tokens=4, reasoning_tokens=1)) == 3 * 3_000 + 5_000
    assert rates.worst_case(11, 4) == 22_000 + 4 * 5_000


def _walk(rate: int | TieredRate | None, input_tokens: int) -> int | None:
    """A rate at ``input_tokens`` by walking its tiers: the reference for the precomputed bands."""
    if rate is None or isinstance(rate, int):
        return rate
    found = rate.base
    for start, tier_rate in rate.tiers:
        if input_tokens > start:
            found = tier_rate
    return found


_RATE_VALUES = st.integers(0, 10**11)
_TIERED = st.builds(
    TieredRate,
    _RATE_VALUES,
    st.lists(st.tuples(st.integers(0, 8), _RATE_VALUES), max_size=3, unique_by=lambda t: t[0]).map(
        lambda tiers: tuple(sorted(tiers))
    ),
)
_RATES = st.one_of(_RATE_VALUES, _TIERED)


@settings(max_examples=300, deadline=None)
@given(
    rates=st.tuples(
        _RATES,
        _RATES,
        st.none() | _RATES,
        st.none() | _RATES,
        st.none() | _RATES,
        st.none() | _RATES,
    ),
    request_rate=st.integers(0, 10**9),
    data=st.data(),
)
def test_precomputed_bands_price_like_a_tier_walk(
    rates: tuple[Any, ...], request_rate: int, data: st.DataObject
) -> None:
    # Tier starts drawn from a small range collide across rates and sit next to the
    # drawn token counts, so every band edge (n == start, n == start + 1) is exercised.
    model = ModelRates("m", "custom", *rates, request_rate=request_rate)
    starts = {start for rate in rates if isinstance(rate, TieredRate) for start, _ in rate.tiers}
    edges = sorted({max(0, start + step) for start in starts for step in (-1, 0, 1, 2)})
    usage = draw_usage(
        data,
        st.integers(0, 12) | (st.sampled_from(edges) if edges else st.nothing()),
        st.integers(0, 40),
    )
    input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
    cache_read, cache_write = usage.cache_read_tokens, usage.cache_write_tokens
    one_hour, reasoning = usage.cache_write_1h_tokens, usage.reasoning_tokens

    flat_in, flat_out, read, write, think, write_1h = (_walk(rate, input_tokens) for rate in rates)
    assert flat_in is not None and flat_out is not None
    total = request_rate
    uncached = input_tokens
    if read is not None and cache_read:
        total += cache_read * read
        uncached -= cache_read
    # one-hour writes: their own rate, else the write rate, else the input rate
    one_hour_rate = write_1h if write_1h is not None else write
    if one_hour_rate is not None and one_hour:
        total += one_hour * one_hour_rate
        uncached -= one_hour
    if write is not None and cache_write - one_hour:
        total += (cache_write - one_hour) * write
        uncached -= cache_write - one_hour
    output = output_tokens
    if think is not None and reasoning:
        total += reasoning * think
        output -= reasoning
    total += uncached * flat_in + output * flat_out
    assert model.cost(usage) == -(-total // 1_000_000)

    worst_in = max(flat_in, read or 0, write or 0, write_1h or 0)
    worst_out = max(flat_out, think or 0)
    worst = input_tokens * worst_in + output_tokens * worst_out + request_rate
    assert model.worst_case(input_tokens, output_tokens) == -(-worst // 1_000_000)


def test_model_rates_stay_plain_values() -> None:
    import copy
    import dataclasses
    import pickle

    rates = PriceBook().rates("claude-sonnet-4-5")
    usage = Usage(input_tokens=250_000, output_tokens=10, cache_read_tokens=1_000)
    for twin in (
        pickle.loads(pickle.dumps(rates)),
        copy.deepcopy(rates),
        dataclasses.replace(rates),
    ):
        assert twin == rates and hash(twin) == hash(rates)
        assert twin.cost(usage) == rates.cost(usage)
        assert twin.worst_case(250_000, 10) == rates.worst_case(250_000, 10)
    cheaper = dataclasses.replace(rates, output_rate=1)
    assert cheaper != rates and cheaper.cost(usage) < rates.cost(usage)
    assert "_bands" not in repr(rates)


def test_adjacent_tier_starts_of_different_rates() -> None:
    # Bands (10, 11] and (11, 12] are one token wide: each must see its own rates.
    rates = (
        TieredRate(1_000, ((10, 2_000),)),
        TieredRate(3_000, ((11, 4_000),)),
        TieredRate(500, ((12, 700),)),
        None,
        None,
    )
    model = ModelRates("m", "custom", *rates)
    for n in range(9, 15):
        flat_in, flat_out, read = (_walk(rate, n) for rate in rates[:3])
        assert flat_in is not None and flat_out is not None and read is not None
        usage = Usage(input_tokens=n, output_tokens=n, cache_read_tokens=1)
        expected = (n - 1) * flat_in + read + n * flat_out
        assert model.cost(usage) == -(-expected // 1_000_000), n
        worst = n * max(flat_in, read) + n * flat_out
        assert model.worst_case(n, n) == -(-worst // 1_000_000), n


# -- usages with details (issue 12): audio, image, video tokens, web searches, tiers -----

DETAILED_MODELS = [
    ("gemini-2.5-flash", "google"),
    ("gemini-2.5-pro", "google"),
    ("gpt-audio", "openai"),
    ("gpt-4o-mini", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("gemini-3.1-flash-image-preview", "google"),
]


@st.composite
def detailed_usages(draw: st.DrawFn) -> Usage:
    output = draw(st.integers(0, 300_000))
    reasoning = draw(st.integers(0, output))
    out_audio = draw(st.integers(0, output))
    out_image = draw(st.integers(0, output - out_audio))
    audio = draw(st.integers(0, 300_000))
    image = draw(st.integers(0, 300_000))
    video = draw(st.integers(0, 300_000))
    text = draw(st.integers(0, 300_000))
    cache_audio = draw(st.integers(0, audio))
    cache_image = draw(st.integers(0, image))
    cache_video = draw(st.integers(0, video))
    cache_text = draw(st.integers(0, text))
    details = UsageDetails(
        input_audio_tokens=audio,
        input_image_tokens=image,
        input_video_tokens=video,
        cache_audio_read_tokens=cache_audio,
        cache_image_read_tokens=cache_image,
        cache_video_read_tokens=cache_video,
        output_audio_tokens=out_audio,
        output_image_tokens=out_image,
        web_searches=draw(st.integers(0, 50)),
    )
    return Usage(
        input_tokens=audio + image + video + text,
        output_tokens=output,
        cache_read_tokens=cache_audio + cache_image + cache_video + cache_text,
        reasoning_tokens=reasoning,
        details=details,
    )


@pytest.mark.parametrize(("model", "provider"), DETAILED_MODELS)
@settings(max_examples=60, deadline=None)
@given(usage=detailed_usages())
def test_detailed_usages_match_genai_prices_to_the_nano_dollar(
    model: str, provider: str, usage: Usage
) -> None:
    from provider_support import genai_cost

    assert PriceBook().cost(model, usage, provider) == genai_cost(model, usage, provider=provider)


def test_a_plain_usage_costs_the_same_with_empty_details() -> None:
    book = PriceBook()
    for model, provider in DETAILED_MODELS:
        plain = Usage(input_tokens=250_000, output_tokens=9_000, cache_read_tokens=1_000)
        detailed = Usage(
            input_tokens=250_000,
            output_tokens=9_000,
            cache_read_tokens=1_000,
            details=UsageDetails(),
        )
        assert book.cost(model, plain, provider) == book.cost(model, detailed, provider), model
