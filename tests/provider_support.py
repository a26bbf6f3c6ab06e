"""What the OpenAI and Anthropic instrument() tests share: policy, prices, status."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import genai_prices

import budgetguard as bg
from budgetguard._core.money import nanos_to_usd, usd_to_nanos


def configure_user_limit(
    downgrade: Mapping[str, str],
    usd: float | str = 10,
    on_exceed: str = "raise",
    **extra: Any,
) -> None:
    """A per-user day limit (plus any ``limits=``), with the provider's downgrade chain."""
    limits = [bg.Limit(scope="user", usd=usd, window="day"), *extra.pop("limits", [])]
    bg.configure(policy=bg.Policy(limits=limits, on_exceed=on_exceed, downgrade=downgrade, **extra))


def genai_price(provider: str, model: str, **usage: int) -> Decimal:
    """genai-prices' own answer, to the nano-USD (rounded up, as budgetguard charges)."""
    total = genai_prices.calc_price(
        genai_prices.Usage(**usage), model, provider_id=provider
    ).total_price
    return nanos_to_usd(usd_to_nanos(total))


def close_to(actual: Decimal, expected: Decimal) -> bool:
    return abs(actual - expected) <= Decimal("0.000000002")


def user() -> Any:
    return bg.status("user", "u1", tenant=None)
