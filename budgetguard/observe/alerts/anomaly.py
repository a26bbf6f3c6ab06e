"""Anomalies per tenant, user and feature: a feature whose cost per call jumps
(``CostPerCall``) and a tenant, user or feature whose spend spikes (``Spike(scope=...)``).

Both keep their history in the alert state (``HistoryState.add_counts``), so with
Redis every process feeds, and every process reads, the same numbers:

- ``cpc``: per hour, ``c:<feature>`` nano-USD and ``n:<feature>`` calls, kept for
  the window plus the baseline;
- ``spike:<scope>:5m``: per 5-minute slot, nano-USD per subject, kept 2 hours (the
  last hour);
- ``spike:<scope>:1h``: per hour, nano-USD per subject, kept 8 days (the baseline),
  read only for the subjects whose last hour is worth a look.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import quote, unquote

from ..._core.money import format_usd, nanos_to_usd, usd_to_nanos
from ..._core.records import CallRecord
from .model import Alert, CostPerCall, Once, Spike
from .state import HOUR_SLOTS, SLOT_S, HistoryState

__all__ = [
    "check_cost_per_call",
    "check_scoped_spike",
    "record_cost_per_call",
    "record_scoped_spike",
    "short_usd",
    "subject_of",
]

HOUR = 3600
BASELINE_HOURS = 7 * 24
_SPIKE_RECENT_TTL_S = 2 * HOUR
_SPIKE_HOURLY_TTL_S = 8 * 86_400


def short_usd(amount: Decimal) -> str:
    """Dollars for people: cents from $1 up, else three significant digits ($0.0231)."""
    if 0 < amount < 1:
        digits = max(2, -amount.adjusted() + 2)
        rounded = amount.quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)
        if rounded < 1:
            whole, _, cents = f"{rounded:f}".rstrip("0").partition(".")
            return f"${whole}.{cents.ljust(2, '0')}"
    return f"${amount.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"


def _ratio(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1'), ROUND_HALF_UP)}x"


def _average(nanos: int, calls: int) -> Decimal:
    """Exact to the nano-USD (rounded half up): what an alert carries."""
    return nanos_to_usd(int((Decimal(nanos) / calls).to_integral_value(ROUND_HALF_UP)))


def _span(hours: int) -> str:
    if hours % 24 == 0:
        days = hours // 24
        return "day" if days == 1 else f"{days} days"
    return "hour" if hours == 1 else f"{hours} hours"


# -- cost per call -------------------------------------------------------------------


def record_cost_per_call(
    state: HistoryState, rule: CostPerCall, records: Iterable[CallRecord]
) -> None:
    counts: dict[int, dict[str, int]] = {}
    for record in records:
        if record.feature is None:
            continue
        hour = int(record.at) // HOUR * HOUR
        fields = counts.setdefault(hour, {})
        fields[f"c:{record.feature}"] = fields.get(f"c:{record.feature}", 0) + record.cost
        fields[f"n:{record.feature}"] = fields.get(f"n:{record.feature}", 0) + 1
    if counts:
        ttl = (rule.window_hours + rule.baseline_hours + 1) * HOUR
        state.add_counts("cpc", counts, ttl)


def _sum(buckets: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for fields in buckets:
        for name, value in fields.items():
            total[name] = total.get(name, 0) + value
    return total


def check_cost_per_call(state: HistoryState, rule: CostPerCall, now: float) -> list[Once]:
    """The window is the current hour and the ``window_hours - 1`` before it; the
    baseline the ``baseline_hours`` before the window."""
    current = int(now) // HOUR * HOUR
    window = [current - n * HOUR for n in range(rule.window_hours)]
    recent = _sum(state.counts("cpc", window))
    features = [
        name[2:]
        for name, calls in recent.items()
        if name.startswith("n:") and calls >= rule.min_calls
    ]
    if not features:
        return []
    fields = [f"{kind}:{feature}" for feature in features for kind in ("c", "n")]
    start = current - rule.window_hours * HOUR
    before = [start - n * HOUR for n in range(1, rule.baseline_hours + 1)]
    baseline = _sum(state.counts("cpc", before, fields))
    ratio = Decimal(str(rule.ratio))
    period = rule.window_hours * HOUR
    alerts: list[Once] = []
    for feature in features:
        cost, calls = recent.get(f"c:{feature}", 0), recent[f"n:{feature}"]
        base_cost, base_calls = baseline.get(f"c:{feature}", 0), baseline.get(f"n:{feature}", 0)
        if base_calls < rule.min_calls or base_cost <= 0:
            continue
        # cost / calls >= ratio x base_cost / base_calls, in exact integers and Decimals
        if Decimal(cost * base_calls) < ratio * base_cost * calls:
            continue
        seen = Decimal(cost * base_calls) / (base_cost * calls)
        now_avg, was_avg = _average(cost, calls), _average(base_cost, base_calls)
        span = "hour" if rule.window_hours == 1 else f"{rule.window_hours} hours"
        alert = Alert(
            kind="cost_per_call",
            message=(
                f"budgetguard: {feature} average cost per call increased {_ratio(seen)}, "
                f"from {short_usd(was_avg)} to {short_usd(now_avg)}, in the last {span} "
                f"({calls:,} calls; {base_calls:,} in the {_span(rule.baseline_hours)} before)"
            ),
            at=datetime.fromtimestamp(now, UTC),
            amount=now_avg,
            baseline=was_avg,
            fraction=seen.quantize(Decimal("0.01"), ROUND_HALF_UP),
            scope="feature",
            key=feature,
            feature=feature,
            window=f"{rule.window_hours}h",
            calls=calls,
        )
        slot = int(now) // period * period
        marker = f"cpc:{feature}:{rule.window_hours}h:{slot}"
        alerts.append(Once(alert, "cpc", marker, slot + period))
    return alerts


# -- spikes per tenant, user, feature --------------------------------------------------


def subject_of(record: CallRecord, scope: str) -> str | None:
    """Who the record's spend counts for: users are per tenant (``acme/u-1``, quoted)."""
    if scope == "tenant":
        return record.tenant
    if scope == "feature":
        return record.feature
    if record.user is None:
        return None
    return f"{quote(record.tenant or '', safe='')}/{quote(record.user, safe='')}"


