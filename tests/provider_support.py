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


def user() -> Any:
    return bg.status("user", "u1", tenant=None)


def genai_cost(
    model: str,
    usage: bg.Usage,
    *,
    provider: str | None = None,
    context: Mapping[str, str] | None = None,
) -> int:
    """genai-prices' price of budgetguard's ``usage``, every key given explicitly, in nano-USD
    rounded up (what budgetguard must charge, to the nano-dollar)."""
    details = usage.details
    keys: dict[str, int] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cache_write_1h_tokens": usage.cache_write_1h_tokens,
        "output_reasoning_tokens": usage.reasoning_tokens,
    }
    if details is not None:
        keys.update(
            {
                name: getattr(details, name)
                for name in details.__dataclass_fields__  # type: ignore[attr-defined]
            }
        )
    price = genai_prices.calc_price(
        genai_prices.Usage(**keys),
        model,
        provider_id=provider,
        price_context=dict(context or dict(usage.context)) or None,
    )
    return usd_to_nanos(price.total_price)
