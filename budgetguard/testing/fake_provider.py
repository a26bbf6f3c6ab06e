"""A scriptable fake of the OpenAI and Anthropic HTTP APIs, on 127.0.0.1.

The real SDK clients talk to it over HTTP (``base_url``), so tests exercise
exactly what production does: request serialization, SSE parsing, error
mapping, retries. It answers

- ``POST /v1/chat/completions`` (OpenAI chat; ``stream=True`` sends
  ``chat.completion.chunk`` events, plus a final usage chunk with no choices
  only when ``stream_options.include_usage`` is true, as the real API does),
- ``POST /v1/responses`` (OpenAI Responses; streams ``response.created``,
  ``response.output_text.delta`` ... ``response.completed``),
- ``POST /v1/messages`` (Anthropic; streams ``message_start``,
  ``content_block_*``, ``message_delta``, ``message_stop``).

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
(Anthropic's ``input_tokens`` excludes the cache).

Run it standalone with ``python -m budgetguard.testing.fake_provider --port 8765``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ["FakeProvider", "RecordedRequest", "Reply", "main"]

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """What the server answers to one request.

    ``model=None`` echoes the requested model. ``status`` other than 200 sends
    the provider's error body. ``cut_after=n`` makes a stream drop the
    connection after ``n`` text deltas (before any usage). ``include_usage``
    False leaves usage out of the response entirely.
    """

    text: str = "Hello from the fake provider."
    model: str | None = None
    input_tokens: int = 20
    output_tokens: int = 10
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0  # Anthropic: the part of the writes cached for an hour
    status: int = 200
    error_message: str = "the fake provider was told to fail"
    cut_after: int | None = None
    include_usage: bool = True
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Json = field(default_factory=dict)


class FakeProvider:
    """The server; ``start()``/``stop()`` or use it as a context manager."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, default: Reply | None = None):
        self.default = default or Reply()
        self._queue: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server = _Server((host, port), _Handler)
        self._server.provider = self
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    provider: FakeProvider

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that abandons a stream resets its connection: expected here, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def _id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*", text) or [text]


# -- OpenAI shapes ---------------------------------------------------------------
def _chat_usage(r: Reply) -> Json:
    prompt_details: Json = {"cached_tokens": r.cache_read_tokens, "audio_tokens": 0}
    if r.cache_write_tokens:
        prompt_details["cache_write_tokens"] = r.cache_write_tokens
    return {
        "prompt_tokens": r.input_tokens,
        "completion_tokens": r.output_tokens,
        "total_tokens": r.input_tokens + r.output_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": r.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _responses_usage(r: Reply) -> Json:
    return {
        "input_tokens": r.input_tokens,
        "input_tokens_details": {
            "cached_tokens": r.cache_read_tokens,
            "cache_write_tokens": r.cache_write_tokens,
        },
        "output_tokens": r.output_tokens,
        "output_tokens_details": {"reasoning_tokens": r.reasoning_tokens},
        "total_tokens": r.input_tokens + r.output_tokens,
    }


def _response_object(r: Reply, model: str, rid: str, mid: str, *, done: bool) -> Json:
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed" if done else "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": model,
        "output": (
            [
                {
                    "type": "message",
                    "id": mid,
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": r.text, "annotations": []}],
                }
            ]
            if done
            else []
        ),
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "usage": _responses_usage(r) if done and r.include_usage else None,
    }


# -- Anthropic shapes ------------------------------------------------------------
def _anthropic_usage(r: Reply, *, output_tokens: int) -> Json:
    return {
        "input_tokens": r.input_tokens - r.cache_read_tokens - r.cache_write_tokens,
        "cache_creation_input_tokens": r.cache_write_tokens,
        "cache_read_input_tokens": r.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": r.cache_write_tokens - r.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": r.cache_write_1h_tokens,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _anthropic_message(r: Reply, model: str, mid: str, *, done: bool) -> Json:
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": r.text}] if done else [],
        "stop_reason": "end_turn" if done else None,
        "stop_sequence": None,
        "usage": _anthropic_usage(r, output_tokens=r.output_tokens if done else 1),
    }