def describe(scope: str, subject: str) -> tuple[str, dict[str, str | None]]:
    """How a message names a subject, and the alert fields it fills."""
    if scope != "user":
        return f"{scope} {subject!r}", {scope: subject}
    tenant, user = (unquote(part) for part in subject.split("/", 1))
    if not tenant:
        return f"user {user!r}", {"user": user}
    return f"user {user!r} of tenant {tenant!r}", {"user": user, "tenant": tenant}


def record_scoped_spike(state: HistoryState, rule: Spike, records: Iterable[CallRecord]) -> None:
    scope = rule.scope or "tenant"
    slots: dict[int, dict[str, int]] = {}
    hours: dict[int, dict[str, int]] = {}
    for record in records:
        subject = subject_of(record, scope)
        if subject is None:
            continue
        for into, size in ((slots, SLOT_S), (hours, HOUR)):
            fields = into.setdefault(int(record.at) // size * size, {})
            fields[subject] = fields.get(subject, 0) + record.cost
    if slots:
        state.add_counts(f"spike:{scope}:5m", slots, _SPIKE_RECENT_TTL_S)
        state.add_counts(f"spike:{scope}:1h", hours, _SPIKE_HOURLY_TTL_S)


def check_scoped_spike(state: HistoryState, rule: Spike, now: float) -> list[Once]:
    """Last hour: the current 5-minute slot and the 11 before. Baseline: the 168
    whole hours before the hour the last hour started in."""
    scope = rule.scope or "tenant"
    current = int(now) // SLOT_S * SLOT_S
    recent = _sum(
        state.counts(f"spike:{scope}:5m", [current - n * SLOT_S for n in range(HOUR_SLOTS)])
    )
    floor = usd_to_nanos(rule.min_usd)
    candidates = sorted(s for s, spent in recent.items() if spent > 0 and spent >= floor)
    if not candidates:
        return []
    end = (current - (HOUR_SLOTS - 1) * SLOT_S) // HOUR * HOUR
    before = [end - n * HOUR for n in range(1, BASELINE_HOURS + 1)]
    history = _sum(state.counts(f"spike:{scope}:1h", before, candidates))
    factor = Decimal(str(rule.factor))
    hour = int(now) // HOUR * HOUR
    alerts: list[Once] = []
    for subject in candidates:
        last_hour = recent[subject]
        baseline = Decimal(history.get(subject, 0)) / BASELINE_HOURS
        if last_hour < factor * baseline:
            continue
        average = int(baseline)
        compared = (
            "with no history (nothing spent in the 7 days before)"
            if baseline == 0
            else f"{_ratio(Decimal(last_hour) / baseline)} its 7-day hourly average "
            f"({format_usd(average)})"
        )
        name, fields = describe(scope, subject)
        alert = Alert(
            kind="spike",
            message=(
                f"budgetguard: spend spike for {name}: {format_usd(last_hour)} in the last "
                f"hour, {compared}"
            ),
            at=datetime.fromtimestamp(now, UTC),
            amount=nanos_to_usd(last_hour),
            baseline=nanos_to_usd(average),
            fraction=factor,
            scope=scope,
            key=fields.get(scope) or subject,
            window="1h",
            tenant=fields.get("tenant"),
            user=fields.get("user"),
            feature=fields.get("feature"),
        )
        alerts.append(Once(alert, "spike", f"spike:{scope}:{subject}:{hour}", hour + HOUR))
    return alerts
