"""What an alert says, and the rules that raise one."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..._core.errors import ConfigurationError
from ..._core.money import UsdLike, usd_to_nanos
from ..._core.policy import Threshold

__all__ = [
    "Alert",
    "AlertKind",
    "AlertRule",
    "CostPerCall",
    "Digest",
    "RequestCost",
    "Spike",
    "SpikeScope",
]

AlertKind = Literal[
    "threshold",
    "exhausted",
    "request_cost",
    "spike",
    "over_soft_limit",
    "cost_per_call",
    "digest",
]
SpikeScope = Literal["tenant", "user", "feature"]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert, as every sink receives it. Amounts are exact ``Decimal`` USD.

    ``threshold``: ``scope``/``key``/``window`` name the counter, ``fraction``
    the threshold crossed, ``amount`` its spend, ``limit`` its limit.
    ``exhausted``: a call was refused by that counter (the budget is gone even if
    spend stopped short of a threshold); ``amount`` is spent + held.
    ``request_cost``: ``amount`` is the call's cost, ``limit`` the rule's
    threshold, attribution fields name the call. ``spike``: ``amount`` is the
    last hour's spend, ``baseline`` the trailing 7-day hourly average.
    A spike per scope (``Spike(scope=...)``) also names it: ``scope`` and ``key``
    (and ``tenant`` / ``user`` / ``feature``).
    ``over_soft_limit``: a call passed a soft limit (``enforce="warn"``) that would
    have refused it; ``amount`` is spent + held with it, ``limit`` the soft limit.
    ``cost_per_call``: ``amount`` is the feature's average cost per call in the
    window, ``baseline`` its average before, ``fraction`` the ratio between them,
    ``calls`` the window's calls. ``digest``: ``amount`` is the day's spend (``key``
    the date), ``limit`` the daily budget if known, ``calls`` the day's calls,
    ``top_features`` / ``top_users`` the biggest spenders, largest first.
    ``unit``: what ``amount`` and ``limit`` count (``"usd"``; ``"tokens"`` or
    ``"requests"`` for those limits).
    """

    kind: AlertKind
    message: str
    at: datetime
    amount: Decimal
    limit: Decimal | None = None
    fraction: Decimal | None = None
    baseline: Decimal | None = None
    scope: str | None = None
    key: str | None = None
    window: str | None = None
    resets_at: datetime | None = None
    tenant: str | None = None
    user: str | None = None
    feature: str | None = None
    model: str | None = None
    unit: str = "usd"
    calls: int | None = None
    top_features: tuple[tuple[str, Decimal], ...] = ()
    top_users: tuple[tuple[str, Decimal], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: amounts as decimal strings, times as ISO 8601."""
        return {name: _plain(value) for name, value in asdict(self).items()}


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime):
        return value.isoformat()
    return value


@dataclass(frozen=True, slots=True)
class RequestCost:
    """Alert when one call costs more than ``usd``."""

    usd: UsdLike

    @property
    def nanos(self) -> int:
        return usd_to_nanos(self.usd, field="RequestCost.usd")


@dataclass(frozen=True, slots=True)
class Spike:
    """Alert when the last hour's spend is ``factor`` x the trailing 7-day hourly average.

    ``scope``: None compares the whole fleet's spend; ``"tenant"``, ``"user"`` or
    ``"feature"`` each tenant's (user's, feature's) own last hour with its own
    average, and names the one that spikes. One ``Spike`` per scope.

    ``min_usd``: never alert below this much spend in the hour (a quiet
    system doubling from 2 cents is not news). Without history the average
    is 0, so the first hour above ``min_usd`` alerts. Checked at most every
    ``check_every_s`` per process; fires at most once per hour, fleet-wide.
    """

    factor: float | Decimal = 3
    min_usd: UsdLike = 1
    check_every_s: float = 60.0
    scope: SpikeScope | None = None

    def __post_init__(self) -> None:
        if Decimal(str(self.factor)) <= 1:
            raise ConfigurationError(f"Spike.factor: must be > 1, got {self.factor!r}")
        if usd_to_nanos(self.min_usd, field="Spike.min_usd") < 0:
            raise ConfigurationError(f"Spike.min_usd: must be >= 0, got {self.min_usd!r}")
        if self.scope not in (None, "tenant", "user", "feature"):
            raise ConfigurationError(
                f"Spike.scope: expected 'tenant', 'user', 'feature' or None, got {self.scope!r}"
            )


_DURATION = re.compile(r"^\s*(\d+)\s*([hd])\s*$")


def hours(value: str | int, *, field: str) -> int:
    """A whole number of hours: ``"24h"``, ``"7d"`` or an int of hours."""
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    else:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            raise ConfigurationError(
                f"{field}: expected hours or days like '24h' or '7d', got {value!r}"
            )
        count = int(match[1]) * (24 if match[2] == "d" else 1)
    if not 1 <= count <= 90 * 24:
        raise ConfigurationError(f"{field}: must be between 1 hour and 90 days, got {value!r}")
    return count


@dataclass(frozen=True, slots=True)
class CostPerCall:
    """Alert when a feature's average cost per call in the last ``window`` is ``ratio``
    x its average over the ``baseline`` before it.

    Both averages need ``min_calls`` charged calls (a handful of calls is noise, not
    an anomaly). Windows are whole hours (``"24h"``, ``"7d"``; history is kept per
    hour). Checked at most every ``check_every_s`` per process; fires at most once
    per feature and ``window``, fleet-wide. Calls without a feature are not compared.
    """

    ratio: float | Decimal = 3
    window: str | int = "24h"
    baseline: str | int = "7d"
    min_calls: int = 20
    check_every_s: float = 60.0

    def __post_init__(self) -> None:
        if Decimal(str(self.ratio)) <= 1:
            raise ConfigurationError(f"CostPerCall.ratio: must be > 1, got {self.ratio!r}")
        hours(self.window, field="CostPerCall.window")
        hours(self.baseline, field="CostPerCall.baseline")
        if isinstance(self.min_calls, bool) or not isinstance(self.min_calls, int):
            raise ConfigurationError(
                f"CostPerCall.min_calls: expected an int, got {self.min_calls!r}"
            )
        if self.min_calls < 1:
            raise ConfigurationError(f"CostPerCall.min_calls: must be >= 1, got {self.min_calls}")

    @property
    def window_hours(self) -> int:
        return hours(self.window, field="CostPerCall.window")

    @property
    def baseline_hours(self) -> int:
        return hours(self.baseline, field="CostPerCall.baseline")


@dataclass(frozen=True, slots=True)
class Digest:
    """One message a day, at ``hour`` (0-23) in ``timezone``: yesterday's spend and
    calls, the ``top`` features and users, against ``budget_usd`` (default: the
    policy's global daily limit, if it has one).

    Sent once per day across the fleet and at least once: a process that starts
    after ``hour`` sends the day's digest if nobody has yet. The day's totals are
    kept in the alert state (Redis hashes with a 3-day TTL), fed by every process.
    """

    hour: int = 9
    timezone: str = "UTC"
    top: int = 5
    budget_usd: UsdLike | None = None
    check_every_s: float = 60.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.hour, bool)
            or not isinstance(self.hour, int)
            or not 0 <= self.hour <= 23
        ):
            raise ConfigurationError(f"Digest.hour: expected 0-23, got {self.hour!r}")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigurationError(
                f"Digest.timezone: unknown time zone {self.timezone!r}"
            ) from None
        if isinstance(self.top, bool) or not isinstance(self.top, int) or not 1 <= self.top <= 50:
            raise ConfigurationError(f"Digest.top: expected 1-50, got {self.top!r}")
        if (
            self.budget_usd is not None
            and usd_to_nanos(self.budget_usd, field="Digest.budget_usd") <= 0
        ):
            raise ConfigurationError(f"Digest.budget_usd: must be > 0, got {self.budget_usd!r}")
        if self.check_every_s <= 0:
            raise ConfigurationError(
                f"Digest.check_every_s: must be > 0, got {self.check_every_s!r}"
            )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(slots=True)
class Once:
    """An alert to deliver once per marker (fleet-wide), retried until it is.

    ``claimed``: the rule claimed the marker itself (before reading what the alert
    says); delivery then skips the claim once."""

    alert: Alert
    tag: str
    marker: str
    expires_at: float | None
    attempt: int = 0
    due: float = 0.0
    claimed: bool = False


AlertRule = Threshold | RequestCost | Spike | CostPerCall | Digest
