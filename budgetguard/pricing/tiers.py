"""Rates as integers: flat, or tiered by a call's total input tokens (cliff pricing)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Rate", "TieredRate", "rate_at"]


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


def rate_at(rate: Rate, input_tokens: int) -> int:
    """The flat rate in force for a call with ``input_tokens`` input tokens."""
    return rate if isinstance(rate, int) else rate.at(input_tokens)
