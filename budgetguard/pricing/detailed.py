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

Leaves = tuple[tuple[str, bool, str, Rate, int, tuple[int, ...]], ...]
"""Priced units, most specific first: (usage key, read from ``details``?, attribute name,
rate per million units, scale to tokens, indices of the priced units below it)."""


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
    leaves: list[tuple[str, bool, str, Rate, int, tuple[int, ...]]] = []
    for n, key in enumerate(keys):
        below = tuple(m for m, other in enumerate(keys[:n]) if dims[key] < dims[other])
        # Web searches are priced per thousand: scale them to the per-million rates.
        scale = 1000 if key == "web_searches" else 1
        core = _CORE_FIELDS.get(key)
        leaves.append((key, core is None, core or key, priced[key], scale, below))
    return tuple(leaves)


_NO_DETAILS = UsageDetails()


def detailed_total(leaves: Leaves, usage: Usage, request_rate: int) -> int:
    """nano-USD x 1e6 that ``usage`` costs (the caller rounds up once)."""
    details = usage.details or _NO_DETAILS
    n = usage.input_tokens
    counts: list[int] = []
    total = request_rate
    for key, on_details, attribute, rate, scale, below in leaves:
        value: int = getattr(details if on_details else usage, attribute)
        leaf = value
        for m in below:
            leaf -= counts[m]
        if leaf < 0:
            raise UsageError(f"usage: the parts of {key} add up to more than it ({value})")
        counts.append(leaf)
        total += leaf * (rate if type(rate) is int else rate_at(rate, n)) * scale
    return total
