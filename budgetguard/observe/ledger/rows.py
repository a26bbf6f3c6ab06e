"""One call as the ledger stores it, and one group of a report."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..._core.money import nanos_to_usd
from ..._core.records import CallRecord
from .sql import COLUMNS

__all__ = ["LedgerRow", "ReportRow"]

_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
_INT_FIELDS = (
    "at_us",
    "input_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "estimate_nanos",
    "cost_nanos",
    "latency_us",
)
_TEXT_FIELDS = (
    "outcome",
    "environment",
    "tenant",
    "user",
    "feature",
    "requested_model",
    "model",
    "reservation_id",
    "error",
)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One call as stored: money in nano-USD, time in microseconds since the epoch (UTC)."""

    at_us: int
    outcome: str
    environment: str | None
    tenant: str | None
    user: str | None
    feature: str | None
    tags: Mapping[str, str]
    requested_model: str | None
    model: str | None
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    estimate_nanos: int
    cost_nanos: int
    latency_us: int
    reservation_id: str | None
    error: str | None

    @classmethod
    def from_record(cls, record: CallRecord, environment: str | None = None) -> LedgerRow:
        usage = record.usage
        return cls(
            at_us=int(record.at * 1_000_000),
            outcome=record.outcome,
            environment=environment,
            tenant=record.tenant,
            user=record.user,
            feature=record.feature,
            tags=dict(record.tags),
            requested_model=record.requested_model,
            model=record.model,
            input_tokens=usage.input_tokens if usage else 0,
            cached_tokens=usage.cache_read_tokens if usage else 0,
            cache_write_tokens=usage.cache_write_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            reasoning_tokens=usage.reasoning_tokens if usage else 0,
            estimate_nanos=record.estimate,
            cost_nanos=record.cost,
            latency_us=int(record.latency_s * 1_000_000),
            reservation_id=record.reservation_id,
            error=_note(record),
        )

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> LedgerRow:
        data = dict(zip(COLUMNS, values, strict=True))
        data["user"] = data.pop("user_id")
        data["tags"] = json.loads(data["tags"] or "{}")
        for name in COLUMNS:
            if name.endswith(("_us", "_tokens", "_nanos")):
                data[name] = int(data[name])
        return cls(**data)

    def values(self) -> tuple[Any, ...]:
        """In ``COLUMNS`` order, ready for an INSERT."""
        return (
            self.at_us,
            self.outcome,
            self.environment,
            self.tenant,
            self.user,
            self.feature,
            json.dumps(dict(self.tags), sort_keys=True, separators=(",", ":")),
            self.requested_model,
            self.model,
            self.input_tokens,
            self.cached_tokens,
            self.cache_write_tokens,
            self.output_tokens,
            self.reasoning_tokens,
            self.estimate_nanos,
            self.cost_nanos,
            self.latency_us,
            self.reservation_id,
            self.error,
        )

    def cleaned(self) -> LedgerRow:
        """This row with NUL characters in its texts replaced (self when there are none)."""
        fixed: dict[str, Any] = {
            name: value.replace("\x00", "\ufffd")
            for name in _TEXT_FIELDS
            if isinstance(value := getattr(self, name), str) and "\x00" in value
        }
        if any("\x00" in key or "\x00" in value for key, value in self.tags.items()):
            fixed["tags"] = {
                k.replace("\x00", "\ufffd"): v.replace("\x00", "\ufffd")
                for k, v in self.tags.items()
            }
        return replace(self, **fixed) if fixed else self

    def out_of_range(self) -> str | None:
        """Which number a BIGINT column cannot hold, if any."""
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not _BIGINT_MIN <= value <= _BIGINT_MAX:
                return f"{name}={value} is out of the BIGINT range"
        return None

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.at_us / 1_000_000, UTC)

    @property
    def cost(self) -> Decimal:
        return nanos_to_usd(self.cost_nanos)

    @property
    def overrun_nanos(self) -> int:
        """What the call was billed above its hold (0 when the hold covered it)."""
        return max(0, self.cost_nanos - self.estimate_nanos) if self.outcome != "denied" else 0


def _note(record: CallRecord) -> str | None:
    """The row's ``error`` column: why a call failed or was unpriced; for a fitted call,
    the output cap it was sent with (the ledger has no column of its own for it)."""
    if record.outcome == "fitted":
        capped = f"output capped at {record.output_cap} tokens to fit the budget"
        return capped if record.error is None else f"{capped}; {record.error}"[:2000]
    return None if record.error is None else record.error[:2000]


@dataclass(frozen=True, slots=True)
class ReportRow:
    """Spend of one group (a feature, a user, ...) over the report's period."""

    key: str | None
    calls: int
    ok: int
    downgraded: int
    denied: int
    errors: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_nanos: int
    fitted: int = 0
    """Calls sent with an output cap lowered to fit the budget (``fit_output``)."""
    unpriced: int = 0
    """Calls whose usage could not be read, charged their reservation."""
    overrun_nanos: int = 0
    """What calls were billed above their holds, summed: the figure that says whether
    estimates fall short."""
    over_soft: int = 0
    """Calls a soft limit (``enforce="warn"``) would have refused: they passed."""

    @property
    def cost(self) -> Decimal:
        return nanos_to_usd(self.cost_nanos)

    @classmethod
    def from_values(cls, values: Sequence[Any]) -> ReportRow:
        key, *numbers = values
        return cls(None if key is None else str(key), *(int(n) for n in numbers))
