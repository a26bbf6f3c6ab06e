"""``budgetguard dashboard``: a local, read-only web page over the ledger and the store.

``server`` is the HTTP side (the standard library's ``ThreadingHTTPServer``),
``queries`` the SQL aggregations and the validation of every parameter, and
``static/`` the page itself with its chart library (Chart.js, vendored: no CDN).
"""

from __future__ import annotations

from .queries import DIMENSIONS, BadParameter, Query, Reader, parse_query
from .server import DashboardServer, serve

__all__ = [
    "DIMENSIONS",
    "BadParameter",
    "DashboardServer",
    "Query",
    "Reader",
    "parse_query",
    "serve",
]
