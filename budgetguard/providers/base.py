"""What a provider adapter is: the pure knowledge of one wire format.

An adapter knows, for one API shape (OpenAI chat completions, OpenAI
Responses, Anthropic messages, ...):

- which SDK methods carry it (``surfaces``: a path of resource attributes
  from the client, a method name, and whether the method streams);
- how a call's keyword arguments become an ``LLMRequest`` (``request``);
- how a response's usage becomes a ``Usage`` (``usage``), and how to tell
  its responses apart from other shapes (``recognizes``);
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

SurfaceKind = Literal["call", "stream_manager"]


@dataclass(frozen=True, slots=True)
class Surface:
    """One SDK method to guard: ``client.<path...>.<method>``.

    ``streams``: the method returns a stream when called with ``stream=True``.
    ``kind="stream_manager"``: the method returns a context manager whose
    ``__enter__`` opens the stream (Anthropic's ``messages.stream``).
    """

    path: tuple[str, ...]
    method: str
    streams: bool = True
    kind: SurfaceKind = "call"


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

    def request(self, kwargs: dict[str, Any]) -> LLMRequest: ...

    def recognizes(self, response: object, usage: object) -> bool: ...

    def usage(self, usage: object, path: str = "response.usage") -> Usage: ...

    def tracker(self) -> StreamTracker: ...
