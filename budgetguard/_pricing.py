"""Model -> rates: genai-prices data, user overrides and a fallback, cached per model.

Every guarded call is priced twice (worst case before, actual usage after),
so a lookup must cost a dict hit, not a trip through genai-prices' matching
and ``Decimal`` arithmetic (~170 us per ``calc_price``). ``PriceBook`` turns
a model's prices into integer rates once - nano-USD per *million* tokens, so
a rate with up to nine decimals of USD/MTok stays exact - and ``ModelRates``
then prices usage with integers only, rounding up once at the very end: the
result is exactly ``ceil(genai_prices.calc_price(...).total_price * 1e9)``.

A model nobody can price is never free: it raises ``UnknownModel`` unless a
fallback price is configured. Prices that change over time (genai-prices'
dated and time-of-day prices, or a snapshot refreshed by its auto-updater)
are picked up by re-resolving a cache entry after an hour, or at the next
price boundary when that comes sooner.
"""

from __future__ import annotations

import re
import threading
import time
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import ROUND_CEILING, Decimal
from types import MappingProxyType
from typing import Any, cast

from ._errors import ConfigurationError, UnknownModel
from ._money import NANOS_PER_USD, UsdLike, to_decimal
from ._usage import Usage

__all__ = [
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "MAX_OUTPUT_TOKENS",
    "REFRESH_SECONDS",
    "ModelRates",
    "Price",
    "PriceBook",
    "Rate",
    "TieredRate",
]

PER_MILLION = 1_000_000
REFRESH_SECONDS = 3600.0
"""A cached genai-prices entry is re-resolved after this long (monotonic clock)."""

DEFAULT_MAX_OUTPUT_TOKENS = 32_768
"""Worst-case output when neither the table, an override nor the context window knows it."""

# Largest ``max_tokens`` each family accepts (provider documentation). genai-prices
# carries no output limits. Keys match a canonical model id exactly, or as a prefix
# followed by ``-`` and a non-digit or a date: ``gpt-4o`` covers ``gpt-4o-2024-08-06``
# and ``gpt-4o-mini`` but ``claude-opus-4`` would not cover ``claude-opus-4-5``.
MAX_OUTPUT_TOKENS: Mapping[str, int] = MappingProxyType(
    {
        "gpt-3.5-turbo": 4_096,
        "gpt-4": 8_192,
        "gpt-4-turbo": 4_096,
        "gpt-4o": 16_384,
        "gpt-4o-mini": 16_384,
        "chatgpt-4o-latest": 16_384,
        "gpt-4.1": 32_768,
        "gpt-4.1-mini": 32_768,
        "gpt-4.1-nano": 32_768,
        "gpt-4.5-preview": 16_384,
        "o1": 100_000,
        "o1-mini": 65_536,
        "o1-preview": 32_768,
        "o1-pro": 100_000,
        "o3": 100_000,
        "o3-mini": 100_000,
        "o3-pro": 100_000,
        "o4-mini": 100_000,
        "gpt-5": 128_000,
        "gpt-5-mini": 128_000,
        "gpt-5-nano": 128_000,
        "claude-3-haiku": 4_096,
        "claude-3-opus": 4_096,
        "claude-3-sonnet": 4_096,
        "claude-3-5-haiku": 8_192,
        "claude-3-5-sonnet": 8_192,
        "claude-3-7-sonnet": 128_000,  # 64k, or 128k with the output-128k beta header
        "claude-sonnet-4": 64_000,
        "claude-sonnet-4-0": 64_000,
        "claude-opus-4": 32_000,
        "claude-opus-4-0": 32_000,
        "claude-opus-4-1": 32_000,
        "claude-sonnet-4-5": 64_000,
        "claude-haiku-4-5": 64_000,
        "claude-opus-4-5": 64_000,
        "gemini-1.5-flash": 8_192,
        "gemini-1.5-pro": 8_192,
        "gemini-2.0-flash": 8_192,
        "gemini-2.0-flash-lite": 8_192,
        "gemini-2.5-flash": 65_536,
        "gemini-2.5-flash-lite": 65_536,
        "gemini-2.5-pro": 65_536,
    }
)
_SUFFIX_OK = re.compile(r"(?:\d{4}-\d{2}-\d{2}|\d{8})(?:-|$)|\D")


