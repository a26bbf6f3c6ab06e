"""Reservation and frame ids: unique across threads, processes and forks, ~100 ns each."""

from __future__ import annotations

import itertools
import os

__all__ = ["new_id"]


class _Ids:
    """A random per-process prefix (renewed in a forked child) and a counter."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


new_id = _Ids().next
