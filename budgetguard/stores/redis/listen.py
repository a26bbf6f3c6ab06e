"""Hearing that budget was freed: one pub/sub subscription per store and process.

The settle, release and sweep scripts publish on ``<prefix>:{<tag>}:freed``
(``prelude.lua``). A call waiting for budget (a contention wait, ``block``)
registers with ``Wakeups`` under its counter's channel; one subscriber per store
(a thread for ``RedisStore``, a task per event loop for ``AsyncRedisStore``)
pattern-subscribes to every tag's channel and wakes the waiters of the channel a
message names. Waits are bounded, and nobody waits for the subscription itself:
a lost message (a reconnect, Redis not answering, an ACL user without channel
rights) only costs a delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from typing import Any

from ..wakeups import Wakeups

__all__ = ["AsyncFreedListener", "FreedListener", "freed_pattern"]

log = logging.getLogger("budgetguard")


def freed_pattern(prefix: str) -> str:
    """The glob matching every tag's freed channel under ``prefix``."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + ":*:freed"


def _channel(message: Any) -> str | None:
    channel = message.get("channel") if isinstance(message, dict) else None
    if isinstance(channel, bytes):
        return channel.decode("utf-8", "replace")
    return channel if isinstance(channel, str) else None


class FreedListener:
    """A daemon thread subscribed for a sync client. The first wait starts it in the
    background and never waits for it: until it is subscribed (or while Redis does not
    answer) waits just run to their timeout."""

    RETRY_S = 5.0
    """After a failed subscription, how long before the next wait tries again."""

    def __init__(self, client: Any, pattern: str, wakeups: Wakeups) -> None:
        self._client = client
        self._pattern = pattern
        self._wakeups = wakeups
        self._lock = threading.Lock()
        self._thread: Any = None
        self._starting = False
        self._failed_at = float("-inf")
        self._pid = 0

    def ensure(self) -> bool:
        """Subscribed (True); else start subscribing in the background (False)."""
        thread = self._thread
        if thread is not None and self._pid == os.getpid() and thread.is_alive():
            return True
        with self._lock:
            if self._starting or time.monotonic() - self._failed_at < self.RETRY_S:
                return False
            self._starting = True
        threading.Thread(target=self._start, name="budgetguard-freed-start", daemon=True).start()
        return False

    def _start(self) -> None:
        try:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe(**{self._pattern: self._on_message})
            thread = pubsub.run_in_thread(
                sleep_time=1.0, daemon=True, exception_handler=self._on_error
            )
            thread.name = "budgetguard-freed"
        except Exception as error:
            log.debug("budgetguard: no pub/sub wake-ups yet (%r); waits poll", error)
            with self._lock:
                self._failed_at = time.monotonic()
                self._starting = False
            return
        with self._lock:
            self._thread, self._pid, self._starting = thread, os.getpid(), False

    def _on_message(self, message: Any) -> None:
        channel = _channel(message)
        if channel is not None:
            self._wakeups.notify((channel,))

    def _on_error(self, error: BaseException, pubsub: Any, thread: Any) -> None:
        log.debug("budgetguard: freed-channel subscriber: %r; reconnecting", error)
        time.sleep(0.5)  # redis-py reconnects (and re-subscribes) on the next read

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(Exception):
                thread.stop()


class AsyncFreedListener:
    """A task per event loop subscribed for an async client; started by the first wait."""

    def __init__(self, client: Any, pattern: str, wakeups: Wakeups) -> None:
        self._client = client
        self._pattern = pattern
        self._wakeups = wakeups
        self._tasks: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    async def ensure(self) -> bool:
        """Subscribed, or subscribing, on this loop (True); never waits for it."""
        loop = asyncio.get_running_loop()
        task = self._tasks.get(loop)
        if task is not None and not task.done():
            return True
        if not callable(getattr(self._client, "pubsub", None)):
            return False
        for old in [key for key in self._tasks if key.is_closed() or self._tasks[key].done()]:
            del self._tasks[old]
        self._tasks[loop] = loop.create_task(self._listen(), name="budgetguard-freed")
        return True

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.psubscribe(self._pattern)
                    while True:
                        message = await pubsub.get_message(timeout=1.0)
                        channel = _channel(message) if message else None
                        if channel is not None:
                            self._wakeups.notify((channel,))
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.debug("budgetguard: freed-channel subscriber: %r; retrying", error)
                await asyncio.sleep(FreedListener.RETRY_S)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._tasks.pop(loop, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
