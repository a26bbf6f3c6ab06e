"""Policies: which limits hold, and what to do when a call does not fit.

Frozen pydantic models, so a bad policy fails at construction with a message
naming the field (``limits.0.usd: must be >= 0``), and a policy can be shared
by every thread without copying.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .money import MAX_NANOS, nanos_to_usd, to_decimal, usd_to_nanos
from .windows import Window

__all__ = ["Enforce", "Limit", "OnExceed", "Policy", "Scope", "Threshold", "Unit", "check_key"]

Scope = Literal["global", "tenant", "user", "feature", "model", "run", "request"]
OnExceed = Literal["raise", "downgrade", "block"]
Unit = Literal["usd", "tokens", "requests"]
Enforce = Literal["refuse", "warn"]
UNITS: tuple[Unit, ...] = ("usd", "tokens", "requests")
PLAN_SCOPES = frozenset({"tenant", "user", "request"})
"""What a plan can hold: it is assigned to a tenant or a user, so its limits are theirs."""

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


MAX_TOKENS = 10_000_000
"""No model writes more output than this in one call."""


def _tokens(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{field}: expected a whole number of tokens, got {value!r}")
    if not 0 < value <= MAX_TOKENS:
        raise ValueError(f"{field}: must be between 1 and {MAX_TOKENS:,}, got {value}")
    return value


MAX_COUNT = 2**53 - 1
"""The largest token or request limit a store holds exactly."""


def _count(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{field}: expected a whole number, got {value!r}")
    if not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{field}: must be between 0 and 2**53-1, got {value}")
    return value


def check_key(value: str, field: str = "key") -> str:
    """A subject name (tenant, user, feature, model, plan): non-empty, printable."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: must be a non-empty string, got {value!r}")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"{field}: must not contain control characters, got {value!r}")
    if len(value) > 512:
        raise ValueError(f"{field}: at most 512 characters, got {len(value)}")
    return value


