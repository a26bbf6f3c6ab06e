from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetguard import Money
from budgetguard._core.money import format_usd, nanos_to_usd, usd_to_nanos


def test_float_literals_are_read_through_their_repr_not_their_binary_value() -> None:
    assert usd_to_nanos(0.1) == 100_000_000
    assert usd_to_nanos(0.1) + usd_to_nanos(0.2) == usd_to_nanos("0.3")


def test_sub_nano_fractions_round_up_so_costs_are_never_undercounted() -> None:
    assert usd_to_nanos(Decimal("0.0000000001")) == 1
    assert usd_to_nanos(Decimal("-0.0000000001")) == 0


@pytest.mark.parametrize("bad", ["abc", "nan", "inf", True, None, [1]])
def test_bad_amounts_name_the_field(bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match="limit_usd"):
        usd_to_nanos(bad, field="limit_usd")  # type: ignore[arg-type]


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_nanos_round_trip_through_decimal_exactly(nanos: int) -> None:
    assert usd_to_nanos(nanos_to_usd(nanos)) == nanos


@given(st.lists(st.integers(min_value=0, max_value=10**12), max_size=50))
def test_money_sums_are_exact(parts: list[int]) -> None:
    total = sum((Money(p) for p in parts), Money.zero())
    assert total.usd_amount == sum((nanos_to_usd(p) for p in parts), Decimal(0))


def test_money_reads_and_prints_dollars() -> None:
    assert Money.usd("0.50") == Money(500_000_000)
    assert str(Money.usd("0.5")) == "$0.50"
    assert str(Money(125_000)) == "$0.000125"
    assert format_usd(-1_500_000_000) == "-$1.50"
    assert Money.usd(1) - Money.usd("0.25") == Money.usd("0.75")
    with pytest.raises(TypeError):
        Money(1.5)  # type: ignore[arg-type]


def test_a_bad_amount_is_a_configuration_error_naming_the_field() -> None:
    import budgetguard as bg

    for bad in ("abc", "NaN", "Infinity"):
        with pytest.raises(bg.ConfigurationError, match=r"^usd: "):
            bg.spend_limit(usd=bad)


def test_whole_dollar_amounts_print_without_an_exponent() -> None:
    # normalize() alone turned $10 into Decimal("1E+1"), printed "$1E+1" in user code.
    assert str(nanos_to_usd(10 * 10**9)) == "10"
    assert str(nanos_to_usd(1_200 * 10**9)) == "1200"
    assert str(nanos_to_usd(2_500_000_000)) == "2.5"
    assert str(nanos_to_usd(50_000_000)) == "0.05"
