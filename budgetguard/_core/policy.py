"""Policies: which limits hold, and what to do when a call does not fit.

Frozen pydantic models, so a bad policy fails at construction with a message
naming the field (``limits.0.usd: must be >= 0``), and a policy can be shared
by every thread without copying.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .money import MAX_NANOS, nanos_to_usd, to_decimal, usd_to_nanos
from .windows import Window

__all__ = ["Limit", "OnExceed", "Policy", "Scope", "Threshold"]

Scope = Literal["global", "tenant", "user", "feature", "model", "run", "request"]
OnExceed = Literal["raise", "downgrade", "block"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


MAX_USD = nanos_to_usd(MAX_NANOS)
"""The largest limit a store can hold exactly ($9,007,199.254740991)."""
MAX_SECONDS = 30 * 86_400.0
"""Leases and waits are bounded: a month is longer than any LLM call."""


def _usd(value: Any, field: str) -> Decimal:
    try:
        amount = to_decimal(value, field=field)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None
    if amount < 0:
        raise ValueError(f"{field}: must be >= 0, got {amount}")
    return amount


def _seconds(value: float, field: str, *, positive: bool) -> float:
    if not math.isfinite(value) or value > MAX_SECONDS:
        raise ValueError(f"{field}: must be a finite number of seconds <= {MAX_SECONDS:g}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{field}: must be {'> 0' if positive else '>= 0'}, got {value}")
    return value


class Limit(BaseModel):
    """At most ``usd`` per ``window`` for each value of ``scope`` (or only for ``key``).

    ``Limit(scope="user", usd=5, window="day")`` gives every user $5 a day;
    ``Limit(scope="feature", key="summarize", usd=20, window="day")`` caps one
    feature; ``Limit(scope="request", usd=0.10)`` caps any single call and
    ``Limit(scope="run", usd=1)`` each ``spend_limit`` block. Calendar windows
    follow the policy's time zone. Without a window a limit never resets
    (``"total"``), except request and run limits, whose window is their scope.
    A call without the scope's attribution (no ``user=``) is not subject to
    that scope's limits.
    """

    model_config = _FROZEN

    scope: Scope
    usd: Decimal
    key: str | None = None
    window: Window | None = None

    def __init__(self, scope: Scope | None = None, /, **data: Any) -> None:
        if scope is not None:
            data["scope"] = scope
        super().__init__(**data)

    @field_validator("usd", mode="before")
    @classmethod
    def _check_usd(cls, value: Any) -> Decimal:
        amount = _usd(value, "usd")
        if amount > MAX_USD:
            raise ValueError(
                f"usd: at most ${MAX_USD} (2**53-1 nano-USD, what every store holds exactly), "
                f"got {amount}"
            )
        return amount

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("key: must be a non-empty string or None")
        return value

    @model_validator(mode="after")
    def _check_window(self) -> Limit:
        own = {"request": "request", "run": "run"}.get(self.scope)
        if self.window is None:
            if own is None:
                warnings.warn(
                    f"Limit(scope={self.scope!r}, usd={self.usd}) has no window, so it never "
                    "resets; pass window='day' (or 'month', ...), or window='total' to say so",
                    UserWarning,
                    stacklevel=4,
                )
            object.__setattr__(self, "window", own or "total")
        elif own is not None and self.window != own:
            raise ValueError(
                f"window: a {self.scope} limit has window {own!r}, not {self.window!r}"
            )
        elif own is None and self.window in ("request", "run"):
            raise ValueError(f"window: {self.window!r} needs scope={self.window!r}")
        if self.scope in ("global", "run", "request") and self.key is not None:
            raise ValueError(f"key: a {self.scope} limit takes no key")
        return self

    @property
    def nanos(self) -> int:
        return usd_to_nanos(self.usd)

    @property
    def resolved_window(self) -> Window:
        assert self.window is not None  # set by the validator
        return self.window


class Threshold(BaseModel):
    """Alert when spend crosses ``fraction`` of a limit (``Threshold(0.8)`` = 80%)."""

    model_config = _FROZEN

    fraction: Decimal
    scope: Scope | None = None

    def __init__(self, fraction: Any = None, /, **data: Any) -> None:
        if fraction is not None:
            data["fraction"] = fraction
        super().__init__(**data)

    @field_validator("fraction", mode="before")
    @classmethod
    def _check_fraction(cls, value: Any) -> Decimal:
        amount = _usd(value, "fraction")
        if amount == 0:
            raise ValueError("fraction: must be > 0 (0.8 means 80% of the limit)")
        return amount


class Policy(BaseModel):
    """Limits plus what to do on overspend.

    ``on_exceed``: ``"raise"`` raises ``BudgetExceeded``; ``"downgrade"`` walks
    the ``downgrade`` chain (``{"gpt-4o": "gpt-4o-mini"}``) until the worst
    case fits, else raises; ``"block"`` waits up to ``block_timeout`` seconds
    for budget to free up (holds settling, a window rolling over), else raises.
    ``lease_s`` bounds how long a crashed process can keep budget held; it
    must exceed your longest LLM call (streams included).
    """

    model_config = _FROZEN

    limits: tuple[Limit, ...] = ()
    on_exceed: OnExceed = "raise"
    downgrade: Mapping[str, str] = Field(default_factory=dict)
    alerts: tuple[Threshold, ...] = ()
    block_timeout: float = 30.0
    lease_s: float = 600.0
    timezone: str = "UTC"

    @field_validator("block_timeout")
    @classmethod
    def _check_block_timeout(cls, value: float) -> float:
        return _seconds(value, "block_timeout", positive=False)

    @field_validator("lease_s")
    @classmethod
    def _check_lease(cls, value: float) -> float:
        return _seconds(value, "lease_s", positive=True)

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone {value!r}") from None
        return value

    @field_validator("downgrade")
    @classmethod
    def _check_downgrade(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        for start in value:
            seen = [start]
            model = start
            while model in value:
                model = value[model]
                if model in seen:
                    chain = " -> ".join([*seen, model])
                    raise ValueError(f"downgrade: the chain loops ({chain})")
                seen.append(model)
        return dict(value)

    def downgrade_chain(self, model: str) -> list[str]:
        """Cheaper models to try after ``model``, in order."""
        chain: list[str] = []
        while model in self.downgrade:
            model = self.downgrade[model]
            chain.append(model)
        return chain
