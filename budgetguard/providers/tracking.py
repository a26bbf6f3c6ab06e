"""Following a stream: the provider-independent part of every stream tracker.

A tracker is fed one event at a time. Besides the final usage it keeps the
text seen so far, so a stream that is abandoned or cut before its usage
arrives can still be charged what it consumed.
"""

from __future__ import annotations

from .._core.usage import Usage
from ..pricing.tokens import count_text_tokens

__all__ = ["StreamTracker", "estimate_output_tokens"]


def estimate_output_tokens(model: str | None, text: str) -> int:
    """Tokens of ``text``, erring high: the tokenizer when it knows ``model``, else utf-8 bytes.

    One token is at least one byte, so the byte count is a safe upper bound.
    """
    if not text:
        return 0
    if model is not None:
        try:
            counted = count_text_tokens(model, text)
            if isinstance(counted, int) and counted >= 0:
                return counted
        except Exception:  # a missing encoding falls back to the byte bound
            pass
    return len(text.encode("utf-8"))


class StreamTracker:
    """Shared state of the trackers: model, final usage, and what was seen so far.

    ``usage`` is the provider's final report, ``None`` until it arrives.
    ``input_tokens`` is the input the provider reported before the end (only
    Anthropic does so), ``reported_output_tokens`` the running output count
    it reported, if any. ``consumed(input_estimate)`` is what to charge a
    stream that ended without its final usage.
    """

    def __init__(self) -> None:
        self.model: str | None = None
        self.usage: Usage | None = None
        self.input_usage: Usage | None = None
        self.reported_output_tokens = 0
        self.events = 0
        self._parts: list[str] = []
        self._chars = 0

    def feed(self, event: object) -> None:
        self.events += 1
        self._feed(event)

    def _feed(self, event: object) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _text(self, value: object) -> None:
        if isinstance(value, str) and value:
            self._parts.append(value)
            self._chars += len(value)

    @property
    def output_text(self) -> str:
        """All output text seen so far (content, reasoning, tool arguments)."""
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    @property
    def output_text_chars(self) -> int:
        return self._chars

    @property
    def done(self) -> bool:
        return self.usage is not None

    def consumed(self, input_estimate: int) -> Usage:
        """Usage of a stream that stopped early: reported or estimated input, output so far.

        Output is the larger of what the provider reported and what the text
        seen so far counts as, so billed tokens are never charged as zero.
        """
        if self.usage is not None:
            return self.usage
        seen = estimate_output_tokens(self.model, self.output_text)
        output = max(self.reported_output_tokens, seen)
        if self.input_usage is not None:
            base = self.input_usage
            return Usage(
                input_tokens=base.input_tokens,
                output_tokens=max(output, base.output_tokens),
                cache_read_tokens=base.cache_read_tokens,
                cache_write_tokens=base.cache_write_tokens,
                cache_write_1h_tokens=base.cache_write_1h_tokens,
            )
        return Usage(input_tokens=max(0, input_estimate), output_tokens=output)
