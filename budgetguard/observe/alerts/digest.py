"""The daily digest: yesterday's spend, calls, top features and users, against a budget.

Every process adds each charged call to its day's totals in the alert state: one
hash per day in the digest's time zone (``digest:<zone>`` series; fields
``total``, ``calls``, ``f:<feature>``, ``u:<tenant>/<user>``), expiring 3 days after
the day began. From ``Digest.hour`` on, the first process to claim the day's marker
reads yesterday's hash and sends it; the marker is confirmed once every sink took
it, else released for the next try (this process's retries or another's tick).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from ..._core.money import nanos_to_usd, usd_to_nanos
from ..._core.policy import Policy
from ..._core.records import CallRecord
from .anomaly import describe, short_usd, subject_of
from .model import Alert, Digest, Once
from .state import HistoryState

__all__ = ["check_digest", "record_digest"]

_DAY_TTL_S = 3 * 86_400
NO_FEATURE = "(none)"


def _series(rule: Digest) -> str:
    return f"digest:{rule.timezone}"


def _day_start(day: date, rule: Digest) -> int:
    return int(datetime.combine(day, time(0), tzinfo=rule.zone).timestamp())


def record_digest(state: HistoryState, rule: Digest, records: Iterable[CallRecord]) -> None:
    counts: dict[int, dict[str, int]] = {}
    starts: dict[date, int] = {}
    for record in records:
        day = datetime.fromtimestamp(record.at, rule.zone).date()
        bucket = starts.get(day)
        if bucket is None:
            bucket = starts[day] = _day_start(day, rule)
        fields = counts.setdefault(bucket, {})
        names = ["total", f"f:{record.feature or NO_FEATURE}"]
        user = subject_of(record, "user")
        if user is not None:
            names.append(f"u:{user}")
        for name in names:
            fields[name] = fields.get(name, 0) + record.cost
        fields["calls"] = fields.get("calls", 0) + 1
    if counts:
        state.add_counts(_series(rule), counts, _DAY_TTL_S)


def _budget(rule: Digest, policy: Policy) -> int | None:
    if rule.budget_usd is not None:
        return usd_to_nanos(rule.budget_usd, field="Digest.budget_usd")
    for limit in policy.limits:
        if limit.scope == "global" and limit.window == "day" and limit.usd is not None:
            return usd_to_nanos(limit.usd)
    return None


def _top(fields: dict[str, int], prefix: str, count: int) -> list[tuple[str, int]]:
    found = [(name[len(prefix) :], v) for name, v in fields.items() if name.startswith(prefix)]
    found.sort(key=lambda item: (-item[1], item[0]))
    return [item for item in found[:count] if item[1] > 0]


def _user_name(subject: str) -> str:
    _, fields = describe("user", subject)
    user = fields.get("user") or subject
    tenant = fields.get("tenant")
    return f"{user} ({tenant})" if tenant else user


def check_digest(
    state: HistoryState, rule: Digest, now: float, policy: Policy, hold_s: float
) -> Once | None:
    """Yesterday's digest, claimed for delivery, once it is due and nobody sent it."""
    local = datetime.fromtimestamp(now, rule.zone)
    if local.hour < rule.hour:
        return None
    yesterday = local.date() - timedelta(days=1)
    marker = f"digest:{rule.timezone}:{yesterday.isoformat()}"
    if not state.claim("digest", marker, hold_s):
        return None  # sent already, or being sent by another process
    try:
        (fields,) = state.counts(_series(rule), [_day_start(yesterday, rule)])
        alert = digest_alert(rule, yesterday, fields, _budget(rule, policy), now)
    except Exception:
        state.release("digest", marker)
        raise
    expires = _day_start(local.date() + timedelta(days=1), rule)
    return Once(alert, "digest", marker, expires, claimed=True)


def digest_alert(
    rule: Digest, day: date, fields: dict[str, int], budget: int | None, now: float
) -> Alert:
    total, calls = fields.get("total", 0), fields.get("calls", 0)
    features = [(name, nanos_to_usd(v)) for name, v in _top(fields, "f:", rule.top)]
    users = [(_user_name(name), nanos_to_usd(v)) for name, v in _top(fields, "u:", rule.top)]
    spent = nanos_to_usd(total)
    parts = [
        f"budgetguard: daily digest for {day.isoformat()} ({rule.timezone}): "
        f"{short_usd(spent)} spent in {calls:,} calls"
    ]
    fraction = None
    if budget:
        fraction = (Decimal(total) / budget).quantize(Decimal("0.0001"), ROUND_HALF_UP)
        percent = (fraction * 100).quantize(Decimal(1), ROUND_HALF_UP)
        parts[0] += f", {percent}% of the {short_usd(nanos_to_usd(budget))} daily budget"
    for title, top in (("Top features", features), ("Top users", users)):
        if top:
            parts.append(f"{title}: " + ", ".join(f"{n} {short_usd(v)}" for n, v in top))
    return Alert(
        kind="digest",
        message=". ".join(parts),
        at=datetime.fromtimestamp(now, UTC),
        amount=spent,
        limit=None if budget is None else nanos_to_usd(budget),
        fraction=fraction,
        key=day.isoformat(),
        window="day",
        calls=calls,
        top_features=tuple(features),
        top_users=tuple(users),
    )
