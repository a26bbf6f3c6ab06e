"""The rules that read fleet-wide history (``Spike(scope=...)``, ``CostPerCall``,
``Digest``): fed with every batch of charged calls on the alert thread, checked
at most every ``check_every_s``, and - for a digest - on a timer, so a quiet
process still sends it."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

from ..._core.errors import ConfigurationError
from ..._core.policy import Policy
from ..._core.records import CallRecord
from .anomaly import (
    check_cost_per_call,
    check_scoped_spike,
    record_cost_per_call,
    record_scoped_spike,
)
from .digest import check_digest, record_digest
from .model import CostPerCall, Digest, Once, Spike
from .state import AlertState, HistoryState

__all__ = ["History"]

log = logging.getLogger("budgetguard.alerts")

HistoryRule = Spike | CostPerCall | Digest


class History:
    """Records calls into the alert state and checks the history rules."""

    def __init__(self, rules: Sequence[HistoryRule]) -> None:
        scopes = [r.scope for r in rules if isinstance(r, Spike)]
        if len(scopes) != len(set(scopes)):
            raise ConfigurationError("rules: at most one Spike rule per scope")
        if sum(isinstance(r, CostPerCall) for r in rules) > 1:
            # They share one history of cost per call: a second would count every call twice.
            raise ConfigurationError("rules: at most one CostPerCall rule")
        zones = [r.timezone for r in rules if isinstance(r, Digest)]
        if len(zones) != len(set(zones)):
            raise ConfigurationError("rules: at most one Digest rule per time zone")
        self.rules = tuple(rules)
        self._last = [float("-inf")] * len(self.rules)
        self._ticker: threading.Thread | None = None
        self._ticker_pid = 0
        self._stop = threading.Event()
        self._warned = False

    @property
    def tick_s(self) -> float | None:
        """How often a timer should wake the alert thread (None: no digest, no timer)."""
        return min((r.check_every_s for r in self.rules if isinstance(r, Digest)), default=None)

    def evaluate(
        self,
        state: AlertState,
        records: list[CallRecord],
        now: float,
        policy: Policy,
        hold_s: float,
        *,
        force: bool = False,
    ) -> list[Once]:
        """Add ``records`` (charged calls) to the history, then check the rules due
        (``force``: every rule)."""
        if not self.rules:
            return []
        if not hasattr(state, "add_counts"):
            if not self._warned:
                self._warned = True
                log.error("budgetguard: %r keeps no history (add_counts) for %r", state, self.rules)
            return []
        history: HistoryState = state  # type: ignore[assignment]
        alerts: list[Once] = []
        for n, rule in enumerate(self.rules):
            try:
                if records:
                    _record(history, rule, records)
                if not force and now - self._last[n] < rule.check_every_s:
                    continue
                self._last[n] = now
                alerts += _check(history, rule, now, policy, hold_s)
            except Exception as exc:
                log.error("budgetguard: alert history unavailable for %r (%r)", rule, exc)
        return alerts

    # -- the timer ---------------------------------------------------------------------
    def start_ticker(self, tick: Callable[[], object]) -> None:
        """A daemon thread calling ``tick`` every ``tick_s`` (again after a fork)."""
        every = self.tick_s
        if every is None or self._stop.is_set():
            return
        if self._ticker is not None and self._ticker_pid == os.getpid():
            return
        self._ticker_pid = os.getpid()
        self._ticker = threading.Thread(
            target=self._run, args=(tick, every), name="budgetguard-alerts-timer", daemon=True
        )
        self._ticker.start()

    def _run(self, tick: Callable[[], object], every: float) -> None:
        while not self._stop.wait(every):
            tick()

    def stop(self) -> None:
        self._stop.set()


def _record(state: HistoryState, rule: HistoryRule, records: list[CallRecord]) -> None:
    if isinstance(rule, Spike):
        record_scoped_spike(state, rule, records)
    elif isinstance(rule, CostPerCall):
        record_cost_per_call(state, rule, records)
    else:
        record_digest(state, rule, records)


def _check(
    state: HistoryState, rule: HistoryRule, now: float, policy: Policy, hold_s: float
) -> list[Once]:
    if isinstance(rule, Spike):
        return check_scoped_spike(state, rule, now)
    if isinstance(rule, CostPerCall):
        return check_cost_per_call(state, rule, now)
    once = check_digest(state, rule, now, policy, hold_s)
    return [] if once is None else [once]
