"""Money: integer nano-USD inside, ``Decimal`` at the edges.

Budgets are compared and added millions of times, across processes, in Redis
integers. Floats drift (0.1 + 0.2 != 0.3) and drift is money, so every amount
is an ``int`` count of nano-USD (1e-9 USD). Users hand us ``Decimal``, ``int``,
``str`` or, for convenience in policy literals, ``float`` - a float is read
through its shortest ``repr`` (``0.1`` means exactly ``Decimal("0.1")``), never
through its binary value.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import SupportsIndex

from .errors import ConfigurationError

NANOS_PER_USD = 1_000_000_000
_NANO = Decimal(1) / NANOS_PER_USD
_ONE = Decimal(1)

MAX_NANOS = 2**53 - 1
"""The largest amount any store holds: about $9,007,199. Redis Lua compares money as
doubles, exact up to here; every store refuses more, before doing anything."""

UsdLike = Decimal | int | float | str


def to_decimal(value: UsdLike, *, field: str = "usd") -> Decimal:
    """Read a user-supplied USD amount exactly, naming ``field`` when it is not a number."""
    if isinstance(value, bool):
        raise TypeError(f"{field}: expected a USD amount, got a bool ({value!r})")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip().lstrip("$"))
        except InvalidOperation:
            raise ConfigurationError(f"{field}: {value!r} is not a USD amount") from None
    else:
        raise TypeError(f"{field}: expected a USD amount, got {type(value).__name__}")
    if not amount.is_finite():
        raise ConfigurationError(f"{field}: {value!r} is not a finite USD amount")
    return amount


def usd_to_nanos(value: UsdLike, *, field: str = "usd") -> int:
    """USD -> nano-USD, rounding sub-nano fractions up (a budget never under-counts a cost)."""
    return int((to_decimal(value, field=field) * NANOS_PER_USD).to_integral_value(ROUND_CEILING))


def check_nanos(value: object, *, field: str, unit: str = "nano-USD") -> int:
    """``value`` as an amount a store can hold: an int in [0, MAX_NANOS], else a
    ConfigurationError naming ``field`` (``unit``: what it counts, for the message)."""
    if type(value) is int and 0 <= value <= MAX_NANOS:  # the common case, checked fast
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigurationError(f"{field}: expected an int of {unit}, got {value!r}")
    if value < 0:
        raise ConfigurationError(f"{field}: must be >= 0 {unit}, got {value}")
    largest = f", about ${MAX_NANOS // NANOS_PER_USD:,}" if unit == "nano-USD" else ""
    raise ConfigurationError(
        f"{field}: {value} {unit} is above the largest amount a store holds ({MAX_NANOS}{largest})"
    )


def nanos_to_usd(nanos: int) -> Decimal:
    """nano-USD -> exact ``Decimal`` USD, without trailing zeros: ``Decimal("10")`` for
    $10, never ``normalize()``'s ``Decimal("1E+1")``, so ``f"${amount}"`` reads right."""
    if not nanos:
        return Decimal(0)
    amount = (Decimal(nanos) * _NANO).normalize()
    return amount.quantize(_ONE) if amount == amount.to_integral_value() else amount


@dataclass(frozen=True, slots=True, order=True)
class Money:
    """An exact amount of US dollars, stored as integer nano-USD.

    ``Money.usd("0.50")`` builds one from dollars; ``.usd_amount`` gives the
    ``Decimal`` back; arithmetic and comparisons stay in integers.
    """

    nanos: int

    def __post_init__(self) -> None:
        if not isinstance(self.nanos, int) or isinstance(self.nanos, bool):
            raise TypeError(f"Money.nanos must be an int, got {type(self.nanos).__name__}")

    @classmethod
    def usd(cls, value: UsdLike) -> Money:
        return cls(usd_to_nanos(value))

    @classmethod
    def zero(cls) -> Money:
        return _ZERO

    @property
    def usd_amount(self) -> Decimal:
        return nanos_to_usd(self.nanos)

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        return Money(self.nanos + other.nanos)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        return Money(self.nanos - other.nanos)

    def __mul__(self, factor: SupportsIndex) -> Money:
        return Money(self.nanos * factor.__index__())

    __rmul__ = __mul__

    def __neg__(self) -> Money:
        return Money(-self.nanos)

    def __bool__(self) -> bool:
        return self.nanos != 0

    def __str__(self) -> str:
        return format_usd(self.nanos)

    def __repr__(self) -> str:
        return f"Money('{self.usd_amount}')"


_ZERO = Money(0)


def format_usd(nanos: int) -> str:
    """Readable dollars: ``$0.50``, ``$0.000125``; exact, never rounded away."""
    amount = nanos_to_usd(nanos)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    text = f"{amount:.2f}" if amount == amount.quantize(Decimal("0.01")) else f"{amount:f}"
    return f"{sign}${text}"
