"""The dashboard's web server: Python's own ``ThreadingHTTPServer``, read-only.

No web framework: the page is static files shipped in this package and a
handful of JSON endpoints, each a GET with validated parameters. Nothing is
fetched from elsewhere (the Content-Security-Policy says so to the browser
too), nothing is written: only GET and HEAD are answered, and the ledger is
opened read-only by the CLI. It binds 127.0.0.1 unless told otherwise, and
while it does it refuses requests naming another host (DNS rebinding).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..._core.errors import ConfigurationError
from ...pricing.book import PriceBook
from ..ledger.base import Ledger
from .compare import parse_targets, what_if
from .queries import DIMENSIONS, BadParameter, Query, Reader, parse_query

__all__ = ["DashboardServer", "serve"]

log = logging.getLogger("budgetguard.dashboard")

Budgets = Callable[[], list[dict[str, Any]]]
"""Returns every budget in force as JSON-ready rows (the CLI reads them from the store)."""

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")

_ENDPOINTS: Mapping[str, tuple[str, ...]] = {
    "spend": ("by", "bucket", "top"),
    "breakdown": ("by", "top"),
    "savings": (),
    "events": ("limit",),
}


def _static() -> dict[str, bytes]:
    """Every file of ``static/``, read once: the page works with no network at all."""
    folder = resources.files(__package__).joinpath("static")
    return {
        item.name: item.read_bytes()
        for item in folder.iterdir()
        if item.is_file() and not item.name.startswith(".")
    }


class DashboardServer(ThreadingHTTPServer):
    """``DashboardServer(ledger, budgets=..., prices=...)``; ``serve_forever()``, or
    ``start()`` in a background thread (tests); ``url`` is where it answers."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        ledger: Ledger,
        *,
        budgets: Budgets | None = None,
        prices: PriceBook | None = None,
        host: str = "127.0.0.1",
        port: int = 8765,
        refresh_s: int = 30,
        title: str = "budgetguard",
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigurationError(f"port: expected 0 to 65535, got {port!r}")
        if not isinstance(refresh_s, int) or refresh_s < 0:
            raise ConfigurationError(f"refresh: expected seconds >= 0, got {refresh_s!r}")
        self.reader = Reader(ledger, prices)
        self.budgets = budgets
        self.refresh_s = refresh_s
        self.title = title
        self.files = _static()
        self.loopback = host in _LOOPBACK
        self._thread: threading.Thread | None = None
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}/"

    def start(self) -> threading.Thread:
        """Serve in a daemon thread; ``close()`` stops it."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="budgetguard-dashboard", daemon=True
        )
        self._thread.start()
        return self._thread

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(5)
            self._thread = None
        self.server_close()

    # -- answers -------------------------------------------------------------------
    def api(self, name: str, params: Mapping[str, list[str]]) -> tuple[int, Any]:
        """(status, JSON body) of one endpoint."""
        if name == "meta":
            return 200, {
                "title": self.title,
                "ledger": repr(self.reader.ledger),
                "refresh_s": self.refresh_s,
                "dimensions": list(DIMENSIONS),
                "read_only": True,
            }
        if name == "budgets":
            if params:
                first = next(iter(params))
                raise BadParameter(first, "unknown parameter; budgets takes none")
            return 200, self._budgets()
        if name == "whatif":
            targets = parse_targets(params)
            rest = parse_query({k: v for k, v in params.items() if k != "to"})
            return 200, what_if(self.reader.ledger, self.reader.prices, rest, targets)
        allowed = _ENDPOINTS.get(name)
        if allowed is None:
            return 404, {"error": f"no endpoint /api/{name}"}
        query: Query = parse_query(params, allowed)
        method: Callable[[Query], dict[str, Any]] = getattr(self.reader, name)
        return 200, method(query)

    def _budgets(self) -> dict[str, Any]:
        if self.budgets is None:
            return {
                "rows": [],
                "note": "no shared store given (--store redis://...): budgets are not shown",
            }
        try:
            return {"rows": self.budgets()}
        except Exception as exc:  # a store down must not take the page with it
            log.warning("budgetguard: dashboard could not read budgets: %r", exc)
            return {"rows": [], "error": f"{type(exc).__name__}: {exc}"}


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "budgetguard-dashboard"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str, *, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        body = json.dumps(data, separators=(",", ":")).encode()
        self._send(status, body, "application/json")

    def _host_ok(self) -> bool:
        if not self.server.loopback:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in _LOOPBACK

    def do_GET(self) -> None:
        if not self._host_ok():
            self._json(403, {"error": "Host: this dashboard only answers to 127.0.0.1"})
            return
        parts = urlsplit(self.path)
        path = parts.path
        if path in ("/", "/index.html"):
            self._file("index.html")
        elif path.startswith("/static/"):
            self._file(path.removeprefix("/static/"), cache=True)
        elif path.startswith("/api/"):
            self._api(path.removeprefix("/api/"), parts.query)
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        else:
            self._json(404, {"error": f"not found: {path}"})

    def do_HEAD(self) -> None:
        self.do_GET()

    def _refuse(self) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "read-only: only GET and HEAD"})

    def do_POST(self) -> None:
        self._refuse()

    def do_PUT(self) -> None:
        self._refuse()

    def do_PATCH(self) -> None:
        self._refuse()

    def do_DELETE(self) -> None:
        self._refuse()

    def _file(self, name: str, *, cache: bool = False) -> None:
        body = self.server.files.get(name)
        if body is None:
            self._json(404, {"error": f"no such file: {name}"})
            return
        suffix = name[name.rfind(".") :]
        self._send(200, body, _TYPES.get(suffix, "application/octet-stream"), cache=cache)

    def _api(self, name: str, query: str) -> None:
        try:
            params = parse_qs(query, keep_blank_values=True, strict_parsing=False)
            status, data = self.server.api(name, params)
        except BadParameter as exc:
            self._json(400, {"error": str(exc), "parameter": exc.name})
            return
        except Exception as exc:
            log.exception("budgetguard: dashboard query %s failed", name)
            self._json(503, {"error": f"{type(exc).__name__}: {exc}"})
            return
        self._json(status, data)


def serve(
    ledger: Ledger,
    *,
    budgets: Budgets | None = None,
    prices: PriceBook | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    refresh_s: int = 30,
    ready: Callable[[DashboardServer], None] | None = None,
) -> None:
    """Serve the dashboard until interrupted (Ctrl-C)."""
    server = DashboardServer(
        ledger, budgets=budgets, prices=prices, host=host, port=port, refresh_s=refresh_s
    )
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
