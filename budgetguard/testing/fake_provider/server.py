"""The HTTP plumbing of the fake provider: JSON, server-sent events, routing.

Each wire format (``openai_wire``, ``anthropic_wire``, ...) contributes
``ROUTES``: a path predicate, the handler of a successful reply, and the
provider's error body.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from .replies import Json, RecordedRequest, Reply

__all__ = ["Cut", "Handler", "Route", "Script", "Server", "new_id", "pieces"]


class Script(Protocol):
    """What the server asks of its owner (``FakeProvider``): the next reply, and a record."""

    def next_reply(self) -> Reply: ...

    def record(self, request: RecordedRequest) -> None: ...


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    provider: Script
    routes: tuple[Route, ...]

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that abandons a stream resets its connection: expected here, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+\s*", text) or [text]


@dataclass(frozen=True, slots=True)
class Route:
    """One API endpoint: which paths it answers, how, and how it fails."""

    matches: Callable[[str], bool]
    answer: Callable[[Handler, str, Json, Reply], None]
    error: Callable[[Handler, Reply], None]


class Cut(Exception):
    """The script asked to drop the connection mid-stream."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- plumbing --------------------------------------------------------------
    def send_json(self, status: int, body: Json) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-request-id", new_id("req_"))
        self.send_header("request-id", new_id("req_"))
        if status != 200:
            self.send_header("x-should-retry", "false")
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-request-id", new_id("req_"))
        self.send_header("request-id", new_id("req_"))
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def sse(self, data: Json | str, event: str | None = None) -> None:
        payload = data if isinstance(data, str) else json.dumps(data)
        head = f"event: {event}\n" if event else ""
        self.chunk(f"{head}data: {payload}\n\n".encode())

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def cut(self) -> None:
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def deltas(self, reply: Reply) -> Iterator[str]:
        for n, piece in enumerate(pieces(reply.text)):
            if reply.cut_after is not None and n >= reply.cut_after:
                raise Cut
            yield piece
        if reply.cut_after is not None and reply.cut_after >= len(pieces(reply.text)):
            raise Cut

    # -- dispatch ----------------------------------------------------------------
    def _read_body(self) -> Json:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_raw": raw.decode(errors="replace")}
        return body if isinstance(body, dict) else {"_body": body}

    def do_POST(self) -> None:
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        provider = self.server.provider
        headers = {k.lower(): v for k, v in self.headers.items()}
        provider.record(RecordedRequest(method="POST", path=path, headers=headers, body=body))
        reply = provider.next_reply()
        if reply.delay_s:
            time.sleep(reply.delay_s)
        route = next((r for r in self.server.routes if r.matches(path)), None)
        try:
            if route is None:
                self.send_json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            elif reply.status != 200:
                route.error(self, reply)
            else:
                route.answer(self, path, body, reply)
        except Cut:
            self.cut()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client hung up early (abandoned stream)