_OPENAI_ERRORS = {400: "invalid_request_error", 401: "invalid_api_key", 429: "rate_limit_exceeded"}
_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class _Cut(Exception):
    """The script asked to drop the connection mid-stream."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing --------------------------------------------------------------
    def _send_json(self, status: int, body: Json) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", _id("req_"))
        self.send_header("request-id", _id("req_"))
        if status != 200:
            self.send_header("x-should-retry", "false")
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", _id("req_"))
        self.send_header("request-id", _id("req_"))
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _sse(self, data: Json | str, event: str | None = None) -> None:
        payload = data if isinstance(data, str) else json.dumps(data)
        head = f"event: {event}\n" if event else ""
        self._chunk(f"{head}data: {payload}\n\n".encode())

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _cut(self) -> None:
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _deltas(self, reply: Reply) -> Iterator[str]:
        for n, piece in enumerate(_pieces(reply.text)):
            if reply.cut_after is not None and n >= reply.cut_after:
                raise _Cut
            yield piece
        if reply.cut_after is not None and reply.cut_after >= len(_pieces(reply.text)):
            raise _Cut

    # -- dispatch ----------------------------------------------------------------
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_raw": raw.decode(errors="replace")}
        path = self.path.split("?", 1)[0]
        provider = self.server.provider
        provider.record(
            RecordedRequest(
                method="POST",
                path=path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body if isinstance(body, dict) else {"_body": body},
            )
        )
        reply = provider.next_reply()
        if reply.delay_s:
            time.sleep(reply.delay_s)
        anthropic = path.endswith("/messages")
        try:
            if path.endswith("/chat/completions") or path.endswith("/responses") or anthropic:
                if reply.status != 200:
                    self._error(reply, anthropic=anthropic)
                elif path.endswith("/chat/completions"):
                    self._chat(body, reply)
                elif path.endswith("/responses"):
                    self._responses(body, reply)
                else:
                    self._messages(body, reply)
            else:
                self._send_json(
                    404, {"error": {"message": f"no route {path}", "type": "not_found"}}
                )
        except _Cut:
            self._cut()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client hung up early (abandoned stream)

    def _error(self, reply: Reply, *, anthropic: bool) -> None:
        if anthropic:
            kind = _ANTHROPIC_ERRORS.get(reply.status, "api_error")
            body: Json = {"type": "error", "error": {"type": kind, "message": reply.error_message}}
        else:
            kind = _OPENAI_ERRORS.get(reply.status, "server_error")
            body = {
                "error": {"message": reply.error_message, "type": kind, "param": None, "code": None}
            }
        self._send_json(reply.status, body)

    # -- OpenAI chat completions ----------------------------------------------------
    def _chat(self, body: Json, reply: Reply) -> None:
        model = reply.model or str(body.get("model", ""))
        cid, created = _id("chatcmpl-"), int(time.time())
        if not body.get("stream"):
            message = {"role": "assistant", "content": reply.text, "refusal": None}
            response: Json = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
                ],
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
            }
            if reply.include_usage:
                response["usage"] = _chat_usage(reply)
            self._send_json(200, response)
            return
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage")) and reply.include_usage

        def chunk(delta: Json, finish: str | None = None) -> Json:
            data: Json = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                data["usage"] = None
            return data

        self._start_stream()
        self._sse(chunk({"role": "assistant", "content": "", "refusal": None}))
        for piece in self._deltas(reply):
            self._sse(chunk({"content": piece}))
        self._sse(chunk({}, "stop"))
        if include_usage:
            last = chunk({})
            last["choices"] = []
            last["usage"] = _chat_usage(reply)
            self._sse(last)
        self._sse("[DONE]")
        self._end_stream()

    # -- OpenAI Responses -------------------------------------------------------------
    def _responses(self, body: Json, reply: Reply) -> None:
        model = reply.model or str(body.get("model", ""))
        rid, mid = _id("resp_"), _id("msg_")
        if not body.get("stream"):
            self._send_json(200, _response_object(reply, model, rid, mid, done=True))
            return
        seq = iter(range(1_000_000))

        def event(kind: str, **fields: Any) -> None:
            self._sse({"type": kind, "sequence_number": next(seq), **fields}, kind)

        self._start_stream()
        event("response.created", response=_response_object(reply, model, rid, mid, done=False))
        event("response.in_progress", response=_response_object(reply, model, rid, mid, done=False))
        item = {"type": "message", "id": mid, "status": "in_progress", "role": "assistant"}
        event("response.output_item.added", output_index=0, item={**item, "content": []})
        part = {"type": "output_text", "text": "", "annotations": []}
        event(
            "response.content_part.added", item_id=mid, output_index=0, content_index=0, part=part
        )
        for piece in self._deltas(reply):
            event(
                "response.output_text.delta",
                item_id=mid,
                output_index=0,
                content_index=0,
                delta=piece,
                logprobs=[],
            )
        event(
            "response.output_text.done",
            item_id=mid,
            output_index=0,
            content_index=0,
            text=reply.text,
            logprobs=[],
        )
        done = _response_object(reply, model, rid, mid, done=True)
        event("response.output_item.done", output_index=0, item=done["output"][0])
        event("response.completed", response=done)
        self._end_stream()

    # -- Anthropic messages -------------------------------------------------------------
    def _messages(self, body: Json, reply: Reply) -> None:
        model = reply.model or str(body.get("model", ""))
        mid = _id("msg_")
        if not body.get("stream"):
            message = _anthropic_message(reply, model, mid, done=True)
            if not reply.include_usage:
                del message["usage"]
            self._send_json(200, message)
            return
        self._start_stream()
        start = _anthropic_message(reply, model, mid, done=False)
        self._sse({"type": "message_start", "message": start}, "message_start")
        block = {"type": "text", "text": ""}
        self._sse(
            {"type": "content_block_start", "index": 0, "content_block": block},
            "content_block_start",
        )
        self._sse({"type": "ping"}, "ping")
        for piece in self._deltas(reply):
            self._sse(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
                "content_block_delta",
            )
        self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        self._sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": reply.output_tokens},
            },
            "message_delta",
        )
        self._sse({"type": "message_stop"}, "message_stop")
        self._end_stream()


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


if __name__ == "__main__":
    main()
