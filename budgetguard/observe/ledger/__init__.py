"""The usage ledger: every guarded call, one row, written off the request path.

``base.Ledger`` holds the queue, the writer thread and the queries;
``backends`` the SQLite and PostgreSQL ledgers and ``open_ledger(url)``;
``sql`` the SQL text per dialect; ``rows`` the row types.
"""

from __future__ import annotations

from .backends import PostgresLedger, SQLiteLedger, open_ledger
from .base import Ledger, parse_since
from .rows import LedgerRow, ReportRow

__all__ = [
    "Ledger",
    "LedgerRow",
    "PostgresLedger",
    "ReportRow",
    "SQLiteLedger",
    "open_ledger",
    "parse_since",
]
