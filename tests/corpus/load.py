"""Recorded LLM API interactions (request body + billed usage), read from this folder.

    sys.path.insert(0, "tests/corpus")  # or load this file with importlib
    from load import interactions
    for item in interactions("anthropic"):
        item["request"], item["billed_input_tokens"]

Each ``<family>.jsonl.gz`` holds one interaction a line (see SOURCES.md). Strings
of 32 KiB or more in a request (base64 media) are stored once, in
``media.jsonl.gz``, and referenced as ``"@blob:sha256:<hex>"``: ``interactions``
puts them back, so every request is the body as it was sent.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["FAMILIES", "HERE", "SET_ASIDE", "interactions"]

HERE = Path(__file__).resolve().parent
FAMILIES = ("openai_chat", "openai_responses", "anthropic", "gemini", "compat")
_PREFIX = "@blob:sha256:"

SET_ASIDE: dict[str, str] = {
    "an-940d0fdae3": "usage written by hand (a test of token counting): 100 input tokens for "
    "'Hello!', cache reads and writes of 2 and 5 tokens, below Anthropic's 1,024-token "
    "cache minimum",
    "an-875d420b49": "usage written by hand (the same test in another project): cache reads "
    "and writes of 2 and 1 tokens",
    "or-eb7ca22728": "gpt-4o billed 42 for a question and instructions that or-fb2ce8d5e5 "
    "(same model, same shape) billed 23; every other of 78 gpt-4o text calls bills within "
    "2 of the count",
    "or-daa16ae0d4": "gpt-4o billed 1,349 (1,024 cached) for an image that oc-ca6d0c6098 "
    "billed exactly as counted (1,119) on the same model",
    "or-f9f8c73d16": "o3-mini billed 88 for a 30-token prompt; its other recorded calls, "
    "with and without reasoning settings, bill within 3 of the count",
    "oc-a402cc2dc5": "billed 6.6 % above the exact o200k count of the recorded body (the "
    "other requests of the same cassette count within 150 tokens of their bills): the body "
    "stored is not the body billed",
}
"""Recordings whose bill contradicts the request stored with it, with why: the benchmark
lists them apart, with their figures, and the replay tests do not use them."""


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                item: dict[str, Any] = json.loads(line)
                yield item


@lru_cache(maxsize=1)
def _media() -> dict[str, str]:
    path = HERE / "media.jsonl.gz"
    if not path.exists():
        return {}
    return {str(row["sha256"]): str(row["text"]) for row in _lines(path)}


def _expand(value: Any) -> Any:
    if isinstance(value, str):
        if value.startswith(_PREFIX):
            return _media()[value[len(_PREFIX) :]]
        return value
    if isinstance(value, dict):
        return {key: _expand(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item) for item in value]
    return value


def interactions(family: str | None = None) -> Iterator[dict[str, Any]]:
    """Every recorded interaction of ``family`` (all families when None), in file order."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    for name in FAMILIES if family is None else (family,):
        path = HERE / f"{name}.jsonl.gz"
        if not path.exists():
            continue
        for item in _lines(path):
            item["request"] = _expand(item["request"])
            yield item
