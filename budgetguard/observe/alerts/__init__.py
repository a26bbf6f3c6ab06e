"""Alerts: tell people in time - before the budget is gone, not on the invoice.

``Alerts`` (``listener``) is a listener that evaluates rules (``model``:
``Threshold``, ``RequestCost``, ``Spike``) off the request path and hands each
``Alert`` to its sinks (``sinks``: log, callable, webhook); ``state`` keeps
the fleet-wide dedupe markers and spend history.
"""

from __future__ import annotations

from .listener import Alerts
from .model import Alert, AlertKind, AlertRule, RequestCost, Spike
from .sinks import AlertSink, LogSink, Webhook
from .state import AlertState, MemoryAlertState, RedisAlertState

__all__ = [
    "Alert",
    "AlertKind",
    "AlertRule",
    "AlertSink",
    "AlertState",
    "Alerts",
    "LogSink",
    "MemoryAlertState",
    "RedisAlertState",
    "RequestCost",
    "Spike",
    "Webhook",
]
