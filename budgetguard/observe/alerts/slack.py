"""Slack messages: Block Kit (a header, the sentence, the numbers as fields, the
digest's top spenders) with the plain ``text`` kept as the fallback that
notifications, Mattermost and Discord's Slack-compatible endpoints show."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .anomaly import short_usd
from .model import Alert

__all__ = ["slack_payload"]

TITLES = {
    "threshold": "Budget threshold reached",
    "exhausted": "Budget exhausted",
    "request_cost": "Expensive LLM call",
    "spike": "Spend spike",
    "over_soft_limit": "Soft limit passed",
    "cost_per_call": "Cost per call anomaly",
    "digest": "Daily LLM spend digest",
}
_HEADER_MAX = 150
_TEXT_MAX = 3000
_FIELD_MAX = 2000
_FIELDS_MAX = 10


def _escape(text: str) -> str:
    """Slack mrkdwn reserves ``&``, ``<`` and ``>`` (links, mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _mrkdwn(text: str, most: int = _TEXT_MAX) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(text, most)}


def _amount(alert: Alert, value: Decimal) -> str:
    return short_usd(value) if alert.unit == "usd" else f"{value:,} {alert.unit}"


def _fields(alert: Alert) -> list[tuple[str, str]]:
    amount_name = {
        "cost_per_call": "Average cost per call",
        "digest": "Spent",
        "spike": "Last hour",
        "request_cost": "Cost",
    }.get(alert.kind, "Spent")
    limit_name = {"digest": "Daily budget", "request_cost": "Alert above"}.get(alert.kind, "Limit")
    baseline_name = "Before" if alert.kind == "cost_per_call" else "7-day hourly average"
    found: list[tuple[str, str]] = [(amount_name, _amount(alert, alert.amount))]
    if alert.limit is not None:
        found.append((limit_name, _amount(alert, alert.limit)))
    if alert.baseline is not None:
        found.append((baseline_name, _amount(alert, alert.baseline)))
    if alert.fraction is not None and alert.kind in ("threshold", "digest"):
        name = "Threshold" if alert.kind == "threshold" else "Of the budget"
        found.append((name, f"{(alert.fraction * 100).normalize():f}%"))
    if alert.calls is not None:
        found.append(("Calls", f"{alert.calls:,}"))
    if alert.scope and alert.key and alert.kind != "digest":
        found.append((alert.scope.capitalize(), alert.key))
    for name in ("tenant", "user", "feature", "model"):
        value = getattr(alert, name)
        if value and not (alert.scope == name and alert.key == value):
            found.append((name.capitalize(), value))
    if alert.window:
        digest = alert.kind == "digest"
        found.append(("Day", alert.key or "") if digest else ("Window", alert.window))
    if alert.resets_at is not None:
        found.append(("Resets", f"{alert.resets_at:%Y-%m-%d %H:%M} UTC"))
    return found


def slack_payload(alert: Alert) -> dict[str, Any]:
    """``{"text": message, "blocks": [...]}`` for a Slack incoming webhook."""
    title = TITLES.get(alert.kind, "budgetguard alert")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, _HEADER_MAX)}},
        {"type": "section", "text": _mrkdwn(_escape(alert.message))},
    ]
    fields = [
        _mrkdwn(f"*{_escape(name)}*\n{_escape(value)}", _FIELD_MAX)
        for name, value in _fields(alert)[:_FIELDS_MAX]
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    for name, top in (("Top features", alert.top_features), ("Top users", alert.top_users)):
        if top:
            lines = "\n".join(f"• {_escape(who)}: {short_usd(v)}" for who, v in top)
            blocks.append({"type": "section", "text": _mrkdwn(f"*{name}*\n{lines}")})
    blocks.append(
        {
            "type": "context",
            "elements": [_mrkdwn(f"budgetguard · {alert.kind} · {alert.at:%Y-%m-%d %H:%M} UTC")],
        }
    )
    return {"text": alert.message, "blocks": blocks}