def _table_max_output(model: str) -> int | None:
    name = model.lower().rsplit("/", 1)[-1]
    best: tuple[int, int] | None = None
    for key, limit in MAX_OUTPUT_TOKENS.items():
        if name == key:
            return limit
        if (
            name.startswith(key + "-")
            and _SUFFIX_OK.match(name, len(key) + 1)
            and (best is None or len(key) > best[0])
        ):
            best = (len(key), limit)
    return best[1] if best else None


# -- integer rates -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TieredRate:
    """Cliff pricing: when *total* input tokens exceed a tier's start, its rate applies to all."""

    base: int
    tiers: tuple[tuple[int, int], ...]  # (start, rate), ascending by start

    def at(self, input_tokens: int) -> int:
        rate = self.base
        for start, tier_rate in self.tiers:
            if input_tokens <= start:
                break
            rate = tier_rate
        return rate


Rate = int | TieredRate
"""nano-USD per million units (USD/MTok * 1e9), flat or tiered by total input tokens."""


def _at(rate: Rate, input_tokens: int) -> int:
    return rate if isinstance(rate, int) else rate.at(input_tokens)


_Band = tuple[int, int, int | None, int | None, int | None, int | None]
"""Flat rates in force over one input-token range: input, output, cache read, cache write,
reasoning, one-hour cache write (``None``: no own rate)."""


