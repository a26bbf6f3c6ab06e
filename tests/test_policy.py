from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

import budgetguard as bg


def test_limits_take_dollars_exactly_and_default_their_window() -> None:
    assert bg.Limit(scope="request", usd=0.10).usd == Decimal("0.1")
    assert bg.Limit(scope="request", usd=0.10).window == "request"
    assert bg.Limit(scope="run", usd=1).window == "run"
    with pytest.warns(UserWarning, match="never resets"):
        assert bg.Limit(scope="tenant", usd=100).window == "total"
    assert bg.Limit("user", usd="5", window="day").nanos == 5_000_000_000


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"scope": "user", "usd": -1}, "usd"),
        ({"scope": "user", "usd": "five"}, "usd"),
        ({"scope": "user", "usd": 1, "window": "fortnight"}, "window"),
        ({"scope": "planet", "usd": 1}, "scope"),
        ({"scope": "run", "usd": 1, "window": "day"}, "window"),
        ({"scope": "user", "usd": 1, "window": "request"}, "window"),
        ({"scope": "global", "usd": 1, "key": "x", "window": "total"}, "key"),
        ({"scope": "user", "usd": 1, "colour": "red"}, "colour"),
    ],
)
def test_bad_limits_fail_at_construction_naming_the_field(
    fields: dict[str, object], names: str
) -> None:
    with pytest.raises(ValidationError, match=names):
        bg.Limit(**fields)  # type: ignore[arg-type]


def test_policy_errors_name_the_nested_field() -> None:
    with pytest.raises(ValidationError, match=r"limits\.1\.usd"):
        bg.Policy(
            limits=[bg.Limit(scope="user", usd=1, window="total"), {"scope": "user", "usd": -3}]
        )  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="on_exceed"):
        bg.Policy(on_exceed="panic")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="timezone"):
        bg.Policy(timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="loops"):
        bg.Policy(downgrade={"a": "b", "b": "c", "c": "a"})


def test_policies_are_frozen() -> None:
    policy = bg.Policy(limits=[bg.Limit(scope="user", usd=1, window="total")])
    with pytest.raises(ValidationError):
        policy.on_exceed = "block"  # type: ignore[misc]


def test_downgrade_chain_walks_to_the_cheapest() -> None:
    policy = bg.Policy(downgrade={"gpt-4o": "gpt-4o-mini", "gpt-4o-mini": "gpt-4.1-nano"})
    assert policy.downgrade_chain("gpt-4o") == ["gpt-4o-mini", "gpt-4.1-nano"]
    assert policy.downgrade_chain("claude-haiku-4-5") == []


def test_thresholds() -> None:
    assert bg.Threshold(0.8).fraction == Decimal("0.8")
    with pytest.raises(ValidationError, match="fraction"):
        bg.Threshold(0)


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"lease_s": float("inf")}, "lease_s"),
        ({"lease_s": 0}, "lease_s"),
        ({"lease_s": float("nan")}, "lease_s"),
        ({"block_timeout": float("inf")}, "block_timeout"),
        ({"block_timeout": -1}, "block_timeout"),
        ({"limits": [{"scope": "tenant", "usd": 1e8, "window": "day"}]}, r"limits\.0\.usd"),
    ],
)
def test_values_no_store_can_hold_fail_at_construction(
    fields: dict[str, object], name: str
) -> None:
    """``lease_s=inf`` and ``usd=1e8`` used to be accepted, then fail at call time
    (a raw OverflowError, a ConfigurationError from the store)."""
    with pytest.raises(ValidationError, match=name):
        bg.Policy(**fields)  # type: ignore[arg-type]


def test_the_largest_limit_is_exact() -> None:
    largest = bg.Limit(scope="tenant", usd="9007199.254740991", window="day")
    assert largest.nanos == 2**53 - 1