class Limit(BaseModel):
    """At most ``usd`` (and/or ``tokens``, ``requests``) per ``window`` for each value of
    ``scope`` (or only for ``key``).

    ``Limit(scope="user", usd=5, window="day")`` gives every user $5 a day;
    ``Limit(scope="feature", key="summarize", usd=20, window="day")`` caps one
    feature; ``Limit(scope="request", usd=0.10)`` caps any single call and
    ``Limit(scope="run", usd=1)`` each ``spend_limit`` block. ``tokens`` counts input
    plus output tokens (held at the worst case, settled to the actual), ``requests``
    the calls admitted; a limit may carry several amounts and a call must fit all.
    ``enforce="warn"`` makes it a soft limit: a call it would refuse passes and is
    recorded ``outcome="over_soft_limit"`` (shadow-run a limit before it bites).
    Calendar windows follow the policy's time zone. Without a window a limit never
    resets (``"total"``), except request and run limits, whose window is their scope.
    A call without the scope's attribution (no ``user=``) is not subject to that
    scope's limits.
    """

    model_config = _FROZEN

    scope: Scope
    usd: Decimal | None = None
    key: str | None = None
    window: Window | None = None
    tokens: int | None = None
    requests: int | None = None
    enforce: Enforce = "refuse"

    def __init__(self, scope: Scope | None = None, /, **data: Any) -> None:
        if scope is not None:
            data["scope"] = scope
        super().__init__(**data)

    @field_validator("usd", mode="before")
    @classmethod
    def _check_usd(cls, value: Any) -> Decimal | None:
        if value is None:
            return None
        amount = _usd(value, "usd")
        if amount > MAX_USD:
            raise ValueError(
                f"usd: at most ${MAX_USD} (2**53-1 nano-USD, what every store holds exactly), "
                f"got {amount}"
            )
        return amount

    @field_validator("tokens", "requests", mode="before")
    @classmethod
    def _check_count(cls, value: Any, info: Any) -> int | None:
        return _count(value, info.field_name)

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str | None) -> str | None:
        if value is not None:
            check_key(value)
        return value

    @model_validator(mode="after")
    def _check_window(self) -> Limit:
        if self.usd is None and self.tokens is None and self.requests is None:
            raise ValueError("usd: a limit needs an amount: usd=, tokens= or requests=")
        own = {"request": "request", "run": "run"}.get(self.scope)
        if self.window is None:
            if own is None:
                warnings.warn(
                    f"Limit(scope={self.scope!r}, {self._amounts_text()}) has no window, so "
                    "it never resets; pass window='day' (or 'month', ...), or window='total' "
                    "to say so",
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
        if self.scope == "request" and self.requests is not None:
            raise ValueError("requests: a request limit caps one call; use usd= or tokens=")
        return self

    def _amounts_text(self) -> str:
        return ", ".join(f"{unit}={getattr(self, unit)}" for unit in self.units)

    @property
    def units(self) -> tuple[Unit, ...]:
        """The amounts this limit sets, in the order usd, tokens, requests."""
        return tuple(unit for unit in UNITS if getattr(self, unit) is not None)

    def amount(self, unit: Unit) -> int | None:
        """The limit in ``unit``'s store integers (nano-USD, tokens, requests)."""
        if unit == "usd":
            return None if self.usd is None else usd_to_nanos(self.usd)
        value: int | None = getattr(self, unit)
        return value

    @property
    def nanos(self) -> int | None:
        """The dollar amount in nano-USD (None: this limit sets no dollar amount)."""
        return self.amount("usd")

    @property
    def soft(self) -> bool:
        return self.enforce == "warn"

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

    ``max_output_tokens``: the output cap sent with a call that sets none (in
    the SDK's own field), and held, so the provider can never bill more output
    than was reserved; an int, or ``{model: cap}`` with ``"*"`` for the rest.
    ``fit_output``: a call whose worst case does not fit is sent with its output
    cap lowered to what fits (never below ``min_output_tokens``) instead of
    being refused (``outcome="fitted"``). ``contention_wait_s``: how long a call
    refused only because of holds of calls in flight (spent + requested still
    fits the limit) waits for them to settle before the policy acts.
    """

    model_config = _FROZEN

    limits: tuple[Limit, ...] = ()
    on_exceed: OnExceed = "raise"
    downgrade: Mapping[str, str] = Field(default_factory=dict)
    alerts: tuple[Threshold, ...] = ()
    block_timeout: float = 30.0
    lease_s: float = 600.0
    timezone: str = "UTC"
    max_output_tokens: int | Mapping[str, int] | None = None
    fit_output: bool = False
    plans: Mapping[str, tuple[Limit, ...]] = Field(default_factory=dict)
    """Named sets of tenant, user and request limits (``{"free": [...], "pro": [...]}``):
    ``bg.set_plan(tenant="acme", plan="pro")`` puts a tenant (or a user) on one, in
    the store, so every process applies it."""
    enforce: Enforce = "refuse"
    """``"warn"``: every limit is soft (a shadow run of the whole policy): calls it
    would refuse pass and are recorded ``outcome="over_soft_limit"``."""
    min_output_tokens: int = 256
    """The smallest output cap ``fit_output`` sends (by default 256, or the smallest
    ``max_output_tokens`` when lower)."""
    contention_wait_s: float = 10.0
    server_tool_tokens: int = 60_000
    """Input tokens held per server-side tool use (a web search's results, a fetched
    page, code output): what the provider bills as input that no request shows. On the
    recorded corpus a web search billed a median 13,551 input tokens, 40,360 at p90 and
    55,855 at most (Claude Sonnet 4.5, 5 searches over a 203k-token prompt)."""
    unbounded_input: Literal["allowance", "refuse"] = "allowance"
    """A call whose input nothing bounds: hold ``server_tool_tokens`` for it and charge
    the real bill (an overrun, logged and counted), or refuse it (``UnboundedInput``)."""

    @field_validator("max_output_tokens", mode="before")
    @classmethod
    def _check_max_output(cls, value: Any) -> int | Mapping[str, int] | None:
        if value is None:
            return None
        if isinstance(value, Mapping):
            caps: dict[str, int] = {}
            for model, cap in value.items():
                if not isinstance(model, str) or not model:
                    raise ValueError(
                        f"max_output_tokens: keys are model names or '*', got {model!r}"
                    )
                caps[model] = _tokens(cap, f"max_output_tokens[{model!r}]")
            return caps
        return _tokens(value, "max_output_tokens")

    @field_validator("plans", mode="before")
    @classmethod
    def _check_plans(cls, value: Any) -> Mapping[str, tuple[Limit, ...]]:
        if not isinstance(value, Mapping):
            raise ValueError(f"plans: expected {{name: [Limit, ...]}}, got {value!r}")
        plans: dict[str, tuple[Limit, ...]] = {}
        for name, limits in value.items():
            check_key(name, "plans")
            if isinstance(limits, Limit | Mapping) or not isinstance(limits, Iterable):
                raise ValueError(f"plans[{name!r}]: expected a list of Limit, got {limits!r}")
            checked = []
            for n, given in enumerate(limits):
                limit = Limit.model_validate(given) if isinstance(given, Mapping) else given
                if not isinstance(limit, Limit):
                    raise ValueError(f"plans[{name!r}][{n}]: expected a Limit, got {limit!r}")
                if limit.scope not in PLAN_SCOPES:
                    raise ValueError(
                        f"plans[{name!r}][{n}].scope: a plan holds tenant, user and request "
                        f"limits (it is assigned to a tenant or a user), not {limit.scope!r}"
                    )
                if limit.key is not None:
                    raise ValueError(
                        f"plans[{name!r}][{n}].key: a plan's limits apply to whoever is on "
                        "the plan; drop key="
                    )
                checked.append(limit)
            plans[name] = tuple(checked)
        return plans

    @field_validator("min_output_tokens", mode="before")
    @classmethod
    def _check_min_output(cls, value: Any) -> int:
        return _tokens(value, "min_output_tokens")

    @field_validator("server_tool_tokens", mode="before")
    @classmethod
    def _check_server_tool_tokens(cls, value: Any) -> int:
        return _tokens(value, "server_tool_tokens")

    @field_validator("contention_wait_s")
    @classmethod
    def _check_contention_wait(cls, value: float) -> float:
        return _seconds(value, "contention_wait_s", positive=False)

    @model_validator(mode="after")
    def _check_output_bounds(self) -> Policy:
        caps = self.max_output_tokens
        smallest = min(caps.values(), default=None) if isinstance(caps, Mapping) else caps
        if smallest is not None and self.min_output_tokens > smallest:
            if "min_output_tokens" not in self.model_fields_set:
                object.__setattr__(self, "min_output_tokens", smallest)  # the default yields
                return self
            raise ValueError(
                f"min_output_tokens: {self.min_output_tokens} is above max_output_tokens "
                f"({smallest}): no call could ever be fitted"
            )
        return self

    def output_cap(self, *models: str | None) -> int | None:
        """The output cap to send with a call that sets none (None: none), for the first
        of ``models`` the policy names (the model priced, then the name sent), else
        ``"*"``."""
        caps = self.max_output_tokens
        if caps is None or isinstance(caps, int):
            return caps
        for model in models:
            if model is not None and model in caps:
                return caps[model]
        return caps.get("*")

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
