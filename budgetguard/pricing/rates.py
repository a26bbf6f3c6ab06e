"""Integer rates: one model's prices as nano-USD per million tokens, for the hot path.

``ModelRates`` prices a usage with integers only, rounding up once at the very
end: the result is exactly ``ceil(genai_prices.calc_price(...).total_price * 1e9)``.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from .._core.errors import ConfigurationError
from .._core.money import NANOS_PER_USD
from .._core.usage import Usage
from .detailed import CORE_KEYS, Leaves, detailed_total, leaves_for
from .tiers import Rate, TieredRate, rate_at

_at = rate_at

__all__ = ["PER_MILLION", "ModelRates", "Rate", "TieredRate", "nanos_per_million", "rate_at"]

PER_MILLION = 1_000_000


_Band = tuple[int, int, int | None, int | None, int | None, int | None]
"""Flat rates in force over one input-token range: input, output, cache read, cache write,
reasoning, one-hour cache write (``None``: no own rate)."""


_AUDIO_INPUT_KEYS = frozenset({"input_audio_tokens", "cache_audio_read_tokens"})


def _highest(rate: Rate) -> int:
    """A rate's highest value over its tiers."""
    if isinstance(rate, TieredRate):
        return max(rate.base, *(value for _, value in rate.tiers))
    return rate


