"""What the fake provider answers (``Reply``) and what it received (``RecordedRequest``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Json", "RecordedRequest", "Reply"]

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server answers to one request.

    ``model=None`` echoes the requested model. ``status`` other than 200 sends
    the provider's error body. ``cut_after=n`` makes a stream drop the
    connection after ``n`` text deltas (before any usage). ``include_usage``
    False leaves usage out of the response entirely; ``raw_usage`` replaces the
    final usage block with the JSON given.
    """

    text: str = "Hello from the fake provider."
    model: str | None = None
    input_tokens: int = 20
    output_tokens: int = 10
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0  # Anthropic: the part of the writes cached for an hour
    input_audio_tokens: int = 0  # parts of input_tokens / cache reads / output by modality
    input_image_tokens: int = 0
    cache_audio_read_tokens: int = 0
    output_audio_tokens: int = 0
    tool_use_prompt_tokens: int = 0  # Gemini: the part of input_tokens its tools added
    web_searches: int = 0
    service_tier: str | None = None  # reported back (None: the one requested, if any)
    tool_call: str | None = None  # Gemini: answer with a call of this function, not text
    status: int = 200
    error_message: str = "the fake provider was told to fail"
    cut_after: int | None = None
    include_usage: bool = True
    raw_usage: Json | None = None
    """Sent as the final usage block exactly as given (a malformed one, for tests)."""
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Json = field(default_factory=dict)
