"""An admitted call: settle it with the actual usage, or release it if it failed."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal

from .._core.attribution import Attribution, Frame
from .._core.counters import Counter, Reservation, soft_limit
from .._core.errors import UnknownModel, describe_error
from .._core.money import MAX_NANOS, check_nanos, format_usd, nanos_to_usd
from .._core.records import CallRecord, LLMRequest, Outcome, record_of
from .._core.usage import PriceContext, Usage
from ..pricing.rates import ModelRates
from ..stores.drive import Flow, Release, Settle, arun, run
from .config import Settings
from .upkeep import OwedSettle, unapplied, upkeep

__all__ = ["Admission", "emit", "warn_once"]

log = logging.getLogger("budgetguard")

_warned: set[tuple[object, ...]] = set()


def warn_once(key: tuple[object, ...], message: str, *args: object) -> None:
    """Log ``message`` once per ``key`` (e.g. per provider, model and cause) per process."""
    if key in _warned:
        return
    if len(_warned) > 10_000:
        _warned.clear()
    _warned.add(key)
    log.warning(message, *args)


def _over(admission: Admission) -> str:
    """The ledger's note for a call that passed soft limits: which, and by how much."""
    parts = []
    for counter in admission.over_soft:
        who = "" if counter.scope in ("global", "request", "run") else f" {counter.subject}"
        limit = soft_limit(counter) or 0
        amount = format_usd(limit) if counter.unit == "usd" else f"{limit:,}"
        unit = "" if counter.unit == "usd" else f" {counter.unit}"
        parts.append(f"{counter.scope}{who} {counter.window} {amount}{unit}")
    return "over soft limit: " + "; ".join(parts)


def _tokens_used(usage: Usage | None, admission: Admission) -> int | None:
    """The tokens to settle: the usage's; None (what was held, the conservative side)
    when there is none, or when it is beyond what a store can count (a malformed usage:
    charged as held, logged, never a corrupted counter or a settle lost)."""
    if usage is None:
        return None
    tokens = usage.total_tokens
    if tokens > MAX_NANOS:
        warn_once(
            ("tokens out of range", admission.provider, admission.model),
            "budgetguard: a %s call reported %d tokens, more than a store counts; its "
            "token limits are charged what was held (logged once per provider and model)",
            admission.model,
            tokens,
        )
        return None
    return tokens


def emit(settings: Settings, record: CallRecord) -> None:
    """Hand ``record`` to every listener; a failing listener never fails the call."""
    for listener in settings.listeners:
        try:
            listener(record)
        except Exception:
            log.exception("budgetguard: listener %r failed; the call is unaffected", listener)


