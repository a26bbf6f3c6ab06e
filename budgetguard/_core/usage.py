"""Token usage of one LLM call, as a small value object.

Counting follows genai-prices (and the providers' billing): ``input_tokens``
is *all* input, including tokens read from or written to a prompt cache;
``output_tokens`` is all output, including reasoning tokens. The more
specific counts say which part of the total gets a different rate;
``cache_write_1h_tokens`` is the part of ``cache_write_tokens`` written with
Anthropic's one-hour cache lifetime (dearer than the default five minutes).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .errors import UsageError

__all__ = ["Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0

    def __post_init__(self) -> None:
        i, o = self.input_tokens, self.output_tokens
        r, w, x = self.cache_read_tokens, self.cache_write_tokens, self.reasoning_tokens
        h = self.cache_write_1h_tokens
        # Settling builds one Usage per call: the common all-valid case in one expression.
        if (
            type(i) is type(o) is type(r) is type(w) is type(x) is type(h) is int
            and min(i, o, r, w, x, h) >= 0
        ):
            self._check_sums()
            return
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise UsageError(f"usage.{f.name}: expected an int, got {value!r}")
            if value < 0:
                raise UsageError(f"usage.{f.name}: must be >= 0, got {value}")
        self._check_sums()

    def _check_sums(self) -> None:
        cached = self.cache_read_tokens + self.cache_write_tokens
        if cached > self.input_tokens:
            raise UsageError(
                f"usage.cache_read_tokens + cache_write_tokens ({cached}) "
                f"exceeds usage.input_tokens ({self.input_tokens})"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise UsageError(
                f"usage.cache_write_1h_tokens ({self.cache_write_1h_tokens}) "
                f"exceeds usage.cache_write_tokens ({self.cache_write_tokens})"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise UsageError(
                f"usage.reasoning_tokens ({self.reasoning_tokens}) "
                f"exceeds usage.output_tokens ({self.output_tokens})"
            )

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
