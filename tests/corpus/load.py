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

__all__ = ["FAMILIES", "HERE", "interactions"]

HERE = Path(__file__).resolve().parent
FAMILIES = ("openai_chat", "openai_responses", "anthropic", "gemini", "compat")
_PREFIX = "@blob:sha256:"


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
