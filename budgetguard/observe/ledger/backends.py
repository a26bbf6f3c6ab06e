"""The ledger's backends: a local SQLite file, or PostgreSQL shared by a fleet."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..._core.errors import ConfigurationError
from .base import Ledger
from .sql import Dialect, check_identifier

__all__ = ["PostgresLedger", "SQLiteLedger", "open_ledger"]

_DEFAULT_TABLE = "budgetguard_ledger"


class SQLiteLedger(Ledger):
    """A ledger in a local SQLite file (WAL mode: many processes may share one file).

    ``SQLiteLedger("budgetguard.db")``; the table is created on first use.
    ``must_exist=True`` (what the CLI's read commands use) refuses a path with
    no database instead of creating an empty one there.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "budgetguard.db",
        *,
        table: str = _DEFAULT_TABLE,
        batch_size: int = 500,
        max_queue: int = 100_000,
        environment: str | None = None,
        must_exist: bool = False,
    ) -> None:
        text = os.fspath(path)
        if not text or text == ":memory:":
            raise ConfigurationError(
                "path: the SQLite ledger needs a file (it is read from other connections)"
            )
        self.path = Path(text)
        if must_exist and not self.path.is_file():
            raise ConfigurationError(
                f"ledger: no SQLite database at {text!r} (nothing was created there); "
                "check the path, or write to it first"
            )
        self.must_exist = must_exist
        self.dialect = Dialect("sqlite", check_identifier(table, "table"))
        super().__init__(batch_size=batch_size, max_queue=max_queue, environment=environment)

    def _is_transient(self, error: Exception) -> bool:
        return isinstance(error, (sqlite3.OperationalError, OSError))  # locked, disk, I/O

    def _connect(self, *, writer: bool = True) -> sqlite3.Connection:
        if self.must_exist:  # a reader: never create the file (or its folder)
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            return sqlite3.connect(uri, uri=True, timeout=10.0, check_same_thread=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False)
        if writer:  # WAL is a property of the file: readers never block the writer
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def __repr__(self) -> str:
        return f"SQLiteLedger({str(self.path)!r}, table={self.dialect.table!r})"


# -- PostgreSQL ------------------------------------------------------------------


class PostgresLedger(Ledger):
    """A ledger in PostgreSQL, shared by every process and machine.

    ``PostgresLedger("postgresql://user@host/db", table="budgetguard_ledger",
    schema=None)``. Needs ``pip install 'budgetguard[postgres]'`` (psycopg 3).
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = _DEFAULT_TABLE,
        schema: str | None = None,
        batch_size: int = 500,
        max_queue: int = 100_000,
        environment: str | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "ledger: PostgreSQL needs psycopg; pip install 'budgetguard[postgres]'"
            ) from None
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        name = check_identifier(table, "table")
        if schema is not None:
            name = f"{check_identifier(schema, 'schema')}.{name}"
        self.schema = schema
        self.dialect = Dialect("postgres", name)
        super().__init__(batch_size=batch_size, max_queue=max_queue, environment=environment)

    def _is_transient(self, error: Exception) -> bool:
        import psycopg

        return isinstance(error, (psycopg.OperationalError, OSError))  # connection, server

    def _connect(self, *, writer: bool = True) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, connect_timeout=max(1, round(self.connect_timeout)))

    def _setup(self, conn: Any) -> None:
        import psycopg

        cur = conn.cursor()
        try:
            if self.schema is not None:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            for statement in self.dialect.create():
                cur.execute(statement)
            conn.commit()
        except psycopg.errors.UniqueViolation:
            # Two processes creating the same table at once: the other one won.
            conn.rollback()

    def __repr__(self) -> str:
        return f"PostgresLedger(table={self.dialect.table!r})"


# -- from a URL ------------------------------------------------------------------


def open_ledger(url: str | os.PathLike[str], **options: Any) -> Ledger:
    """A ledger from a URL: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``,
    a bare file path, or ``postgresql://user@host:5432/db`` (``?table=name``
    and ``&schema=name`` pick the table). ``must_exist=True``: only read what is
    there - no SQLite file is created, no table either."""
    text = os.fspath(url).strip()
    if not text:
        raise ConfigurationError("ledger: empty URL; e.g. sqlite:///budgetguard.db")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("postgres", "postgresql"):
        query = dict(parse_qsl(parts.query))
        for name in ("table", "schema"):
            if name in query:
                options.setdefault(name, query.pop(name))
        dsn = urlunsplit(parts._replace(query=urlencode(query)))
        options.pop("must_exist", None)  # a missing table reads as empty, never created
        return PostgresLedger(dsn, **options)
    if scheme == "sqlite":
        query = dict(parse_qsl(parts.query))
        if "table" in query:
            options.setdefault("table", query.pop("table"))
        path = unquote(parts.path)
        if parts.netloc:
            path = parts.netloc + path
        elif path.startswith("/"):
            path = path[1:]  # sqlite:///x.db is relative, sqlite:////x.db absolute
        return SQLiteLedger(path, **options)
    if scheme and len(scheme) > 1:  # not a Windows drive letter
        raise ConfigurationError(
            f"ledger: unsupported URL {text!r}; use sqlite:///path.db or postgresql://..."
        )
    return SQLiteLedger(text, **options)
