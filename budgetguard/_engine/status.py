"""The read side: where a limit stands right now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from .._core.attribution import Attribution
from .._core.counters import Counter, CounterStatus
from .._core.errors import ConfigurationError
from .._core.money import nanos_to_usd
from .._core.plan import plan_counters
from .._core.policy import Scope
from ..stores.drive import Flow, Status, arun, run
from .config import Settings, current

__all__ = ["BudgetStatus", "astatus", "status"]


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    scope: str
    key: str
    window: str
    limit: Decimal
    spent: Decimal
    held: Decimal
    remaining: Decimal
    resets_at: datetime | None
    overrun: Decimal = Decimal(0)
    """The part of ``spent`` that was never reserved: calls billed above their hold."""

    @classmethod
    def of(cls, raw: CounterStatus) -> BudgetStatus:
        counter = raw.counter
        return cls(
            scope=counter.scope,
            key=counter.subject,
            window=counter.window,
            limit=nanos_to_usd(counter.limit),
            spent=nanos_to_usd(raw.spent),
            held=nanos_to_usd(raw.held),
            remaining=nanos_to_usd(raw.remaining),
            resets_at=None if raw.resets_at is None else datetime.fromtimestamp(raw.resets_at, UTC),
            overrun=nanos_to_usd(raw.overrun),
        )


class _Unset:
    """No ``tenant=`` given (``tenant=None`` is a statement: a user with no tenant)."""

    def __repr__(self) -> str:
        return "<not given>"


UNSET = _Unset()


def _counter_for(
    settings: Settings,
    scope: Scope,
    key: str | None,
    window: str | None,
    tenant: str | _Unset | None,
) -> Counter:
    limits = [
        limit
        for limit in settings.policy.limits
        if limit.scope == scope
        and (limit.key is None or limit.key == key)
        and (window is None or limit.window == window)
    ]
    if scope in ("run", "request"):
        raise ConfigurationError(f"scope: {scope} limits have no shared status; use run.spent")
    if not limits:
        raise ConfigurationError(
            f"scope: no configured limit matches scope={scope!r} key={key!r} window={window!r}"
        )
    windows = {limit.window for limit in limits}
    if len(windows) > 1:
        raise ConfigurationError(
            f"window: {scope} has limits for {sorted(w or '' for w in windows)}; pass window="
        )
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
    counters = plan_counters(
        settings.policy.model_copy(update={"limits": tuple(limits)}),
        (),
        who,
        key if scope == "model" else None,
    )
    return counters[0]


def _status_flow(counter: Counter) -> Flow[BudgetStatus]:
    raw = yield Status(counter)
    return BudgetStatus.of(raw)


def status(
    scope: Scope,
    key: str | None = None,
    *,
    window: str | None = None,
    tenant: str | _Unset | None = UNSET,
) -> BudgetStatus:
    """Limit, spent, held, overrun, remaining and reset time of one configured limit.

    ``bg.status("user", "u-42", tenant="acme")``: users are counted within
    their tenant, so a user's status needs ``tenant=`` (``tenant=None`` for a
    user whose calls carry none) - asking without it used to show $0 for a
    user who spent under a tenant.
    """
    settings = current()
    counter = _counter_for(settings, scope, key, window, tenant)
    return run(_status_flow(counter), settings.store)


async def astatus(
    scope: Scope,
    key: str | None = None,
    *,
    window: str | None = None,
    tenant: str | _Unset | None = UNSET,
) -> BudgetStatus:
    settings = current()
    counter = _counter_for(settings, scope, key, window, tenant)
    return await arun(_status_flow(counter), settings.async_store)
