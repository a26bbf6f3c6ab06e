"""Alerts: tell people in time - before the budget is gone, not on the invoice.

``Alerts`` (``listener``) is a listener that evaluates rules (``model``:
``Threshold``, ``RequestCost``, ``Spike``, ``CostPerCall``, ``Digest``) off the
request path and hands each ``Alert`` to its sinks (``sinks``: log, callable,
webhook with Slack Block Kit, ``slack``); ``state`` keeps the fleet-wide dedupe
markers and spend history; ``history``, ``anomaly`` and ``digest`` evaluate the
rules that compare tenants, users and features with their past.
"""

from __future__ import annotations

from .listener import Alerts
from .model import Alert, AlertKind, AlertRule, CostPerCall, Digest, RequestCost, Spike
from .sinks import AlertSink, LogSink, Webhook
from .slack import slack_payload
from .state import AlertState, HistoryState, MemoryAlertState, RedisAlertState

__all__ = [
    "Alert",
    "AlertKind",
    "AlertRule",
    "AlertSink",
    "AlertState",
    "Alerts",
    "CostPerCall",
    "Digest",
    "HistoryState",
    "LogSink",
    "MemoryAlertState",
    "RedisAlertState",
    "RequestCost",
    "Spike",
    "Webhook",
    "slack_payload",
]
