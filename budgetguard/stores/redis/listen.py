"""Hearing that budget was freed: one pub/sub subscription per store and process.

The settle, release and sweep scripts publish on ``<prefix>:{<tag>}:freed``
(``prelude.lua``). A call waiting for budget (a contention wait, ``block``)
registers with ``Wakeups`` under its counter's channel; one subscriber per store
(a thread for ``RedisStore``, a task per event loop for ``AsyncRedisStore``)
pattern-subscribes to every tag's channel and wakes the waiters of the channel a
message names. Waits are bounded, so a lost message (a reconnect, a cluster
client without pub/sub) only costs a delay.
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
    """A daemon thread subscribed for a sync client; started by the first wait."""

    def __init__(self, client: Any, pattern: str, wakeups: Wakeups) -> None:
        self._client = client
        self._pattern = pattern
        self._wakeups = wakeups
        self._lock = threading.Lock()
        self._thread: Any = None
        self._pid = 0

    def ensure(self) -> bool:
        """Subscribed (True), or not possible with this client (False: waits just time out)."""
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return True
        with self._lock:
            if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
                return True
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(**{self._pattern: self._on_message})
                self._thread = pubsub.run_in_thread(
                    sleep_time=1.0, daemon=True, exception_handler=self._on_error
                )
                self._thread.name = "budgetguard-freed"
            except Exception as error:
                log.debug("budgetguard: no pub/sub wake-ups (%r); waits poll", error)
                self._thread = None
                return False
            self._pid = os.getpid()
            return True

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
        loop = asyncio.get_running_loop()
        task = self._tasks.get(loop)
        if task is not None and not task.done():
            return True
        if not callable(getattr(self._client, "pubsub", None)):
            return False  # redis.asyncio's cluster client has no pub/sub: waits poll
        for old in [key for key in self._tasks if key.is_closed()]:
            del self._tasks[old]
        subscribed = loop.create_future()
        self._tasks[loop] = loop.create_task(self._listen(subscribed), name="budgetguard-freed")
        try:
            await asyncio.wait_for(asyncio.shield(subscribed), 2.0)
        except Exception as error:
            log.debug("budgetguard: no pub/sub wake-ups (%r); waits poll", error)
            return False
        return True

    async def _listen(self, subscribed: asyncio.Future[None]) -> None:
        while True:
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                try:
                    await pubsub.psubscribe(self._pattern)
                    if not subscribed.done():
                        subscribed.set_result(None)
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
                if not subscribed.done():
                    subscribed.set_exception(error)
                    return
                log.debug("budgetguard: freed-channel subscriber: %r; reconnecting", error)
                await asyncio.sleep(0.5)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._tasks.pop(loop, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
