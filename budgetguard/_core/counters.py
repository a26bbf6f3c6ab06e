"""What a store counts, as values: counters, reservations, denials, statuses.

Pure data shared by the core (which plans counters and reads denials), the
stores (which hold them) and the shells (which report them). Amounts are
integer nano-USD.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .money import nanos_to_usd
from .windows import Window

__all__ = [
    "Counter",
    "CounterStatus",
    "Denial",
    "Reservation",
    "ReserveOutcome",
    "amount_of",
    "share",
    "soft_limit",
]


@dataclass(frozen=True, slots=True)
class Counter:
    """One limit as it applies to one call: e.g. tenant "acme", $100 a month.

    ``key`` identifies the counter across processes (without the window
    bucket, which the store adds). ``tag`` groups counters that must live in
    one Redis Cluster slot. ``scope`` and ``subject`` are for humans and errors.
    """

    key: str
    limit: int
    window: Window
    scope: str
    subject: str = ""
    tag: str = "global"
    tz: str = "UTC"
    label: str = ""
    """What to call it in errors when ``subject`` means nothing to a person (a run's name)."""
    unit: str = "usd"
    """What it counts: ``"usd"`` (nano-USD), ``"tokens"`` or ``"requests"``."""
    soft: bool = False
    """A soft limit (``enforce="warn"``): it counts and reports, but never refuses."""
    warn_at: int | None = None
    """A soft limit checked beside this counter's hard one (a shadow run of a tighter
    limit): a call that takes the counter past it passes, and says so."""
    source: str = "code"
    """Where its limit comes from: ``"code"``, ``"store"`` or ``"plan:<name>"``."""


def amount_of(unit: str, amount: int) -> Decimal:
    """A store integer at the public edge: ``Decimal`` dollars from nano-USD, else the
    count of tokens or requests as a ``Decimal``."""
    return nanos_to_usd(amount) if unit == "usd" else Decimal(amount)


def soft_limit(counter: Counter) -> int | None:
    """The limit a call may pass with a warning: a soft counter's own, or the soft limit
    beside a hard one."""
    return counter.limit if counter.soft else counter.warn_at


def share(counter: Counter, nanos: int, tokens: int) -> int:
    """What one call holds or charges on ``counter``: its cost, its tokens, or 1 call."""
    unit = counter.unit
    if unit == "usd":
        return nanos
    return tokens if unit == "tokens" else 1


@dataclass(frozen=True, slots=True)
class Reservation:
    """A granted hold. ``buckets`` pins each counter to the window bucket
    (its start, epoch seconds) the hold was taken in, so a late settle still
    charges the bucket the call was admitted to."""

    id: str
    amount: int
    buckets: tuple[tuple[Counter, int], ...]
    expires_at: float
    tokens: int = 0
    """The tokens held on token counters (the call's worst case)."""
    over_soft: tuple[Counter, ...] = ()
    """Soft counters this hold took past their limit: the call passes, and says so."""


@dataclass(frozen=True, slots=True)
class Denial:
    """The first counter that could not take ``requested`` on top of spent + held."""

    counter: Counter
    spent: int
    held: int
    requested: int
    resets_at: int | None
    now: float


ReserveOutcome = Reservation | Denial


@dataclass(frozen=True, slots=True)
class CounterStatus:
    """One counter's current bucket: settled ``spent``, ``held`` by calls in flight, and
    ``overrun``, the part of ``spent`` that was never reserved (a provider billing past
    the reserved worst case, or a call charged after the fact)."""

    counter: Counter
    spent: int
    held: int
    window_start: int
    resets_at: int | None
    overrun: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.counter.limit - self.spent - self.held)
