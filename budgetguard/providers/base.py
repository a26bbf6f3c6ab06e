"""What a provider adapter is: the pure knowledge of one wire format.

An adapter knows, for one API shape (OpenAI chat completions, OpenAI
Responses, Anthropic messages, ...):

- which SDK methods carry it (``surfaces``: a path of resource attributes
  from the client, a method name, and whether the method streams);
- how a call's keyword arguments become an ``LLMRequest`` (``request``);
- how to tell its responses apart from other shapes (``recognizes``), which
  model a response reports (``model``), and what it billed: a ``Usage`` with
  its details and price variant (``usage``);
- how to follow one of its streams (``tracker``).

Adapters do no I/O and know nothing of budgets; ``instrument`` puts the
engine around the methods they name. Adding a provider is one module that
defines an adapter, plus one line in ``registry.ADAPTERS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .._core.records import LLMRequest
from .._core.usage import Usage
from .tracking import StreamTracker

__all__ = ["Adapter", "Surface"]

SurfaceKind = Literal["call", "stream", "stream_manager"]


@dataclass(frozen=True, slots=True)
class Surface:
    """One SDK method to guard: ``client.<path...>.<method>``.

    ``kind="call"``: a call, returning a stream when called with ``stream=True``
    and ``streams`` is set. ``"stream"``: the method always returns a stream
    (Gemini's ``generate_content_stream``). ``"stream_manager"``: it returns a
    context manager whose ``__enter__`` opens the stream (Anthropic's
    ``messages.stream``). ``fallback``: the method to guard instead when
    ``method`` does not exist on this SDK version.
    """

    path: tuple[str, ...]
    method: str
    streams: bool = True
    kind: SurfaceKind = "call"
    fallback: str | None = None


class Adapter(Protocol):
    """The pure part of one provider wire format (see the module docstring)."""

    @property
    def name(self) -> str:
        """Shown in logs and errors, e.g. ``"chat.completions"``."""
        ...

    @property
    def sdk(self) -> str:
        """Root module of the SDK whose clients carry it (``"openai"``)."""
        ...

    @property
    def surfaces(self) -> tuple[Surface, ...]: ...

    @property
    def stream_usage_option(self) -> bool:
        """Chat-completions style: the request must ask for the final usage chunk."""
        ...

    def request(self, kwargs: dict[str, Any]) -> LLMRequest:
        """The call's request, as the keyword arguments say (raises naming a bad one)."""
        ...

    def cap_output(self, kwargs: dict[str, Any], tokens: int, model: str) -> None:
        """Send ``tokens`` as the call's output cap, in the SDK's own field (the policy's
        ``max_output_tokens``, or a cap lowered to fit the budget). ``model``: the model
        it is priced as (a deployment's), for fields that depend on it."""
        ...

    def recognizes(self, response: object) -> bool:
        """``response`` is one of this wire format's (it carries a usage block)."""
        ...

    def model(self, response: object) -> str | None:
        """The model ``response`` says it came from, if any."""
        ...

    def usage(self, response: object) -> Usage:
        """What ``response`` billed (``UsageError`` naming the field when unreadable)."""
        ...

    def tracker(self) -> StreamTracker: ...
