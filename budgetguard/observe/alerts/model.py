"""What an alert says, and the rules that raise one."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from ..._core.errors import ConfigurationError
from ..._core.money import UsdLike, usd_to_nanos
from ..._core.policy import Threshold

__all__ = ["Alert", "AlertKind", "AlertRule", "RequestCost", "Spike"]

AlertKind = Literal["threshold", "exhausted", "request_cost", "spike", "over_soft_limit"]


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
    ``over_soft_limit``: a call passed a soft limit (``enforce="warn"``) that would
    have refused it; ``amount`` is spent + held with it, ``limit`` the soft limit.
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: amounts as decimal strings, times as ISO 8601."""
        return {name: _plain(value) for name, value in asdict(self).items()}


def _plain(value: Any) -> Any:
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

    ``min_usd``: never alert below this much spend in the hour (a quiet
    system doubling from 2 cents is not news). Without history the average
    is 0, so the first hour above ``min_usd`` alerts. Checked at most every
    ``check_every_s`` per process; fires at most once per hour, fleet-wide.
    """

    factor: float | Decimal = 3
    min_usd: UsdLike = 1
    check_every_s: float = 60.0

    def __post_init__(self) -> None:
        if Decimal(str(self.factor)) <= 1:
            raise ConfigurationError(f"Spike.factor: must be > 1, got {self.factor!r}")
        if usd_to_nanos(self.min_usd, field="Spike.min_usd") < 0:
            raise ConfigurationError(f"Spike.min_usd: must be >= 0, got {self.min_usd!r}")


AlertRule = Threshold | RequestCost | Spike