@dataclass(frozen=True, slots=True)
class ModelRates:
    """One model's prices as integers, ready for the hot path.

    Rates are nano-USD per million tokens; ``request_rate`` is nano-USD per
    million requests (a per-request fee, rare). ``source`` says where they
    came from: ``"genai-prices"``, ``"override"`` or ``"fallback"``.

    Tiers are resolved once, at construction: every tier start of every rate
    splits the input-token axis into bands, and each band holds the flat rates
    in force there (plus the two worst-case rates). Pricing a usage is then one
    band lookup and integer arithmetic, with no per-rate tier walk.
    """

    model: str
    provider: str
    input_rate: Rate
    output_rate: Rate
    cache_read_rate: Rate | None = None
    cache_write_rate: Rate | None = None
    reasoning_rate: Rate | None = None
    cache_write_1h_rate: Rate | None = None
    request_rate: int = 0
    max_output_tokens: int | None = None
    context_window: int | None = None
    source: str = "genai-prices"
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _bands: tuple[_Band, ...] = field(init=False, repr=False, compare=False)
    _worst: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rates = (
            self.input_rate,
            self.output_rate,
            self.cache_read_rate,
            self.cache_write_rate,
            self.reasoning_rate,
            self.cache_write_1h_rate,
        )
        starts = tuple(
            sorted(
                {start for rate in rates if isinstance(rate, TieredRate) for start, _ in rate.tiers}
            )
        )
        # Band i holds the input-token counts n with starts[i-1] < n <= starts[i]:
        # n <= starts[0] is below every tier; a tier applies once n exceeds its start.
        samples = [starts[0] if starts else 0, *(start + 1 for start in starts)]
        bands: list[_Band] = []
        worst: list[tuple[int, int]] = []
        for n in samples:
            flat_in, flat_out, read, write, reasoning, write_1h = (
                None if rate is None else _at(rate, n) for rate in rates
            )
            assert flat_in is not None and flat_out is not None
            bands.append((flat_in, flat_out, read, write, reasoning, write_1h))
            worst.append(
                (
                    max(flat_in, read or 0, write or 0, write_1h or 0),
                    max(flat_out, reasoning or 0),
                )
            )
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_bands", tuple(bands))
        object.__setattr__(self, "_worst", tuple(worst))

    def cost(self, usage: Usage) -> int:
        """Exact cost in nano-USD, rounded up once at the end.

        Equals ``ceil(genai_prices total_price * 1e9)`` for the same usage:
        cache reads/writes and reasoning tokens get their own rate when the
        model has one, else the plain input/output rate.
        """
        n = usage.input_tokens
        starts = self._starts
        input_rate, output_rate, read_rate, write_rate, reasoning_rate, write_1h_rate = self._bands[
            bisect_left(starts, n) if starts else 0
        ]
        total = self.request_rate
        uncached = n
        read = usage.cache_read_tokens
        if read and read_rate is not None:
            total += read * read_rate
            uncached -= read
        write = usage.cache_write_tokens
        if write:
            # One-hour writes are a part of the writes: their own rate where the
            # model has one, else the (five-minute) write rate, else input.
            write_1h = usage.cache_write_1h_tokens
            if write_1h and write_1h_rate is not None:
                total += write_1h * write_1h_rate
                uncached -= write_1h
                write -= write_1h
            if write_rate is not None:
                total += write * write_rate
                uncached -= write
        output = usage.output_tokens
        reasoning = usage.reasoning_tokens
        if reasoning and reasoning_rate is not None:
            total += reasoning * reasoning_rate
            output -= reasoning
        total += uncached * input_rate + output * output_rate
        return -(-total // PER_MILLION)

    def worst_case(self, input_tokens: int, output_tokens: int) -> int:
        """The most ``input_tokens`` in and ``output_tokens`` out can cost, in nano-USD.

        Tiers are chosen by ``input_tokens``. Every input token is charged at
        the highest input-side rate (the uncached rate, or the cache-write
        rate where writing costs more, as on Anthropic), every output token at
        the output or reasoning rate, whichever is higher. So ``cost(usage)``
        never exceeds it for a usage with these token counts.
        """
        if input_tokens < 0 or output_tokens < 0:
            raise ConfigurationError(
                f"worst_case: token counts must be >= 0, got {input_tokens}, {output_tokens}"
            )
        starts = self._starts
        in_rate, out_rate = self._worst[bisect_left(starts, input_tokens) if starts else 0]
        total = input_tokens * in_rate + output_tokens * out_rate + self.request_rate
        return -(-total // PER_MILLION)


def _nanos_per_million(usd: Decimal, scale: int = 1) -> int:
    """USD per million units -> nano-USD per million units; extra decimals round the rate up."""
    return int((usd * NANOS_PER_USD * scale).to_integral_value(ROUND_CEILING))


# -- user-facing prices ----------------------------------------------------------

_USD_FIELDS = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning")
_TOKEN_FIELDS = ("max_output_tokens", "context_window")
_PRICE_FIELDS = _USD_FIELDS + _TOKEN_FIELDS


def _usd_field(value: object, name: str) -> Decimal:
    try:
        amount = to_decimal(cast(UsdLike, value), field=name)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(str(error)) from None
    if amount < 0:
        raise ConfigurationError(f"{name}: must be >= 0, got {value!r}")
    return amount


def _tokens_field(value: object, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigurationError(f"{name}: expected a positive int, got {value!r}")
    if value <= 0:
        raise ConfigurationError(f"{name}: must be > 0, got {value}")
    return value


@dataclass(frozen=True, slots=True, init=False)
class Price:
    """A price you set: USD per *million* tokens (``Decimal``, ``int``, ``str`` or ``float``).

    ``cache_read`` / ``cache_write`` / ``reasoning`` default to the input or
    output rate; ``cache_write_1h`` (Anthropic's one-hour cache) to
    ``cache_write``. ``max_output_tokens`` is the worst-case output when a call
    sets no ``max_tokens``; ``context_window`` is used for it when unset.
    """

    input: Decimal
    output: Decimal
    cache_read: Decimal | None
    cache_write: Decimal | None
    cache_write_1h: Decimal | None
    reasoning: Decimal | None
    max_output_tokens: int | None
    context_window: int | None

    def __init__(
        self,
        input: UsdLike,
        output: UsdLike,
        *,
        cache_read: UsdLike | None = None,
        cache_write: UsdLike | None = None,
        cache_write_1h: UsdLike | None = None,
        reasoning: UsdLike | None = None,
        max_output_tokens: int | None = None,
        context_window: int | None = None,
    ) -> None:
        _init_price(
            self,
            {
                "input": input,
                "output": output,
                "cache_read": cache_read,
                "cache_write": cache_write,
                "cache_write_1h": cache_write_1h,
                "reasoning": reasoning,
                "max_output_tokens": max_output_tokens,
                "context_window": context_window,
            },
            "price",
        )

    @classmethod
    def parse(cls, value: Price | Mapping[str, object], *, where: str = "price") -> Price:
        """A ``Price`` from itself or a mapping; errors name ``where`` and the field."""
        if isinstance(value, Price):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"{where}: expected a Price or a mapping, got {type(value).__name__}"
            )
        unknown = sorted(str(key) for key in value if key not in _PRICE_FIELDS)
        if unknown:
            raise ConfigurationError(
                f"{where}.{unknown[0]}: unknown field (expected one of {', '.join(_PRICE_FIELDS)})"
            )
        price = cls.__new__(cls)
        _init_price(price, {name: value.get(name) for name in _PRICE_FIELDS}, where)
        return price


def _init_price(price: Price, values: Mapping[str, object], where: str) -> None:
    for name in ("input", "output"):
        if values.get(name) is None:
            raise ConfigurationError(f"{where}.{name}: required (USD per million tokens)")
    for name in _USD_FIELDS:
        raw = values.get(name)
        converted = None if raw is None else _usd_field(raw, f"{where}.{name}")
        object.__setattr__(price, name, converted)
    for name in _TOKEN_FIELDS:
        object.__setattr__(price, name, _tokens_field(values.get(name), f"{where}.{name}"))


def _rates_from_price(model: str, provider: str, price: Price, source: str) -> ModelRates:
    def optional(amount: Decimal | None) -> int | None:
        return None if amount is None else _nanos_per_million(amount)

    return ModelRates(
        model=model,
        provider=provider,
        input_rate=_nanos_per_million(price.input),
        output_rate=_nanos_per_million(price.output),
        cache_read_rate=optional(price.cache_read),
        cache_write_rate=optional(price.cache_write),
        cache_write_1h_rate=optional(price.cache_write_1h),
        reasoning_rate=optional(price.reasoning),
        max_output_tokens=(
            price.max_output_tokens
            or _table_max_output(model)
            or price.context_window
            or DEFAULT_MAX_OUTPUT_TOKENS
        ),
        context_window=price.context_window,
        source=source,
    )


# -- genai-prices -----------------------------------------------------------------


def _genai_rate(value: object, scale: int = 1) -> Rate | None:
    from genai_prices.types import TieredPrices

    if value is None:
        return None
    if isinstance(value, Decimal):
        return _nanos_per_million(value, scale)
    if isinstance(value, TieredPrices):
        tiers = tuple(
            (int(tier.start), _nanos_per_million(tier.price, scale))
            for tier in sorted(value.tiers, key=lambda tier: tier.start)
        )
        base = _nanos_per_million(value.base, scale)
        return TieredRate(base, tiers) if tiers else base
    raise TypeError(f"unexpected genai-prices price {value!r}")


def _rates_from_genai(provider: Any, model: Any, now: datetime) -> ModelRates | None:
    prices = model.get_prices(now)
    input_rate = _genai_rate(getattr(prices, "input_mtok", None))
    output_rate = _genai_rate(getattr(prices, "output_mtok", None))
    if input_rate is None or output_rate is None:
        return None
    requests = _genai_rate(getattr(prices, "requests_kcount", None), scale=1000)
    if isinstance(requests, TieredRate):  # never seen; charge the highest tier
        requests = max([requests.base, *(rate for _, rate in requests.tiers)])
    context_window = model.context_window
    return ModelRates(
        model=model.id,
        provider=provider.id,
        input_rate=input_rate,
        output_rate=output_rate,
        cache_read_rate=_genai_rate(getattr(prices, "cache_read_mtok", None)),
        cache_write_rate=_genai_rate(getattr(prices, "cache_write_mtok", None)),
        cache_write_1h_rate=_genai_rate(getattr(prices, "cache_write_1h_mtok", None)),
        reasoning_rate=_genai_rate(getattr(prices, "output_reasoning_mtok", None)),
        request_rate=requests or 0,
        max_output_tokens=(
            _table_max_output(model.id) or context_window or DEFAULT_MAX_OUTPUT_TOKENS
        ),
        context_window=context_window,
        source="genai-prices",
    )


def _next_price_change(model: Any, now: datetime) -> datetime | None:
    """The next instant a dated or time-of-day conditional price may switch."""
    from genai_prices.types import StartDateConstraint, TimeOfDateConstraint

    if not isinstance(model.prices, list):
        return None
    candidates: list[datetime] = []
    for conditional in model.prices:
        constraint = conditional.constraint
        if isinstance(constraint, StartDateConstraint):
            start = datetime.combine(constraint.start_date, dtime(0), UTC)
            if start > now:
                candidates.append(start)
        elif isinstance(constraint, TimeOfDateConstraint):
            for moment in (constraint.start_time, constraint.end_time):
                at = _today_at(now.date(), moment)
                candidates.append(at if at > now else at + timedelta(days=1))
    return min(candidates, default=None)


def _today_at(day: date, moment: dtime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return datetime.combine(day, moment).astimezone(UTC)


def _find(model: str, provider: str | None) -> tuple[Any, Any] | None:
    """genai-prices' own matching, then again without a ``provider/`` prefix."""
    from genai_prices.data_snapshot import get_snapshot

    snapshot = get_snapshot()
    attempts: list[tuple[str, str | None]] = [(model, provider)]
    if "/" in model:
        prefix, _, rest = model.partition("/")
        attempts += [(rest, provider or prefix), (rest, provider)]
    for ref, provider_id in attempts:
        try:
            return snapshot.find_provider_model(ref, None, provider_id, None)
        except LookupError:
            continue
    return None


def _check_provider(provider: str, where: str) -> None:
    from genai_prices.data_snapshot import get_snapshot

    try:
        get_snapshot().find_provider(None, provider, None)
    except LookupError:
        raise ConfigurationError(f"{where}: unknown provider {provider!r}") from None


# -- the book -----------------------------------------------------------------------

_MAX_CACHED = 4096
_FOREVER = float("inf")


class PriceBook:
    """Where rates come from: override > genai-prices > fallback, else ``UnknownModel``.

    ``overrides`` maps a model name (exact string) to a ``Price`` or a mapping
    of its fields; ``fallback`` prices any model nobody else can;
    ``providers`` maps a model name to the genai-prices provider id to look it
    up under, when the name alone is ambiguous. Thread-safe; lookups are
    cached by the exact ``(model, provider)`` asked.
    """

    __slots__ = ("_cache", "_fallback", "_lock", "_overrides", "_providers")

    def __init__(
        self,
        overrides: Mapping[str, Price | Mapping[str, object]] | None = None,
        *,
        fallback: Price | Mapping[str, object] | None = None,
        providers: Mapping[str, str] | None = None,
    ) -> None:
        parsed: dict[str, Price] = {}
        for name, price in (overrides or {}).items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"prices: model names must be non-empty strings: {name!r}")
            parsed[name] = Price.parse(price, where=f"prices[{name!r}]")
        self._overrides: Mapping[str, Price] = MappingProxyType(parsed)
        self._fallback = None if fallback is None else Price.parse(fallback, where="fallback")
        checked: dict[str, str] = {}
        for name, provider in (providers or {}).items():
            where = f"providers[{name!r}]"
            if not isinstance(provider, str):
                raise ConfigurationError(f"{where}: expected a provider id, got {provider!r}")
            _check_provider(provider, where)
            checked[name] = provider
        self._providers: Mapping[str, str] = MappingProxyType(checked)
        self._cache: dict[tuple[str, str | None], tuple[ModelRates, float]] = {}
        self._lock = threading.Lock()

    @property
    def overrides(self) -> Mapping[str, Price]:
        return self._overrides

    @property
    def fallback(self) -> Price | None:
        return self._fallback

    @property
    def providers(self) -> Mapping[str, str]:
        return self._providers

    def rates(self, model: str, provider: str | None = None) -> ModelRates:
        """The rates of ``model``: a dict hit once resolved (refreshed after an hour)."""
        entry = self._cache.get((model, provider))
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        rates, expires = self._resolve(model, provider)
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[(model, provider)] = (rates, expires)
        return rates

    def cost(self, model: str, usage: Usage, provider: str | None = None) -> int:
        """nano-USD ``usage`` of ``model`` costs."""
        return self.rates(model, provider).cost(usage)

    def _resolve(self, model: str, provider: str | None) -> tuple[ModelRates, float]:
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"model: expected a model name, got {model!r}")
        override = self._overrides.get(model)
        if override is not None:
            return _rates_from_price(model, "custom", override, "override"), _FOREVER
        provider_id = provider or self._providers.get(model)
        detail = f" under provider {provider_id!r}" if provider_id else ""
        found = _find(model, provider_id)
        if found is not None:
            now = datetime.now(UTC)
            rates = _rates_from_genai(found[0], found[1], now)
            if rates is not None:
                ttl = REFRESH_SECONDS
                change = _next_price_change(found[1], now)
                if change is not None:
                    ttl = min(ttl, (change - now).total_seconds() + 0.001)
                return rates, time.monotonic() + ttl
            detail = (
                f": genai-prices knows {found[1].id!r} ({found[0].id}) "
                "but has no per-token input and output price for it"
            )
        if self._fallback is not None:
            rates = _rates_from_price(model, provider_id or "custom", self._fallback, "fallback")
            return rates, time.monotonic() + REFRESH_SECONDS  # genai-prices may learn it
        raise UnknownModel(model, detail)
