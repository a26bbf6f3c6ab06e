"""The usage ledger: every guarded call, one row, written off the request path.

A ``Ledger`` is a listener (``bg.configure(listeners=[ledger])``): calling it
with a ``CallRecord`` only converts it to a row and puts it on a bounded
queue, a few microseconds. A background thread writes rows in batches, one
transaction per batch. ``flush()`` waits until everything handed over before
it is committed; ``close()`` (also run at interpreter exit) flushes, so no
accepted row is lost on a clean shutdown. A row is only refused when the
queue is full (the database has been down for a long while): it is counted
in ``dropped`` and logged, and the LLM call is never slowed down.

Backends: ``SQLiteLedger`` (a local file, the default) and ``PostgresLedger``
(shared by many processes and machines); ``open_ledger(url)`` picks one.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ._background import Worker
from ._errors import ConfigurationError
from ._ledger_sql import COLUMNS, Dialect, check_identifier
from ._money import nanos_to_usd

if TYPE_CHECKING:
    from ._engine import CallRecord

__all__ = [
    "Ledger",
    "LedgerRow",
    "PostgresLedger",
    "ReportRow",
    "SQLiteLedger",
    "open_ledger",
    "parse_since",
]

log = logging.getLogger("budgetguard.ledger")

_DEFAULT_TABLE = "budgetguard_ledger"


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One call as stored: money in nano-USD, time in microseconds since the epoch (UTC)."""

    at_us: int
    outcome: str
    environment: str | None
    tenant: str | None
    user: str | None
    feature: str | None
    tags: Mapping[str, str]
    requested_model: str | None
    model: str | None
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    estimate_nanos: int
    cost_nanos: int
    latency_us: int
    reservation_id: str | None
    error: str | None

    @classmethod
    def from_record(cls, record: CallRecord, environment: str | None = None) -> LedgerRow:
        usage = record.usage
        return cls(
            at_us=int(record.at * 1_000_000),
            outcome=record.outcome,
            environment=environment,
            tenant=record.tenant,
            user=record.user,
            feature=record.feature,
            tags=dict(record.tags),
            requested_model=record.requested_model,
            model=record.model,
            input_tokens=usage.input_tokens if usage else 0,
            cached_tokens=usage.cache_read_tokens if usage else 0,
            cache_write_tokens=usage.cache_write_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            reasoning_tokens=usage.reasoning_tokens if usage else 0,
            estimate_nanos=record.estimate,
            cost_nanos=record.cost,
            latency_us=int(record.latency_s * 1_000_000),
            reservation_id=record.reservation_id,
            error=None if record.error is None else record.error[:2000],
        )

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> LedgerRow:
        data = dict(zip(COLUMNS, values, strict=True))
        data["user"] = data.pop("user_id")
        data["tags"] = json.loads(data["tags"] or "{}")
        for name in COLUMNS:
            if name.endswith(("_us", "_tokens", "_nanos")):
                data[name] = int(data[name])
        return cls(**data)

    def values(self) -> tuple[Any, ...]:
        """In ``COLUMNS`` order, ready for an INSERT."""
        return (
            self.at_us,
            self.outcome,
            self.environment,
            self.tenant,
            self.user,
            self.feature,
            json.dumps(dict(self.tags), sort_keys=True, separators=(",", ":")),
            self.requested_model,
            self.model,
            self.input_tokens,
            self.cached_tokens,
            self.cache_write_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            self.estimate_nanos,
            self.cost_nanos,
            self.latency_us,
            self.reservation_id,
            self.error,
        )

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.at_us / 1_000_000, UTC)

    @property
    def cost(self) -> Decimal:
        return nanos_to_usd(self.cost_nanos)


@dataclass(frozen=True, slots=True)
class ReportRow:
    """Spend of one group (a feature, a user, ...) over the report's period."""

    key: str | None
    calls: int
    ok: int
    downgraded: int
    denied: int
    errors: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_nanos: int

    @property
    def cost(self) -> Decimal:
        return nanos_to_usd(self.cost_nanos)

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> ReportRow:
        key, *numbers = values
        return cls(None if key is None else str(key), *(int(n) for n in numbers))


_open: weakref.WeakSet[Ledger] = weakref.WeakSet()
_inherited: list[Any] = []


def _reinit_after_fork() -> None:
    for ledger in list(_open):
        ledger._forked()


os.register_at_fork(after_in_child=_reinit_after_fork)


