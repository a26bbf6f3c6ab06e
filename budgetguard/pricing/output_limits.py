"""The largest output each model family accepts: the worst case of a call with no cap.

genai-prices carries no output limits, so they are kept here from the
providers' documentation. Keys match a canonical model id exactly, or as a
prefix followed by ``-`` and a non-digit or a date: ``gpt-4o`` covers
``gpt-4o-2024-08-06`` and ``gpt-4o-mini`` but ``claude-opus-4`` would not
cover ``claude-opus-4-5``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["DEFAULT_MAX_OUTPUT_TOKENS", "MAX_OUTPUT_TOKENS", "table_max_output"]

DEFAULT_MAX_OUTPUT_TOKENS = 32_768
"""Worst-case output when neither the table, an override nor the context window knows it."""

MAX_OUTPUT_TOKENS: Mapping[str, int] = MappingProxyType(
    {
        "gpt-3.5-turbo": 4_096,
        "gpt-4": 8_192,
        "gpt-4-turbo": 4_096,
        "gpt-4o": 16_384,
        "gpt-4o-mini": 16_384,
        "chatgpt-4o-latest": 16_384,
        "gpt-4.1": 32_768,
        "gpt-4.1-mini": 32_768,
        "gpt-4.1-nano": 32_768,
        "gpt-4.5-preview": 16_384,
        "o1": 100_000,
        "o1-mini": 65_536,
        "o1-preview": 32_768,
        "o1-pro": 100_000,
        "o3": 100_000,
        "o3-mini": 100_000,
        "o3-pro": 100_000,
        "o4-mini": 100_000,
        "gpt-5": 128_000,
        "gpt-5-mini": 128_000,
        "gpt-5-nano": 128_000,
        "claude-3-haiku": 4_096,
        "claude-3-opus": 4_096,
        "claude-3-sonnet": 4_096,
        "claude-3-5-haiku": 8_192,
        "claude-3-5-sonnet": 8_192,
        "claude-3-7-sonnet": 128_000,  # 64k, or 128k with the output-128k beta header
        "claude-sonnet-4": 64_000,
        "claude-sonnet-4-0": 64_000,
        "claude-opus-4": 32_000,
        "claude-opus-4-0": 32_000,
        "claude-opus-4-1": 32_000,
        "claude-sonnet-4-5": 64_000,
        "claude-haiku-4-5": 64_000,
        "claude-opus-4-5": 64_000,
        "gemini-1.5-flash": 8_192,
        "gemini-1.5-pro": 8_192,
        "gemini-2.0-flash": 8_192,
        "gemini-2.0-flash-lite": 8_192,
        "gemini-2.5-flash": 65_536,
        "gemini-2.5-flash-lite": 65_536,
        "gemini-2.5-pro": 65_536,
    }
)
_SUFFIX_OK = re.compile(r"(?:\d{4}-\d{2}-\d{2}|\d{8})(?:-|$)|\D")


def table_max_output(model: str) -> int | None:
    name = model.lower().rsplit("/", 1)[-1]
    best: tuple[int, int] | None = None
    for key, limit in MAX_OUTPUT_TOKENS.items():
        if name == key:
            return limit
        if (
            name.startswith(key + "-")
            and _SUFFIX_OK.match(name, len(key) + 1)
            and (best is None or len(key) > best[0])
        ):
            best = (len(key), limit)
    return best[1] if best else None
