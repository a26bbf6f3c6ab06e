"""The Redis store's view of the server: its clock, and whether it answers."""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from ..._core.errors import StoreUnavailable

__all__ = ["Fail", "Health", "ServerClock"]

log = logging.getLogger("budgetguard.stores.redis")

Fail = Literal["closed", "open"]


class ServerClock:
    """The client's estimate of the Redis server's clock.

    Bucket keys must be in KEYS, so the client names the bucket before the
    script runs; the script checks it against TIME and answers with the
    server's time when it is stale. Each reply refreshes the offset, so the
    guess is off by about one round trip, and only a call within that much
    of a window boundary ever needs a second attempt.
    """

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def learn(self, server_ms: int | bytes | str) -> float:
        server_s = int(server_ms) / 1000
        self.offset = server_s - time.time()
        return server_s


class Health:
    """A small circuit breaker: after an outage is detected (retries exhausted),
    calls skip Redis instead of each waiting out the retry budget, and one call
    per ``probe_interval_s`` probes it. Logs once per outage, not per call."""

    def __init__(self, fail: Fail, probe_interval_s: float) -> None:
        self.fail = fail
        self.probe_interval_s = probe_interval_s
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._last_error: BaseException | None = None
        self.local_calls = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def admit(self) -> Literal["retry", "probe", "skip"]:
        """Healthy: try with retries. Down: one bare attempt per probe interval, else skip."""
        if self._down_since is None:
            return "retry"
        now = time.monotonic()
        with self._lock:
            if now < self._next_probe:
                return "skip"
            self._next_probe = now + self.probe_interval_s
            return "probe"

    def failed(self, exc: BaseException) -> StoreUnavailable:
        now = time.monotonic()
        with self._lock:
            self._last_error = exc
            self._next_probe = now + self.probe_interval_s
            if self._down_since is not None:
                return StoreUnavailable(f"Redis unreachable: {exc}")
            self._down_since = now
        then = "counting reservations locally (fail='open')" if self.fail == "open" else "raising"
        log.error("budgetguard: Redis unreachable (%r); %s until it answers", exc, then)
        return StoreUnavailable(f"Redis unreachable: {exc}")

    def skipped(self) -> StoreUnavailable:
        error = StoreUnavailable(
            f"Redis unreachable (last error: {self._last_error!r}); next probe within "
            f"{self.probe_interval_s}s"
        )
        error.__cause__ = self._last_error
        return error

    def recovered(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            outage = time.monotonic() - self._down_since
            self._down_since, local, self.local_calls = None, self.local_calls, 0
        log.warning(
            "budgetguard: Redis answers again after %.1fs; %d reservations were counted "
            "locally meanwhile (charged into Redis as they settle)",
            outage,
            local,
        )
