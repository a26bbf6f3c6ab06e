"""A scriptable fake of the OpenAI, Anthropic and Gemini HTTP APIs, on 127.0.0.1.

The real SDK clients talk to it over HTTP (``base_url``), so tests exercise
exactly what production does: request serialization, SSE parsing, error
mapping, retries. It answers

- ``POST /v1/chat/completions`` (OpenAI chat; ``stream=True`` sends
  ``chat.completion.chunk`` events, plus a final usage chunk with no choices
  only when ``stream_options.include_usage`` is true, as the real API does),
- ``POST /v1/responses`` (OpenAI Responses; streams ``response.created``,
  ``response.output_text.delta`` ... ``response.completed``),
- ``POST /v1/embeddings`` (OpenAI embeddings),
- ``POST /v1/messages`` (Anthropic; streams ``message_start``,
  ``content_block_*``, ``message_delta``, ``message_stop``),
- ``POST /v1/models/{model}:generateContent``, ``:streamGenerateContent``
  (SSE), ``:batchEmbedContents``, ``:countTokens`` (Gemini, as google-genai
  calls it: ``genai.Client(http_options={"base_url": fake.url})``).

Each request takes the next queued ``Reply`` (else the default one) and is
recorded, so a test can assert what the server received::

    with FakeProvider() as fake:
        fake.reply(model="gpt-4o-2024-08-06", input_tokens=1200, cache_read_tokens=1024)
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="test")
        client.chat.completions.create(model="gpt-4o", messages=[...])
        assert fake.requests[-1].body["model"] == "gpt-4o"

Token counts in a ``Reply`` use budgetguard's convention (``input_tokens`` is
all input including cache reads and writes, ``output_tokens`` all output
including reasoning); the server translates them to each provider's shape
(Anthropic's ``input_tokens`` excludes the cache; Gemini's prompt count
excludes its tool-use prompt tokens).

Run it standalone with ``python -m budgetguard.testing.fake_provider --port 8765``.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import deque
from dataclasses import replace
from types import TracebackType
from typing import Any, Self

from . import anthropic_wire, gemini_wire, openai_wire
from .replies import RecordedRequest, Reply
from .server import Handler, Server

__all__ = ["FakeProvider", "RecordedRequest", "Reply", "main"]

ROUTES = (*openai_wire.ROUTES, *anthropic_wire.ROUTES, *gemini_wire.ROUTES)


class FakeProvider:
    """The server; ``start()``/``stop()`` or use it as a context manager."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, default: Reply | None = None):
        self.default = default or Reply()
        self._queue: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = Server((host, port), Handler)
        self._server.provider = self
        self._server.routes = ROUTES
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="budgetguard-fake-provider",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    # -- scripting -----------------------------------------------------------------
    def reply(self, reply: Reply | None = None, /, **fields: Any) -> Reply:
        """Queue the answer to the next request (fields override ``reply`` or the default)."""
        queued = replace(reply or self.default, **fields)
        with self._lock:
            self._queue.append(queued)
        return queued

    def next_reply(self) -> Reply:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def clear(self) -> None:
        """Forget recorded requests and queued replies."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted: ``python -m budgetguard.testing.fake_provider --port 8765``."""
    parser = argparse.ArgumentParser(description="budgetguard's fake OpenAI/Anthropic server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    with FakeProvider(host=args.host, port=args.port) as fake:
        print(f"fake provider on {fake.url} (OpenAI base_url {fake.openai_base_url})")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