@dataclass(slots=True)
class Admission:
    """An admitted call. Settle it with the actual usage, or release it if it failed.

    ``model`` is what to send (a downgrade may have replaced
    ``requested_model``); ``estimate`` the worst case held, in nano-USD.
    Settling twice is a no-op that returns the first cost.
    """

    requested_model: str | None
    model: str | None
    estimate: int
    reservation: Reservation | None
    frames: tuple[Frame, ...]
    attribution: Attribution
    settings: Settings
    request: LLMRequest | None = None
    started: float = field(default_factory=time.monotonic)
    counters: tuple[Counter, ...] = ()
    cost: int | None = None
    used_model: str | None = None
    usage: Usage | None = None
    rates: ModelRates | None = None
    """The rates the estimate was priced with: a settle at the same model and price
    variant uses them again (one price version per call, and no second lookup)."""
    input_tokens: int | None = None
    """The prompt's upper bound the hold was priced with (None: a fixed estimate): what
    a stream cut before its usage arrived is charged as input."""
    output_cap: int | None = None
    """The output cap to send in place of the request's (``Policy.max_output_tokens``,
    or lowered to fit the budget); None: the request's own. Code that sends its own
    request after ``bg.admit`` must send it too: the hold assumes it."""
    fitted: bool = False
    tokens: int = 0
    """The tokens held on token limits (the call's worst case)."""
    over_soft: tuple[Counter, ...] = ()
    """Soft limits (``enforce="warn"``) the call passed over: recorded, never refused."""

    @property
    def downgraded(self) -> bool:
        return self.model != self.requested_model

    @property
    def estimate_usd(self) -> Decimal:
        return nanos_to_usd(self.estimate)

    @property
    def provider(self) -> str | None:
        return self.request.provider if self.request is not None else None

    def price(self, usage: Usage, model: str | None = None) -> int:
        """Nano-USD for ``usage``; the reported model's price, else the admitted one's.

        A response may name a model we cannot price (a fine-tune, a new
        snapshot): the admitted model was priced when estimating, so the call
        is charged at its rates rather than at $0. The price variant is the one
        the usage reports (a service tier), else the one the request asked for.
        """
        request = self.request
        asked = request.price_context if request is not None else ()
        rates = self.rates
        if (model is None or model == self.model) and (not usage.context or usage.context == asked):
            if rates is None:
                rates = self.rates = self._rates(self.model, asked)
            return rates.cost(usage)
        return self._rates(model, usage.context or asked).cost(usage)

    def _rates(self, model: str | None, context: PriceContext) -> ModelRates:
        """``model``'s rates at ``context``; the admitted model's when the reported one
        (a fine-tune, a new snapshot) has no price."""
        prices = self.settings.prices
        request = self.request
        provider = self.provider
        hint = request.provider_hint if request is not None else None
        if model is not None and model != self.model:
            try:
                name = request.priced_as(model) if request is not None else model
                return prices.rates(name, provider, context, hint)
            except UnknownModel:
                log.warning(
                    "budgetguard: response model %r has no price; charging %r rates",
                    model,
                    self.model,
                )
        if self.model is None:
            raise UnknownModel(model or "<none>", ": the call named no model to price usage with")
        name = request.priced_as(self.model) if request is not None else self.model
        return prices.rates(name, provider, context, hint)

    # -- the procedures, written once ------------------------------------------
    def _finish(self, nanos: int, model: str | None, usage: Usage | None) -> bool:
        """Take the cost (once; False if already settled or released) and tally it."""
        if self.cost is not None:
            return False
        self.cost = nanos
        self.used_model = model or self.model
        self.usage = usage
        for frame in self.frames:
            frame.tally.add(nanos)
        if self.estimate and nanos > self.estimate:
            unbounded = self.request.unbounded if self.request is not None else ()
            cause = (
                f"its input had no bound ({'; '.join(unbounded)}) and went past the "
                "allowance held for it"
                if unbounded
                else "the provider billed past the output cap, or the input estimate fell short"
            )
            warn_once(
                ("overrun", self.provider, self.used_model, bool(unbounded)),
                "budgetguard: a %s call was billed %s, above the %s reserved for it: %s "
                "(counted as overrun in status; logged once per provider, model and cause)",
                self.used_model,
                format_usd(nanos),
                format_usd(self.estimate),
                cause,
            )
        return True

    def _outcome(self) -> Outcome:
        """A fitted or downgraded call says so first; its ``over_soft`` (and the note)
        still say which soft limits it passed."""
        if self.fitted:
            return "fitted"
        if self.downgraded:
            return "downgraded"
        return "over_soft_limit" if self.over_soft else "ok"

    def _record(self, outcome: Outcome, error: str | None = None) -> None:
        if not self.settings.listeners:
            return
        who = self.attribution
        rates = self.rates
        reservation = self.reservation
        emit(
            self.settings,
            record_of(  # CallRecord's fields, in order (the hot path's constructor)
                time.time(),
                outcome,
                who.tenant,
                who.user,
                who.feature,
                who.tags,
                self.requested_model,
                self.used_model or self.model,
                self.usage,
                self.estimate,
                self.cost or 0,
                time.monotonic() - self.started,
                reservation.id if reservation else None,
                self.counters,
                error if error is not None or not self.over_soft else _over(self),
                None,  # refused_by: admitted calls were refused by nothing
                self.output_cap,
                self.over_soft,
                rates.provider if rates is not None else self.provider,
            ),
        )

    def settle_flow(
        self,
        nanos: int,
        *,
        model: str | None = None,
        usage: Usage | None = None,
        unpriced: str | None = None,
    ) -> Flow[Decimal]:
        """Charge ``nanos``: replace the hold by it (once; a second settle changes nothing).

        ``unpriced``: why the usage could not be read, when ``nanos`` is a conservative
        charge (recorded as ``outcome="unpriced"``). A bad amount is refused before
        anything is recorded, so a corrected settle still goes through.
        """
        check_nanos(nanos, field="nanos")
        reservation = self.reservation
        if not self._finish(nanos, model, usage):
            return nanos_to_usd(self.cost or 0)
        if reservation is not None:
            settings = self.settings
            tokens = _tokens_used(usage, self)
            try:
                yield Settle(reservation, nanos, tokens)
            except BaseException as error:
                # The provider billed this call: whatever the store said (down, out of
                # memory, cancelled while waiting), the charge is kept and re-sent, and
                # the caller still gets its response. A cancellation goes on once kept.
                owed = OwedSettle.of(
                    reservation, nanos, settings.store, settings.async_store, tokens
                )
                unapplied.keep(owed, error)  # its lease stays renewed until the settle lands
                upkeep.wake_for_owed()
                if not isinstance(error, Exception):
                    self._record("unpriced" if unpriced is not None else self._outcome(), unpriced)
                    raise
            else:
                if upkeep.untrack(reservation.id):
                    log.warning(
                        "budgetguard: call %s settled after its lease had run out (%s)",
                        reservation.id,
                        format_usd(nanos),
                    )
                if unapplied:
                    yield from unapplied.flush(settings.store, settings.async_store)
        # Recorded once the store has it: a listener reading the counter sees this call.
        if unpriced is not None:
            self._record("unpriced", unpriced)
        else:
            self._record(self._outcome())
        return nanos_to_usd(nanos)

    def release_flow(self, error: str | None = None) -> Flow[None]:
        """Drop the hold without charging: the call failed before costing anything."""
        if self.cost is not None:
            return
        self.cost = 0
        if self.reservation is not None:
            upkeep.untrack(self.reservation.id)
            try:
                yield Release(self.reservation)
            except Exception as failure:  # never hide the caller's own error behind ours
                log.error(
                    "budgetguard: releasing hold %s failed (%s); it expires with its lease",
                    self.reservation.id,
                    describe_error(failure),
                )
        self._record("error", error)

    # -- sync and async shells -------------------------------------------------
    def settle(self, usage: Usage, *, model: str | None = None) -> Decimal:
        return self.settle_nanos(self.price(usage, model), model=model, usage=usage)

    async def asettle(self, usage: Usage, *, model: str | None = None) -> Decimal:
        return await self.asettle_nanos(self.price(usage, model), model=model, usage=usage)

    def settle_nanos(
        self, nanos: int, *, model: str | None = None, usage: Usage | None = None
    ) -> Decimal:
        flow = self.settle_flow(nanos, model=model, usage=usage)
        return run(flow, self.settings.store)

    async def asettle_nanos(
        self, nanos: int, *, model: str | None = None, usage: Usage | None = None
    ) -> Decimal:
        flow = self.settle_flow(nanos, model=model, usage=usage)
        return await arun(flow, self.settings.async_store)

    def release(self, error: str | None = None) -> None:
        run(self.release_flow(error), self.settings.store)

    async def arelease(self, error: str | None = None) -> None:
        await arun(self.release_flow(error), self.settings.async_store)
