"""Work off the request path: a bounded queue and one daemon thread per worker.

The ledger's writer, the alert evaluator and each webhook are ``Worker`` s:
putting never blocks and never does I/O (a full queue drops and counts),
``flush`` waits for what was queued before it, the thread starts lazily (also
again in a forked child), and every worker is flushed at interpreter exit - a
multiprocessing child's exit included.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing.util
import os
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .._core.errors import ConfigurationError

__all__ = ["Worker"]

log = logging.getLogger("budgetguard")

T = TypeVar("T")


class _Flush:
    """A marker in the queue: set once everything queued before it is handled."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()
_workers: weakref.WeakSet[Worker[Any]] = weakref.WeakSet()


class Worker(Generic[T]):
    """Hands batches of up to ``batch_size`` queued items to ``handle``, on its thread.

    ``handle`` may keep retrying a batch (nothing else is taken meanwhile); it
    should give up once ``abort`` is set, which ``close`` does when its
    ``timeout`` ran out. ``on_stop`` runs on the thread as it ends.
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[list[T]], None],
        max_queue: int,
        *,
        batch_size: int = 1000,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        if max_queue < 1:
            raise ConfigurationError(f"max_queue: must be >= 1, got {max_queue}")
        if batch_size < 1:
            raise ConfigurationError(f"batch_size: must be >= 1, got {batch_size}")
        self.name = name
        self.handle = handle
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.on_stop = on_stop
        self.dropped = 0
        self.closed = False
        self._reset()
        _workers.add(self)

    def _reset(self) -> None:
        self.abort = threading.Event()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._queue: queue.Queue[object] = queue.Queue(self.max_queue)
        self._thread: threading.Thread | None = None
        self._stop_taken = False

    def put(self, item: T) -> bool:
        """Queue ``item``; False (and counted, when full) if it was not taken."""
        if self._pid != os.getpid():
            self._reset()
        if self.closed:
            return False
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    _hook_exit()
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # 1, 2, 4, 8, ...: loud, never a flood
                log.error(
                    "budgetguard: %s queue full (%d); dropped %d so far",
                    self.name,
                    self.max_queue,
                    self.dropped,
                )
            return False
        return True

    @property
    def queued(self) -> int:
        return self._queue.qsize() if self._pid == os.getpid() else 0

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything queued before this call is handled; False on timeout."""
        if self._pid != os.getpid():
            return True
        if self._thread is None or self.closed:
            return self._queue.empty()
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush within ``timeout``, then set ``abort`` and stop the thread."""
        if self.closed:
            return
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            self.flush(timeout)
            self.closed = True
            self.abort.set()  # what is still in flight after the timeout is given up
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=1.0)
            thread.join(timeout)
        self.closed = True
        _workers.discard(self)

    def discard_queued(self) -> int:
        """From ``handle``, giving up: empty the queue; how many items it held."""
        lost = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return lost
            if isinstance(item, _Flush):
                item.done.set()
            elif item is _STOP:
                self._stop_taken = True
            else:
                lost += 1

    def _run(self) -> None:
        try:
            while not self._stop_taken:
                items: list[T] = []
                markers: list[_Flush] = []
                item = self._queue.get()
                while True:
                    if item is _STOP:
                        self._stop_taken = True
                    elif isinstance(item, _Flush):
                        markers.append(item)
                    else:
                        items.append(item)  # type: ignore[arg-type]
                    if markers or self._stop_taken or len(items) >= self.batch_size:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if items:
                    try:
                        self.handle(items)
                    except Exception:
                        log.exception("budgetguard: %s failed on %d items", self.name, len(items))
                for marker in markers:
                    marker.done.set()
        finally:
            if self.on_stop is not None:
                self.on_stop()


@atexit.register
def _close_workers() -> None:
    for worker in list(_workers):
        worker.close(timeout=5.0)


_hooked_pid = 0


def _hook_exit() -> None:
    """Also close the workers at a multiprocessing child's exit: it ends with os._exit(),
    which runs no atexit hook (a forked worker lost every queued ledger row), but it runs
    multiprocessing's finalizers - registered here, in the process that starts a thread,
    since a child clears the ones it inherited."""
    global _hooked_pid
    if _hooked_pid != os.getpid():
        _hooked_pid = os.getpid()
        multiprocessing.util.Finalize(None, _close_workers, exitpriority=10)
