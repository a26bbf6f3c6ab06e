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

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, ClassVar

from ..._core.errors import ConfigurationError
from ..._core.records import CallRecord
from ..background import Worker
from .rows import LedgerRow, ReportRow
from .sql import Dialect

__all__ = ["Ledger", "parse_since"]

log = logging.getLogger("budgetguard.ledger")


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
        self._rejected = 0
        self._cleaned = 0
        self.rejected_rows: deque[tuple[LedgerRow, str]] = deque(maxlen=1000)
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

    @property
    def rejected(self) -> int:
        """Rows the database refused (set aside, logged; the last 1000 in ``rejected_rows``)."""
        return self._rejected

    @property
    def cleaned(self) -> int:
        """Rows stored after a fix (NUL characters in a text replaced by U+FFFD)."""
        return self._cleaned

    @property
    def queued(self) -> int:
        """Rows waiting for the writer: what a hard kill (SIGKILL, os._exit) would lose."""
        return self._worker.queued

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
    def _is_transient(self, error: Exception) -> bool:
        """Worth retrying the same rows: the database is down, busy or unreachable.
        Anything else (a value the database refuses) is the row's fault."""
        return isinstance(error, OSError)

    def _screen(self, rows: list[LedgerRow]) -> list[LedgerRow]:
        """Rows as the database can take them: NUL characters replaced (PostgreSQL
        refuses them), rows with numbers out of BIGINT range set aside."""
        kept: list[LedgerRow] = []
        for row in rows:
            clean = row.cleaned()
            if clean is not row:
                with self._lock:
                    self._cleaned += 1
            problem = clean.out_of_range()
            if problem is not None:
                self._set_aside(clean, problem)
            else:
                kept.append(clean)
        return kept

    def _set_aside(self, row: LedgerRow, reason: object) -> None:
        """A row the database refuses is counted and logged (with its values, so it
        can be restored by hand), never retried: it must not block the rows behind it."""
        with self._lock:
            self._rejected += 1
            self.rejected_rows.append((row, str(reason)))
            count = self._rejected
        if count & (count - 1) == 0:  # 1, 2, 4, 8, ...: loud, never a flood
            log.error(
                "budgetguard: ledger set aside a row it cannot store (%s; %d so far): %r",
                reason,
                count,
                row,
            )

    def _one_by_one(self, rows: list[LedgerRow]) -> list[LedgerRow]:
        """A batch was refused: write its rows one at a time, set the refused ones
        aside; the rows from the first transient failure on are returned to retry."""
        for n, row in enumerate(rows):
            error = self._commit([row])
            if error is None:
                continue
            if self._is_transient(error):
                return rows[n:]
            self._set_aside(row, error)
        return []

    def _write_batch(self, rows: list[LedgerRow]) -> None:
        """Commit ``rows``, retrying with backoff while the database is down; once
        the ledger is closing (``abort``), give up after three failures. A row the
        database refuses is set aside (``rejected``), never retried forever."""
        rows = self._screen(rows)
        abort = self._worker.abort
        failures = 0
        while rows and (error := self._commit(rows)) is not None:
            if not self._is_transient(error):
                rows = self._one_by_one(rows)
                continue
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
                conn.rollback()  # nothing written yet: no rows to read
                return []
            return [tuple(r) for r in cur.fetchall()]
        finally:
            conn.close()

    def select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on the ledger's table (``dialect.table``, the
        dialect's ``mark`` for parameters): the dashboard's aggregations. A ledger
        whose table does not exist yet reads as empty."""
        return self._query(sql, params)

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
        found = self._query(sql, _bounds(since, until))
        cost, calls = found[0] if found else (0, 0)
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
        try:
            return now - timedelta(seconds=int(text[:-1]) * units[text[-1]])
        except OverflowError:
            raise ConfigurationError(
                f"{field}: {value!r} reaches before the year 1; use an ISO date instead"
            ) from None
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
