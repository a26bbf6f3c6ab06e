"""What each alert says: the messages and fields of threshold, exhaustion, soft-limit
and per-call alerts, with amounts in the counter's unit (dollars, tokens, requests)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from ..._core.counters import Counter, CounterStatus, amount_of, soft_limit
from ..._core.money import format_usd, nanos_to_usd
from ..._core.plan import user_tenant
from ..._core.records import CallRecord
from .model import Alert, AlertKind

__all__ = [
    "exhausted_alert",
    "request_alert",
    "soft_alert",
    "soft_cap_alert",
    "threshold_alert",
]


def _tenant_of(counter: Counter) -> str | None:
    """The tenant a counter belongs to: its own subject, or a user counter's tenant."""
    return counter.subject if counter.scope == "tenant" else user_tenant(counter)


def _describe(counter: Counter) -> str:
    if counter.scope == "global":
        return "the global budget"
    tenant = _tenant_of(counter)
    if counter.scope == "user" and tenant is not None:
        return f"user {counter.subject!r} of tenant {tenant!r}"
    return f"{counter.scope} {counter.subject!r}"


def _show(amount: int, unit: str) -> str:
    return format_usd(amount) if unit == "usd" else f"{amount:,} {unit}"


def _value(amount: int, unit: str) -> Decimal:
    return amount_of(unit, amount)


def _counter_alert(
    kind: AlertKind,
    status: CounterStatus,
    now: float,
    says: str,
    *,
    amount: int,
    fraction: Decimal | None = None,
) -> Alert:
    """An alert about one counter's window: ``says`` is the message after the counter's
    name, and the reset time is added to it."""
    counter = status.counter
    resets = None if status.resets_at is None else datetime.fromtimestamp(status.resets_at, UTC)
    when = f"; resets {resets:%Y-%m-%d %H:%M} UTC" if resets else ""
    return Alert(
        kind=kind,
        message=f"budgetguard: {_describe(counter)} {says}{when}",
        at=datetime.fromtimestamp(now, UTC),
        amount=_value(amount, counter.unit),
        limit=_value(counter.limit, counter.unit),
        unit=counter.unit,
        fraction=fraction,
        scope=counter.scope,
        key=counter.subject,
        window=counter.window,
        resets_at=resets,
        tenant=_tenant_of(counter),
    )


def soft_alert(status: CounterStatus, now: float) -> Alert:
    """A soft limit (``enforce="warn"``) passed by what was really spent."""
    counter = status.counter
    limit = soft_limit(counter) or 0
    says = (
        f"passed its soft {counter.window} limit (enforce='warn'): "
        f"{_show(status.spent, counter.unit)} of {_show(limit, counter.unit)} spent; "
        "calls go on, a hard limit would refuse them"
    )
    alert = _counter_alert("over_soft_limit", status, now, says, amount=status.spent)
    return replace(alert, limit=_value(limit, counter.unit))


def soft_cap_alert(record: CallRecord, counter: Counter) -> Alert:
    unit = counter.unit
    asked = record.estimate if unit == "usd" else None
    detail = f" (its worst case {_show(asked, unit)})" if asked is not None else ""
    return Alert(
        kind="over_soft_limit",
        message=(
            f"budgetguard: a {record.model or 'LLM'} call passed the soft per-request cap of "
            f"{_show(counter.limit, unit)}{detail}; it was sent (enforce='warn')"
        ),
        at=datetime.fromtimestamp(record.at, UTC),
        amount=_value(record.estimate if unit == "usd" else 0, unit),
        limit=_value(counter.limit, unit),
        scope="request",
        window="request",
        tenant=record.tenant,
        user=record.user,
        feature=record.feature,
        model=record.model,
        unit=unit,
    )


def threshold_alert(status: CounterStatus, fraction: Decimal, now: float) -> Alert:
    counter = status.counter
    fraction = fraction.normalize()
    percent = f"{(fraction * 100).normalize():f}%"
    says = (
        f"reached {percent} of its {counter.window} budget: "
        f"{_show(status.spent, counter.unit)} of {_show(counter.limit, counter.unit)}"
    )
    return _counter_alert("threshold", status, now, says, amount=status.spent, fraction=fraction)


def exhausted_alert(status: CounterStatus, now: float) -> Alert:
    counter = status.counter
    used = status.spent + status.held
    says = (
        f"is out of its {counter.window} budget: a call was refused with "
        f"{_show(used, counter.unit)} of {_show(counter.limit, counter.unit)} spent or held"
    )
    return _counter_alert("exhausted", status, now, says, amount=used)


def request_alert(record: CallRecord, limit: int) -> Alert:
    who = ", ".join(
        f"{name}={value}"
        for name, value in (
            ("tenant", record.tenant),
            ("user", record.user),
            ("feature", record.feature),
        )
        if value
    )
    return Alert(
        kind="request_cost",
        message=(
            f"budgetguard: one {record.model or 'LLM'} call cost {format_usd(record.cost)} "
            f"(alert above {format_usd(limit)})" + (f" for {who}" if who else "")
        ),
        at=datetime.fromtimestamp(record.at, UTC),
        amount=nanos_to_usd(record.cost),
        limit=nanos_to_usd(limit),
        tenant=record.tenant,
        user=record.user,
        feature=record.feature,
        model=record.model,
    )
