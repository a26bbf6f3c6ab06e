"""Helpers for testing code that uses budgetguard, without network or API keys.

- ``FakeProvider``: a small local HTTP server speaking the OpenAI (chat
  completions, Responses) and Anthropic (messages) APIs, streaming included;
  point the real SDK clients at it with ``base_url``.
- ``FakeChatModel``: a guarded chat model that needs no SDK and no server.
"""

from __future__ import annotations

from .fake_model import FakeChatModel
from .fake_provider import FakeProvider, RecordedRequest, Reply

__all__ = ["FakeChatModel", "FakeProvider", "RecordedRequest", "Reply"]
