"""Token usage of one LLM call, as a small value object.

Counting follows genai-prices (and the providers' billing): ``input_tokens``
is *all* input, including tokens read from or written to a prompt cache;
``output_tokens`` is all output, including reasoning tokens. The more
specific counts say which part of the total gets a different rate;
``cache_write_1h_tokens`` is the part of ``cache_write_tokens`` written with
Anthropic's one-hour cache lifetime (dearer than the default five minutes).

Rarer parts of a bill - audio, image and video tokens, web searches - live
in ``details`` (``UsageDetails``), None for a plain text call, so the common
case stays small and fast. ``context`` carries what changes the rates
rather than the counts: the service tier the provider billed at
(``(("service_tier", "flex"),)``), Anthropic's fast mode, batch processing -
genai-prices' price context.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from .errors import UsageError

__all__ = ["PriceContext", "Usage", "UsageDetails"]

PriceContext = tuple[tuple[str, str], ...]
"""What selects a price variant, as sorted (key, value) pairs: ``(("service_tier", "flex"),)``."""


def _check_ints(value: object, prefix: str) -> None:
    for f in fields(value):  # type: ignore[arg-type]
        count = getattr(value, f.name)
        if f.name == "context":
            continue
        if not isinstance(count, int) or isinstance(count, bool):
            raise UsageError(f"{prefix}{f.name}: expected an int, got {count!r}")
        if count < 0:
            raise UsageError(f"{prefix}{f.name}: must be >= 0, got {count}")


def _at_most(part: int, part_name: str, whole: int, whole_name: str) -> None:
    if part > whole:
        raise UsageError(f"usage.{part_name} ({part}) exceeds usage.{whole_name} ({whole})")


@dataclass(frozen=True, slots=True)
class UsageDetails:
    """The parts of a usage with their own rates on some models: by modality (each a part
    of ``input_tokens``, ``cache_read_tokens`` or ``output_tokens``) and web searches."""

    input_audio_tokens: int = 0
    input_image_tokens: int = 0
    input_video_tokens: int = 0
    cache_audio_read_tokens: int = 0
    cache_image_read_tokens: int = 0
    cache_video_read_tokens: int = 0
    output_audio_tokens: int = 0
    output_image_tokens: int = 0
    web_searches: int = 0

    def __post_init__(self) -> None:
        _check_ints(self, "usage.details.")
        _at_most(
            self.cache_audio_read_tokens,
            "cache_audio_read_tokens",
            self.input_audio_tokens,
            "input_audio_tokens",
        )
        _at_most(
            self.cache_image_read_tokens,
            "cache_image_read_tokens",
            self.input_image_tokens,
            "input_image_tokens",
        )
        _at_most(
            self.cache_video_read_tokens,
            "cache_video_read_tokens",
            self.input_video_tokens,
            "input_video_tokens",
        )

    def __add__(self, other: UsageDetails) -> UsageDetails:
        if not isinstance(other, UsageDetails):
            return NotImplemented
        return UsageDetails(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    @property
    def media_input(self) -> int:
        return self.input_audio_tokens + self.input_image_tokens + self.input_video_tokens

    @property
    def media_cache_read(self) -> int:
        return (
            self.cache_audio_read_tokens
            + self.cache_image_read_tokens
            + self.cache_video_read_tokens
        )

    @property
    def media_output(self) -> int:
        return self.output_audio_tokens + self.output_image_tokens


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0
    details: UsageDetails | None = None
    context: PriceContext = ()

    def __post_init__(self) -> None:
        i, o = self.input_tokens, self.output_tokens
        r, w, x = self.cache_read_tokens, self.cache_write_tokens, self.reasoning_tokens
        h = self.cache_write_1h_tokens
        # Settling builds one Usage per call: the common all-valid case in one expression.
        if not (
            type(i) is type(o) is type(r) is type(w) is type(x) is type(h) is int
            and min(i, o, r, w, x, h) >= 0
        ):
            for f in fields(self):
                if f.name in ("details", "context"):
                    continue
                value = getattr(self, f.name)
                if not isinstance(value, int) or isinstance(value, bool):
                    raise UsageError(f"usage.{f.name}: expected an int, got {value!r}")
                if value < 0:
                    raise UsageError(f"usage.{f.name}: must be >= 0, got {value}")
        self._check_sums()
        if self.details is not None:
            self._check_details(self.details)

    def _check_sums(self) -> None:
        cached = self.cache_read_tokens + self.cache_write_tokens
        if cached > self.input_tokens:
            raise UsageError(
                f"usage.cache_read_tokens + cache_write_tokens ({cached}) "
                f"exceeds usage.input_tokens ({self.input_tokens})"
            )
        _at_most(
            self.cache_write_1h_tokens,
            "cache_write_1h_tokens",
            self.cache_write_tokens,
            "cache_write_tokens",
        )
        _at_most(self.reasoning_tokens, "reasoning_tokens", self.output_tokens, "output_tokens")

    def _check_details(self, details: UsageDetails) -> None:
        if not isinstance(details, UsageDetails):
            raise UsageError(f"usage.details: expected UsageDetails, got {details!r}")
        _at_most(
            details.media_input,
            "details (audio + image + video input)",
            self.input_tokens,
            "input_tokens",
        )
        _at_most(
            details.media_cache_read,
            "details (audio + image + video cache reads)",
            self.cache_read_tokens,
            "cache_read_tokens",
        )
        _at_most(
            details.media_output,
            "details (audio + image output)",
            self.output_tokens,
            "output_tokens",
        )

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        details = self.details
        if other.details is not None:
            details = other.details if details is None else details + other.details
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            details=details,
            context=self.context or other.context,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