class Ledger:
    """Base of the ledger backends: the queue, the writer thread and the queries.

    Subclasses supply a ``Dialect`` and DB-API connections (``_connect``).
    ``batch_size`` caps rows per transaction; ``max_queue`` bounds memory
    while the database is slow or down; ``environment`` labels every row
    (default: ``$BUDGETGUARD_ENV``), so one database can hold staging and
    production apart.
    """

    dialect: Dialect
    retry_max_s: ClassVar[float] = 5.0

    def __init__(
        self,
        *,
        batch_size: int = 500,
        max_queue: int = 100_000,
        environment: str | None = None,
    ) -> None:
        self._worker: Worker[LedgerRow] = Worker(
            f"budgetguard-ledger-{id(self):x}",
            self._write_batch,
            max_queue,
            batch_size=batch_size,
            on_stop=self._disconnect,
        )
        self.batch_size = batch_size
        self.max_queue = max_queue
        self.environment = (
            environment if environment is not None else os.environ.get("BUDGETGUARD_ENV")
        )
        self._lock = threading.Lock()
        self._dropped = 0
        self._written = 0
        self._ready = False
        self._conn: Any = None
        _open.add(self)

    # -- backend hooks -------------------------------------------------------
    def _connect(self, *, writer: bool = True) -> Any:
        """A new DB-API connection (autocommit off); ``writer``: the writer thread's."""
        raise NotImplementedError

    def _setup(self, conn: Any) -> None:
        """Create the table if it does not exist yet (idempotent)."""
        cur = conn.cursor()
        for statement in self.dialect.create():
            cur.execute(statement)
        conn.commit()

    # -- the request path ----------------------------------------------------
    def __call__(self, record: CallRecord) -> None:
        """Queue one call's row. Never blocks and never does I/O."""
        self.put(LedgerRow.from_record(record, self.environment))

    def put(self, row: LedgerRow) -> None:
        """Queue a row (``__call__`` without a ``CallRecord``): never blocks."""
        if self._worker.closed:
            with self._lock:
                self._dropped += 1
                dropped = self._dropped
            if dropped & (dropped - 1) == 0:  # 1, 2, 4, 8, ...: loud, never a flood
                log.error("budgetguard: ledger closed; dropped a row (%d so far)", dropped)
            return
        self._worker.put(row)  # a full queue drops, counts and logs there

    @property
    def dropped(self) -> int:
        """Rows refused (queue full, ledger closed) or given up unwritten at close."""
        return self._dropped + self._worker.dropped

    @property
    def written(self) -> int:
        """Rows committed by this process so far."""
        return self._written

    # -- lifecycle -------------------------------------------------------------
    def _forked(self) -> None:
        """In a forked child: the parent's connection is not ours (the worker
        starts a thread of its own on the child's first put).

        The inherited connection is kept referenced, never closed or collected here:
        closing a copy of the parent's socket would end the parent's session.
        """
        if self._conn is not None:
            _inherited.append(self._conn)
            self._conn = None
        self._lock = threading.Lock()  # a parent thread may have held it at the fork

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every row queued before this call is committed; False on timeout."""
        return self._worker.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop the writer; rows unwritten after ``timeout`` are logged as lost."""
        self._worker.close(timeout)
        _open.discard(self)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the writer thread -----------------------------------------------------
    def _write_batch(self, rows: list[LedgerRow]) -> None:
        """Commit ``rows``, retrying with backoff while the database is down; once
        the ledger is closing (``abort``), give up after three failures."""
        abort = self._worker.abort
        failures = 0
        while (error := self._commit(rows)) is not None:
            failures += 1
            if abort.is_set() and failures >= 3:
                self._give_up(rows, error)
                return
            delay = min(self.retry_max_s, 0.05 * 2 ** min(failures, 10))
            if failures == 1 or failures % 20 == 0:
                log.error(
                    "budgetguard: ledger write of %d rows failed (%r); retrying in %.2fs",
                    len(rows),
                    error,
                    delay,
                )
            abort.wait(delay)  # closing cuts a backoff short

    def _disconnect(self) -> None:
        _discard(self._conn)
        self._conn = None

    def _commit(self, rows: list[LedgerRow]) -> Exception | None:
        """Write one batch in one transaction; the error, if it failed (rows kept)."""
        try:
            if self._conn is None:
                self._conn = self._connect()
                if not self._ready:
                    self._setup(self._conn)
                    self._ready = True
            self._write(self._conn, rows)
        except Exception as exc:
            _discard(self._conn)
            self._conn = None
            return exc
        with self._lock:
            self._written += len(rows)
        return None

    def _give_up(self, rows: list[LedgerRow], error: Exception) -> None:
        lost = len(rows) + self._worker.discard_queued()
        log.error("budgetguard: ledger closing with %d rows unwritten (%r)", lost, error)
        with self._lock:
            self._dropped += lost

    def _write(self, conn: Any, rows: list[LedgerRow]) -> None:
        cur = conn.cursor()
        cur.executemany(self.dialect.insert(), [row.values() for row in rows])
        conn.commit()

    # -- reading ---------------------------------------------------------------
    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        conn = self._connect(writer=False)
        try:
            try:
                cur = conn.cursor()
                cur.execute(sql, tuple(params))
            except Exception as exc:
                if "exist" not in str(exc) and "no such table" not in str(exc):
                    raise
                conn.rollback()  # nothing written yet: create the table, ask again
                self._setup(conn)
                cur = conn.cursor()
                cur.execute(sql, tuple(params))
            return [tuple(r) for r in cur.fetchall()]
        finally:
            conn.close()

    def report(
        self,
        by: str = "feature",
        *,
        since: datetime | timedelta | str | None = None,
        until: datetime | None = None,
    ) -> list[ReportRow]:
        """Spend per ``by`` (feature, user, tenant, model, requested_model,
        environment, outcome, day, or ``tag:<name>``) since ``since``
        (a datetime, a timedelta back from now, or "7d" / "24h" / "30m"),
        most expensive first. Rows not yet flushed are not included."""
        sql, params = self.dialect.report(by, until=until is not None)
        bounds = _bounds(since, until)
        return [ReportRow.from_values(r) for r in self._query(sql, [*params, *bounds])]

    def total(
        self,
        *,
        since: datetime | timedelta | str | None = None,
        until: datetime | None = None,
    ) -> tuple[int, int]:
        """(cost in nano-USD, number of calls) over the period."""
        sql = self.dialect.total(until=until is not None)
        cost, calls = self._query(sql, _bounds(since, until))[0]
        return int(cost), int(calls)

    def rows(
        self,
        *,
        since: datetime | timedelta | str | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> list[LedgerRow]:
        """The stored rows of the period, oldest first."""
        sql = self.dialect.rows(until=until is not None, limit=limit)
        return [LedgerRow.from_values(r) for r in self._query(sql, _bounds(since, until))]

    def __iter__(self) -> Iterator[LedgerRow]:
        return iter(self.rows())


def _discard(conn: Any) -> None:
    """Close a connection that may already be broken; always returns None."""
    if conn is not None:
        try:
            conn.close()
        except Exception:
            log.debug("budgetguard: closing a ledger connection failed", exc_info=True)


def parse_since(value: str | timedelta | datetime, *, field: str = "since") -> datetime:
    """ "7d", "24h", "30m", "2w", "90s", a timedelta (back from now) or an ISO date/time."""
    now = datetime.now(UTC)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, timedelta):
        return now - value
    text = value.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
    if text and text[-1] in units and text[:-1].isdigit():
        return now - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigurationError(
            f"{field}: expected a duration like 7d, 24h, 30m or an ISO date, got {value!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _bounds(since: datetime | timedelta | str | None, until: datetime | None) -> list[int]:
    start = 0 if since is None else int(parse_since(since).timestamp() * 1_000_000)
    if until is None:
        return [start]
    end = parse_since(until, field="until")
    return [start, int(end.timestamp() * 1_000_000)]


# -- SQLite ----------------------------------------------------------------------


class SQLiteLedger(Ledger):
    """A ledger in a local SQLite file (WAL mode: many processes may share one file).

    ``SQLiteLedger("budgetguard.db")``; the table is created on first use.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "budgetguard.db",
        *,
        table: str = _DEFAULT_TABLE,
        batch_size: int = 500,
        max_queue: int = 100_000,
        environment: str | None = None,
    ) -> None:
        text = os.fspath(path)
        if not text or text == ":memory:":
            raise ConfigurationError(
                "path: the SQLite ledger needs a file (it is read from other connections)"
            )
        self.path = Path(text)
        self.dialect = Dialect("sqlite", check_identifier(table, "table"))
        super().__init__(batch_size=batch_size, max_queue=max_queue, environment=environment)

    def _connect(self, *, writer: bool = True) -> sqlite3.Connection:
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
    and ``&schema=name`` pick the table)."""
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
