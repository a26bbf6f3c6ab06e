"""``Price``: a price a user sets, in USD per million tokens, validated field by field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import cast

from .._core.errors import ConfigurationError
from .._core.money import UsdLike, to_decimal
from .output_limits import DEFAULT_MAX_OUTPUT_TOKENS, table_max_output
from .rates import ModelRates, nanos_per_million

__all__ = ["Price", "rates_from_price"]

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


def rates_from_price(model: str, provider: str, price: Price, source: str) -> ModelRates:
    def optional(amount: Decimal | None) -> int | None:
        return None if amount is None else nanos_per_million(amount)

    return ModelRates(
        model=model,
        provider=provider,
        input_rate=nanos_per_million(price.input),
        output_rate=nanos_per_million(price.output),
        cache_read_rate=optional(price.cache_read),
        cache_write_rate=optional(price.cache_write),
        cache_write_1h_rate=optional(price.cache_write_1h),
        reasoning_rate=optional(price.reasoning),
        max_output_tokens=(
            price.max_output_tokens
            or table_max_output(model)
            or price.context_window
            or DEFAULT_MAX_OUTPUT_TOKENS
        ),
        context_window=price.context_window,
        source=source,
    )
