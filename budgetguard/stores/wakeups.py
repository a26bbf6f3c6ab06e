"""Waking calls that wait for budget to free up, instead of polling.

A call refused only because other calls hold budget (``_core.decide``'s
contention wait, and ``block``) waits until one of those settles or is
released. A store announces that on a *channel* (a counter key in memory, a
hash tag's pub/sub channel on Redis) and ``Wakeups`` wakes whoever waits on it:
threads through an ``Event``, tasks through a future set on their own loop. A
wait always has a timeout, so a missed announcement costs a delay, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable

__all__ = ["Wakeups"]


class _Waiter:
    """One waiting thread (``loop`` None) or task."""

    __slots__ = ("event", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.event = threading.Event() if loop is None else None
        self.future: asyncio.Future[None] | None = None if loop is None else loop.create_future()

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
            return
        assert self.loop is not None and self.future is not None
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Wakeups:
    """Who waits on which channel; ``notify`` wakes them all (they re-check and retry)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, set[_Waiter]] = {}

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def channels(self) -> list[str]:
        with self._lock:
            return list(self._waiting)

    def notify(self, channels: Iterable[str]) -> None:
        if not self._waiting:  # the common case: nobody waits, nothing to lock
            return
        with self._lock:
            woken = [w for channel in channels for w in self._waiting.pop(channel, ())]
        for waiter in woken:
            waiter.wake()

    def wait(self, channel: str, timeout: float) -> bool:
        """Block this thread until ``channel`` is notified (True) or ``timeout`` passes."""
        waiter = _Waiter(None)
        self._add(channel, waiter)
        try:
            assert waiter.event is not None
            return waiter.event.wait(timeout)
        finally:
            self._discard(channel, waiter)

    async def await_(self, channel: str, timeout: float) -> bool:
        """As ``wait``, for a task: its loop keeps running meanwhile."""
        waiter = _Waiter(asyncio.get_running_loop())
        self._add(channel, waiter)
        try:
            assert waiter.future is not None
            await asyncio.wait_for(waiter.future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._discard(channel, waiter)

    def _add(self, channel: str, waiter: _Waiter) -> None:
        with self._lock:
            self._waiting.setdefault(channel, set()).add(waiter)

    def _discard(self, channel: str, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._waiting.get(channel)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiting[channel]