@dataclass(frozen=True, slots=True)
class ModelRates:
    """One model's prices as integers, ready for the hot path.

    Rates are nano-USD per million tokens; ``request_rate`` is nano-USD per
    million requests (a per-request fee, rare). ``detail_rates`` are the rates
    of ``UsageDetails``' parts the model prices on their own (audio, image,
    video tokens per million; web searches per thousand), by genai-prices
    usage key. ``source`` says where they came from: ``"genai-prices"``,
    ``"override"``, ``"fallback"`` or ``"free"`` (genai-prices lists no price).

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
    detail_rates: tuple[tuple[str, Rate], ...] = ()
    _leaves: Leaves = field(init=False, repr=False, compare=False)
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _bands: tuple[_Band, ...] = field(init=False, repr=False, compare=False)
    _worst: tuple[tuple[int, int, int, int, int], ...] = field(
        init=False, repr=False, compare=False
    )
    _audio_in: int = field(init=False, repr=False, compare=False)

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
        worst: list[tuple[int, int, int, int, int]] = []
        for n in samples:
            flat_in, flat_out, read, write, reasoning, write_1h = (
                None if rate is None else _at(rate, n) for rate in rates
            )
            assert flat_in is not None and flat_out is not None
            bands.append((flat_in, flat_out, read, write, reasoning, write_1h))
            base = max(flat_in, read or 0)
            five_minutes = max(base, write or 0)
            one_hour = max(base, write_1h if write_1h is not None else write or 0)
            worst.append(
                (
                    max(five_minutes, one_hour),  # any input token, caching unknown
                    max(flat_out, reasoning or 0),
                    base,  # an input token no cache marker can make a write
                    five_minutes,
                    one_hour,
                )
            )
        audio = [_highest(rate) for key, rate in self.detail_rates if key in _AUDIO_INPUT_KEYS]
        object.__setattr__(self, "_audio_in", max(audio, default=0))
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_bands", tuple(bands))
        object.__setattr__(self, "_worst", tuple(worst))
        priced = {key: rate for key, rate in zip(CORE_KEYS, rates, strict=True) if rate is not None}
        object.__setattr__(self, "_leaves", leaves_for({**priced, **dict(self.detail_rates)}))

    def cost(self, usage: Usage) -> int:
        """Exact cost in nano-USD, rounded up once at the end.

        Equals ``ceil(genai_prices total_price * 1e9)`` for the same usage:
        cache reads/writes and reasoning tokens get their own rate when the
        model has one, else the plain input/output rate. A usage with details
        (audio, image, video, web searches) is priced unit by unit, as
        genai-prices does (``detailed.py``).
        """
        if usage.details is not None:
            return -(-detailed_total(self._leaves, usage, self.request_rate) // PER_MILLION)
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

    @property
    def prices_audio_apart(self) -> bool:
        """Whether audio input costs more here than any text input token."""
        return self._audio_in > max((worst[0] for worst in self._worst), default=0)

    def worst_case(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        cache_write_tokens: int | None = None,
        cache_write_1h_tokens: int = 0,
        audio: bool = False,
    ) -> int:
        """The most ``input_tokens`` in and ``output_tokens`` out can cost, in nano-USD.

        Tiers are chosen by ``input_tokens``; every output token is charged at the
        output or reasoning rate, whichever is higher. ``cache_write_tokens`` None
        (nothing known of the request's prompt caching): every input token at the
        highest input-side rate (the cache-write rate where writing costs more, as on
        Anthropic), so ``cost(usage)`` never exceeds it for any usage with these
        counts. Given (what the request marks for caching; 0 for none): those tokens
        at the write rate (``cache_write_1h_tokens`` of them at the one-hour rate),
        the rest at the input rate - never below ``cost`` of a usage whose writes
        stay within the marked ones. ``audio`` (the request carries audio or video,
        whose sound some models price apart, dearer): every input token at the
        dearest of those rates and the text ones.
        """
        if input_tokens < 0 or output_tokens < 0:
            raise ConfigurationError(
                f"worst_case: token counts must be >= 0, got {input_tokens}, {output_tokens}"
            )
        starts = self._starts
        any_in, out_rate, base, five_minutes, one_hour = self._worst[
            bisect_left(starts, input_tokens) if starts else 0
        ]
        total = output_tokens * out_rate + self.request_rate
        if audio and self._audio_in > any_in:
            total += input_tokens * self._audio_in
        elif cache_write_tokens is None:
            total += input_tokens * any_in
        else:
            if not 0 <= cache_write_1h_tokens <= cache_write_tokens <= input_tokens:
                raise ConfigurationError(
                    "worst_case: need 0 <= cache_write_1h_tokens <= cache_write_tokens <= "
                    f"input_tokens, got {cache_write_1h_tokens}, {cache_write_tokens}, "
                    f"{input_tokens}"
                )
            total += (
                (input_tokens - cache_write_tokens) * base
                + (cache_write_tokens - cache_write_1h_tokens) * five_minutes
                + cache_write_1h_tokens * one_hour
            )
        return -(-total // PER_MILLION)

    def search_fees(self, searches: int) -> int:
        """nano-USD the model's web-search fee charges for ``searches`` searches (genai-
        prices prices them per thousand; 0 where it has no such fee), rounded up."""
        for key, rate in self.detail_rates:
            if key == "web_searches" and searches:
                per_thousand = (
                    rate
                    if isinstance(rate, int)
                    else max([rate.base, *(tier for _, tier in rate.tiers)])
                )
                return -(-searches * per_thousand // 1000)
        return 0

    def tier_for(self, input_tokens: int) -> int | None:
        """The input-token count above which the rates for ``input_tokens`` apply
        (None: the base rates, below every tier)."""
        starts = self._starts
        band = bisect_left(starts, input_tokens) if starts else 0
        return starts[band - 1] if band else None

    def output_fitting(
        self,
        budget: int,
        input_tokens: int,
        *,
        cache_write_tokens: int | None = None,
        cache_write_1h_tokens: int = 0,
        choices: int = 1,
    ) -> int:
        """The most output tokens (per choice) whose worst case, with this input, stays
        within ``budget`` nano-USD; 0 when not even the input fits."""

        def cost(output_tokens: int) -> int:
            return self.worst_case(
                input_tokens,
                output_tokens * choices,
                cache_write_tokens=cache_write_tokens,
                cache_write_1h_tokens=cache_write_1h_tokens,
            )

        if cost(0) > budget:
            return 0
        low, high = 0, self.max_output_tokens or self.context_window or 1_000_000
        if cost(high) <= budget:
            return high
        while low < high:  # the largest n with cost(n) <= budget
            middle = (low + high + 1) // 2
            if cost(middle) <= budget:
                low = middle
            else:
                high = middle - 1
        return low


def nanos_per_million(usd: Decimal, scale: int = 1) -> int:
    """USD per million units -> nano-USD per million units; extra decimals round the rate up."""
    return int((usd * NANOS_PER_USD * scale).to_integral_value(ROUND_CEILING))
