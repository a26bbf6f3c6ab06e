"""Limits held in Redis (``bg.set_limit``, ``bg.set_plan``): one hash slot for the fleet.

Every process reads them with ``limits.lua`` and keeps its copy for at most
``limits_refresh_s`` (1 s by default, never more: ``base.LIMITS_STALE_S``); a
re-read costs one round trip that returns only the version unless something
changed. A write drops the copies of every store of the writing process (its
sync and async stores alike, a read in flight included): it sees its own write
at once. A stored entry
that does not parse (written by hand, by a newer version) is logged once and
skipped: it never blocks the others.

Layout (the ``{:limits}`` hash tag cannot collide with a tenant's: ``escape``
never leaves a ``:`` in one)::

    <prefix>:{:limits}:defs      hash "<scope>|<key>|<window>" -> Limit JSON
    <prefix>:{:limits}:plans     hash "<scope>|<key>" -> plan name
    <prefix>:{:limits}:ver       hash n (incremented by every write), e (when it was made)
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Generator, Sequence
from typing import Any
from urllib.parse import unquote

from pydantic import ValidationError

from ..._core.errors import ConfigurationError
from ..._core.limitbook import EMPTY_BOOK, LimitBook, LimitId
from ..._core.plan import escape
from ..._core.policy import Limit
from ..base import LIMITS_STALE_S
from .script import ScriptCall

__all__ = ["LimitBookPlans"]

log = logging.getLogger("budgetguard.stores.redis")


_write_seq = itertools.count(1)
_last_write: dict[str, int] = {}
"""Per key prefix, the sequence number of this process's last write of a limit or plan:
a store's copy read before it is stale, whichever store object wrote."""


def _note_write(prefix: str) -> None:
    _last_write[prefix] = next(_write_seq)  # next() of a count is atomic under the GIL


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> list[tuple[str, str]]:
    return [(_text(flat[i]), _text(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


def limit_field(ident: LimitId) -> str:
    scope, key, window = ident
    return f"{scope}|{escape(key) if key else ''}|{window}"


def plan_field(subject: tuple[str, str]) -> str:
    return f"{subject[0]}|{escape(subject[1])}"


class LimitBookPlans:
    """The stored-limit half of ``RedisStoreBase``: keys, plans and the cached book."""

    prefix: str
    _skipped: set[str]

    def _init_book(self, refresh_s: float) -> None:
        if not 0 <= refresh_s <= LIMITS_STALE_S:
            raise ConfigurationError(
                f"limits_refresh_s: between 0 and {LIMITS_STALE_S:g} seconds, got {refresh_s!r}"
            )
        self.limits_refresh_s = refresh_s
        self._book = EMPTY_BOOK
        self._book_read_at = float("-inf")
        self._book_seq = 0
        """The last write of this process the copy includes (``_last_write``)."""
        self._skipped = set()

    def _book_keys(self) -> tuple[str, str, str]:
        at = f"{self.prefix}:{{:limits}}"
        return (f"{at}:defs", f"{at}:plans", f"{at}:ver")

    def cached_book(self) -> LimitBook | None:
        """The book, when it was read recently enough to use without asking Redis and
        after this process's last write."""
        if (
            time.monotonic() - self._book_read_at < self.limits_refresh_s
            and _last_write.get(self.prefix, 0) <= self._book_seq
        ):
            return self._book
        return None

    def stale_book(self) -> LimitBook:
        """The last book read, for ``fail="open"`` while Redis is down (logged once)."""
        if "<stale>" not in self._skipped:
            self._skipped.add("<stale>")
            log.error("budgetguard: Redis is down; planning calls with the stored limits last read")
        return self._book

    def book_plan(self) -> Generator[ScriptCall, Any, LimitBook]:
        """The stored limits, re-read when the copy is older than ``limits_refresh_s``."""
        started = time.monotonic()
        seq = _last_write.get(self.prefix, 0)  # before the read: a write during it is newer
        if started - self._book_read_at < self.limits_refresh_s and seq <= self._book_seq:
            return self._book
        book = self._book
        reply = yield ScriptCall("limits", self._book_keys(), ("read", book.version))
        version = _text(reply[0])
        if len(reply) > 1 and version != book.version:
            book = self._parse(version, reply[1], reply[2])
            self._book = book
        self._book_read_at = started  # as old as the moment the read began
        self._book_seq = seq
        return book

    def _parse(self, version: str, limits: Sequence[Any], plans: Sequence[Any]) -> LimitBook:
        parsed: list[Limit] = []
        for field, raw in _pairs(limits):
            try:
                parsed.append(Limit.model_validate(json.loads(raw)))
            except (ValueError, ValidationError) as error:
                self._skip(field, f"{error}".splitlines()[0])
        assigned: dict[tuple[str, str], str] = {}
        for field, plan in _pairs(plans):
            scope, _, key = field.partition("|")
            if scope not in ("tenant", "user") or not key or not plan:
                self._skip(field, "not a '<tenant|user>|<key>' plan assignment")
                continue
            assigned[scope, unquote(key)] = plan
        return LimitBook(version, tuple(parsed), assigned)

    def _skip(self, field: str, why: str) -> None:
        if field not in self._skipped:
            self._skipped.add(field)
            log.error("budgetguard: stored limit %r is unreadable and ignored: %s", field, why)

    def put_limit_plan(self, limit: Limit) -> Generator[ScriptCall, Any, None]:
        ident = (limit.scope, limit.key or "", limit.resolved_window)
        data = json.dumps(limit.model_dump(mode="json", exclude_defaults=True))
        yield ScriptCall("limits", self._book_keys(), ("put", limit_field(ident), data))
        _note_write(self.prefix)

    def drop_limit_plan(self, ident: LimitId) -> Generator[ScriptCall, Any, bool]:
        reply = yield ScriptCall("limits", self._book_keys(), ("drop", limit_field(ident)))
        _note_write(self.prefix)
        return bool(int(reply[0]))

    def put_plan_plan(
        self, subject: tuple[str, str], plan: str | None
    ) -> Generator[ScriptCall, Any, None]:
        args = ("plan", plan_field(subject), plan or "")
        yield ScriptCall("limits", self._book_keys(), args)
        _note_write(self.prefix)
