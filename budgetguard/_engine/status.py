"""The read side: where a limit stands right now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from .._core.attribution import Attribution
from .._core.counters import Counter, CounterStatus, amount_of
from .._core.errors import ConfigurationError
from .._core.limitbook import LimitBook
from .._core.plan import counter_of, plan_counters
from .._core.policy import UNITS, Limit, Scope, Unit
from ..stores.drive import Flow, LoadLimits, Status, arun, run
from .config import Settings, current
from .frames import active_frames

__all__ = ["BudgetStatus", "astatus", "status"]


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One limit's current window. Amounts are ``Decimal`` dollars, or counts when
    ``unit`` is ``"tokens"`` or ``"requests"``. ``limit`` and ``remaining`` are None
    for a counter no limit known to this process names (one a ``spend_limit(limits=...)``
    block elsewhere keeps). ``enforce="warn"``: a soft limit, which ``spent`` may pass;
    ``source``: where the limit comes from (``"code"``, ``"store"``, ``"plan:<name>"``,
    ``"frame"``)."""

    scope: str
    key: str
    window: str
    limit: Decimal | None
    spent: Decimal
    held: Decimal
    remaining: Decimal | None
    resets_at: datetime | None
    overrun: Decimal = Decimal(0)
    """The part of ``spent`` that was never reserved: calls billed above their hold."""
    unit: str = "usd"
    enforce: str = "refuse"
    source: str = "code"

    @classmethod
    def of(cls, raw: CounterStatus, *, known: bool = True) -> BudgetStatus:
        counter = raw.counter
        unit = counter.unit

        def amount(value: int) -> Decimal:
            return amount_of(unit, value)

        return cls(
            scope=counter.scope,
            key=counter.subject,
            window=counter.window,
            limit=amount(counter.limit) if known else None,
            spent=amount(raw.spent),
            held=amount(raw.held),
            remaining=amount(raw.remaining) if known else None,
            resets_at=None if raw.resets_at is None else datetime.fromtimestamp(raw.resets_at, UTC),
            overrun=amount(raw.overrun),
            unit=counter.unit,
            enforce="warn" if counter.soft else "refuse",
            source=counter.source if known else "none",
        )


class _Unset:
    """No ``tenant=`` given (``tenant=None`` is a statement: a user with no tenant)."""

    def __repr__(self) -> str:
        return "<not given>"


UNSET = _Unset()


def _counter_for(
    settings: Settings,
    book: LimitBook,
    scope: Scope,
    key: str | None,
    *,
    window: str | None,
    tenant: str | _Unset | None,
    unit: Unit | None,
) -> tuple[Counter, bool]:
    """The counter to read, and whether a limit in force names it."""
    if scope in ("run", "request"):
        raise ConfigurationError(f"scope: {scope} limits have no shared status; use run.spent")
    if unit is not None and unit not in UNITS:
        raise ConfigurationError(f"unit: expected one of {', '.join(UNITS)}, got {unit!r}")
    if scope != "global" and key is None:
        raise ConfigurationError(f"key: which {scope}? pass key=")
    if isinstance(tenant, _Unset):
        if scope == "user":
            raise ConfigurationError(
                "tenant: users are counted within their tenant; pass tenant='acme', or "
                "tenant=None for a user whose calls carry no tenant"
            )
        tenant = None
    who = Attribution(
        tenant=key if scope == "tenant" else tenant,
        user=key if scope == "user" else None,
        feature=key if scope == "feature" else None,
    )
    model = key if scope == "model" else None
    counters = plan_counters(settings.policy, active_frames(), who, model, book)
    matching = [
        counter
        for counter in counters
        if counter.scope == scope
        and (window is None or counter.window == window)
        and (unit is None or counter.unit == unit)
    ]
    if len(matching) == 1:
        return matching[0], True
    if matching:
        windows = sorted({counter.window for counter in matching})
        if len(windows) > 1:
            raise ConfigurationError(f"window: {scope} has limits for {windows}; pass window=")
        dollars = [counter for counter in matching if counter.unit == "usd"]
        if len(dollars) == 1:  # a limit with usd= and tokens=: its dollars unless asked
            return dollars[0], True
        units = sorted({counter.unit for counter in matching})
        raise ConfigurationError(f"unit: {scope} has limits in {units}; pass unit=")
    if window is None and unit is not None:
        raise ConfigurationError(
            f"unit: no {unit} limit in force matches scope={scope!r} key={key!r}; pass "
            "window= to read a counter no limit of this process names"
        )
    if window is None:
        raise ConfigurationError(
            f"scope: no limit in force matches scope={scope!r} key={key!r} (in the policy, "
            "its plans or the store); pass window= to read a counter that a "
            "spend_limit(limits=...) block keeps"
        )
    try:
        probe = Limit.model_validate(
            {"scope": scope, "key": key, "window": window, unit or "usd": 0}
        )
    except ValueError as error:
        raise ConfigurationError(str(error).splitlines()[-1].strip()) from None
    subject = "*" if scope == "global" else key
    assert subject is not None
    return counter_of(probe, unit or "usd", subject, who.tenant, settings.policy.timezone), False


def _status_flow(
    settings: Settings,
    scope: Scope,
    key: str | None,
    *,
    window: str | None,
    tenant: str | _Unset | None,
    unit: Unit | None,
) -> Flow[BudgetStatus]:
    book = yield LoadLimits()
    counter, known = _counter_for(
        settings, book, scope, key, window=window, tenant=tenant, unit=unit
    )
    raw = yield Status(counter)
    return BudgetStatus.of(raw, known=known)


def status(
    scope: Scope,
    key: str | None = None,
    *,
    window: str | None = None,
    tenant: str | _Unset | None = UNSET,
    unit: Unit | None = None,
) -> BudgetStatus:
    """Limit, spent, held, overrun, remaining and reset time of one limit in force:
    in the policy, a plan, the store (``bg.set_limit``) or an enclosing
    ``spend_limit`` block.

    ``bg.status("user", "u-42", tenant="acme")``: users are counted within
    their tenant, so a user's status needs ``tenant=`` (``tenant=None`` for a
    user whose calls carry none) - asking without it used to show $0 for a
    user who spent under a tenant. ``window=`` / ``unit=`` choose among several
    limits of the scope; with ``window=`` any counter can be read, even one no
    limit of this process names (its ``limit`` is then None).
    """
    settings = current()
    flow = _status_flow(settings, scope, key, window=window, tenant=tenant, unit=unit)
    return run(flow, settings.store)


async def astatus(
    scope: Scope,
    key: str | None = None,
    *,
    window: str | None = None,
    tenant: str | _Unset | None = UNSET,
    unit: Unit | None = None,
) -> BudgetStatus:
    settings = current()
    flow = _status_flow(settings, scope, key, window=window, tenant=tenant, unit=unit)
    return await arun(flow, settings.async_store)
