"""Pricing a usage with details (audio, image, video tokens, web searches), as genai-prices does.

genai-prices prices a usage by *units*, each a set of dimensions
(``input_tokens``: tokens, input; ``cache_audio_read_tokens``: tokens, input,
audio, cache read; ...). A unit with a price is charged its *leaf* count: its
own count less the leaves of the priced units below it (whose dimensions
include its own), most specific first. So 1,000 input tokens of which 400
audio, with 300 cache reads of which 100 audio, on a model that prices all
four, are 100 audio cache reads, 300 audio, 200 text cache reads and 400
text input tokens. This module applies that rule with integers, to the units
``Usage`` and ``UsageDetails`` carry; it runs only for a usage with details
(a plain text usage takes ``ModelRates``' faster path, which agrees with it).
"""

from __future__ import annotations

from collections.abc import Mapping

from .._core.errors import UsageError
from .._core.usage import Usage, UsageDetails
from .tiers import Rate, rate_at

__all__ = ["CORE_KEYS", "DETAIL_KEYS", "Leaves", "leaves_for"]

CORE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_reasoning_tokens",
    "cache_write_1h_tokens",
)
"""genai-prices' usage keys of ``Usage``'s fields, in ``ModelRates``' rate order."""

DETAIL_KEYS = tuple(name for name in UsageDetails.__dataclass_fields__ if name != "context")
"""genai-prices' usage keys of ``UsageDetails``' fields (the same names)."""

_CORE_FIELDS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "cache_write_tokens": "cache_write_tokens",
    "output_reasoning_tokens": "reasoning_tokens",
    "cache_write_1h_tokens": "cache_write_1h_tokens",
}

Leaves = tuple[tuple[str, Rate, int, tuple[int, ...]], ...]
"""Priced units, most specific first: (usage key, rate per million units scaled to
tokens, scale, indices of the priced units below it)."""


def _dimensions() -> Mapping[str, frozenset[tuple[str, str]]]:
    from genai_prices.data_units import unit_data

    return {
        key: frozenset(unit["dimensions"].items())
        for key, unit in unit_data.items()
        if key in _CORE_FIELDS or key in DETAIL_KEYS
    }


_DIMENSIONS: Mapping[str, frozenset[tuple[str, str]]] | None = None


def leaves_for(priced: Mapping[str, Rate]) -> Leaves:
    """The leaf structure of a model's priced units (usage key -> rate)."""
    global _DIMENSIONS
    if _DIMENSIONS is None:
        _DIMENSIONS = _dimensions()
    dims = _DIMENSIONS
    keys = sorted((key for key in priced if key in dims), key=lambda k: (-len(dims[k]), k))
    leaves: list[tuple[str, Rate, int, tuple[int, ...]]] = []
    for n, key in enumerate(keys):
        below = tuple(m for m, other in enumerate(keys[:n]) if dims[key] < dims[other])
        # Web searches are priced per thousand: scale them to the per-million rates.
        scale = 1000 if key == "web_searches" else 1
        leaves.append((key, priced[key], scale, below))
    return tuple(leaves)


def _count(usage: Usage, details: UsageDetails, key: str) -> int:
    field = _CORE_FIELDS.get(key)
    return int(getattr(usage if field is not None else details, field or key))


def detailed_total(leaves: Leaves, usage: Usage, request_rate: int) -> int:
    """nano-USD x 1e6 that ``usage`` costs (the caller rounds up once)."""
    details = usage.details or UsageDetails()
    n = usage.input_tokens
    counts: list[int] = []
    total = request_rate
    for key, rate, scale, below in leaves:
        leaf = _count(usage, details, key) - sum(counts[m] for m in below)
        if leaf < 0:
            raise UsageError(
                f"usage: the parts of {key} add up to more than it ({_count(usage, details, key)})"
            )
        counts.append(leaf)
        total += leaf * rate_at(rate, n) * scale
    return total
