"""One guarded call's admission: estimate -> reserve -> decide, written once.

``admission_flow`` is a generator of store operations (see
``stores/drive.py``): it estimates the call, plans its counters, asks the
store to reserve, and lets the pure core (``_core.decide``) say what to do
with a denial - try a cheaper model, wait, or refuse. ``admit`` drives it on
the sync store and ``aadmit`` on the async one; nothing else differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .._core import decide as core
from .._core.attribution import Attribution, Frame, attribution_of
from .._core.counters import Counter, Denial, Reservation
from .._core.limitbook import EMPTY_BOOK, LimitBook
from .._core.plan import Cap, on_exceed_of, plan_caps, plan_counters
from .._core.policy import Policy
from .._core.records import CallRecord, Estimate, LLMRequest
from ..pricing.rates import ModelRates
from ..stores.drive import Compute, Flow, LoadLimits, Reserve, Sleep, arun, run
from .admission import Admission, emit, warn_once
from .config import Settings, current
from .estimate import estimate_of, is_large, rates_for, worst_case
from .frames import active_frames
from .ids import new_id
from .upkeep import unapplied, upkeep

__all__ = [
    "aadmit",
    "aadmit_cost",
    "admission_flow",
    "admit",
    "admit_after_flow",
    "admit_cost",
    "admit_flow",
    "rates_for",
    "worst_case",
]


@dataclass(slots=True)
class AdmissionState:
    """Where one admission stands: the model being tried, its estimate and
    counters, the output cap it will be sent with, how many attempts were made
    and since when."""

    settings: Settings
    frames: tuple[Frame, ...]
    who: Attribution
    request: LLMRequest | None
    model: str | None
    fixed_cost: int | None
    started: float = field(default_factory=time.monotonic)
    attempt: int = 0
    counters: tuple[Counter, ...] = ()
    amount: int = 0
    reservation_id: str = ""
    rates: ModelRates | None = None
    estimate: Estimate | None = None
    output_cap: int | None = None
    """The output cap to send in place of the request's (the policy's, or fitted)."""
    fitted: int | None = None
    book: LimitBook = EMPTY_BOOK
    tokens: int = 0
    """The call's worst case in tokens (input bound + output cap x choices)."""
    soft_caps: tuple[Cap, ...] = ()
    """Soft per-request caps the call passes over."""
    plain: bool = True
    """Every counter is a hard dollar one (a store written before token limits takes it)."""

    def estimate_flow(self) -> Flow[None]:
        """Estimate the request at the current model and output cap. The prompt is
        counted through ``Compute``: a large one off the event loop in async code."""
        settings, request, model = self.settings, self.request, self.model
        assert request is not None and model is not None
        self.rates = rates = rates_for(settings, request, model)
        cap = self.fitted
        if cap is None and request.max_tokens is None:
            cap = settings.policy.output_cap(request.priced_as(model), model)
            if cap is not None:
                cap = max(cap, request.output_floor)
        self.output_cap = cap

        def count() -> Estimate:
            return estimate_of(settings, request, model, rates, cap)

        self.estimate = estimate = yield Compute(count, lambda: is_large(request))
        self.amount = estimate.nanos
        self.tokens = estimate.input_tokens + estimate.output_tokens * estimate.choices

    def prepare(self) -> core.CapDenial | None:
        """Plan the counters of the amount just estimated (or given); a cap breach needs
        no store."""
        settings = self.settings
        if self.fixed_cost is not None:
            self.amount = self.fixed_cost
        self.counters, caps, self.plain = _plan(
            settings.policy, self.frames, self.who, self.model, self.book
        )
        self.reservation_id = new_id()
        if not caps:
            return None
        soft: list[Cap] = []
        for cap in caps:
            requested = self.amount if cap.unit == "usd" else self.tokens
            if requested > cap.amount:
                if not cap.soft:
                    return core.CapDenial(cap.amount, requested, cap.unit)
                soft.append(cap)
        self.soft_caps = tuple(soft)
        return None

    def step(self, outcome: Reservation | Denial | core.CapDenial | None) -> core.Step:
        policy = self.settings.policy
        on_exceed = on_exceed_of(policy, self.frames)
        next_model = None
        if on_exceed == "downgrade" and self.model is not None:
            chain = policy.downgrade_chain(self.model)
            next_model = chain[0] if chain else None
        step = core.decide(
            outcome,
            on_exceed=on_exceed,
            model=self.model,
            next_model=next_model,
            waited_s=time.monotonic() - self.started,
            block_timeout=policy.block_timeout,
            attempt=self.attempt,
            contention_wait_s=policy.contention_wait_s,
            fit_tokens=self._fitting(outcome) if policy.fit_output else None,
        )
        self.attempt += 1
        if isinstance(step, core.TryModel):
            self.model = step.model
        elif isinstance(step, core.Fit):
            self.fitted = step.output_tokens
        return step

    def _fitting(self, outcome: Reservation | Denial | core.CapDenial | None) -> int | None:
        """The largest output cap that fits what the refusing limit has left, when it is
        at least ``min_output_tokens`` and below the cap just refused."""
        estimate, rates = self.estimate, self.rates
        if estimate is None or rates is None or outcome is None:
            return None
        if isinstance(outcome, core.CapDenial):
            room, unit = outcome.cap, outcome.unit
        elif isinstance(outcome, Denial):
            room = max(0, outcome.counter.limit - outcome.spent - outcome.held)
            unit = outcome.counter.unit
        else:
            return None
        if unit == "requests":
            return None  # no output cap makes one call fewer
        if unit == "tokens":
            tokens = max(0, room - estimate.input_tokens) // estimate.choices
        else:
            tokens = rates.output_fitting(
                room,
                estimate.input_tokens,
                cache_write_tokens=estimate.cache_write_tokens,
                cache_write_1h_tokens=estimate.cache_write_1h_tokens,
                choices=estimate.choices,
            )
        floor = self.settings.policy.min_output_tokens
        if self.request is not None:
            floor = max(floor, self.request.output_floor)
        if floor <= tokens < estimate.output_tokens:
            return tokens
        return None

    def admission(self, reservation: Reservation | None) -> Admission:
        settings = self.settings
        over_soft: tuple[Counter, ...] = ()
        if reservation is not None:
            upkeep.track(reservation, settings.policy.lease_s, settings.store, settings.async_store)
            over_soft = reservation.over_soft
        return Admission(
            requested_model=self.request.model if self.request else self.model,
            model=self.model,
            estimate=self.amount,
            reservation=reservation,
            frames=self.frames,
            attribution=self.who,
            settings=self.settings,
            request=self.request,
            counters=self.counters,
            rates=self.rates,
            input_tokens=self.estimate.input_tokens if self.estimate is not None else None,
            output_cap=self.output_cap,
            fitted=self.fitted is not None,
            tokens=self.tokens,
            over_soft=self._over_soft(reservation) if self.soft_caps else over_soft,
        )

    def _over_soft(self, reservation: Reservation | None) -> tuple[Counter, ...]:
        """Soft limits the call passes over: counters, and per-request caps as counters."""
        over = reservation.over_soft if reservation is not None else ()
        if self.soft_caps:  # rare: a soft request cap passed
            over += tuple(
                Counter(
                    key=f"request:{cap.unit}",
                    limit=cap.amount,
                    window="request",
                    scope="request",
                    unit=cap.unit,
                    soft=True,
                    source=cap.source,
                )
                for cap in self.soft_caps
            )
        return over

    def denied(self, error: Exception, refused_by: Counter | None) -> None:
        """Tell the listeners about a refused call (the ledger's "denied" rows)."""
        if not self.settings.listeners:
            return
        who = self.who
        emit(
            self.settings,
            CallRecord(
                at=time.time(),
                outcome="denied",
                tenant=who.tenant,
                user=who.user,
                feature=who.feature,
                tags=who.tags,
                requested_model=self.request.model if self.request else self.model,
                model=self.model,
                usage=None,
                estimate=self.amount,
                cost=0,
                latency_s=time.monotonic() - self.started,
                reservation_id=None,
                counters=self.counters,
                error=str(error),
                refused_by=refused_by,
                provider=self.rates.provider if self.rates is not None else None,
            ),
        )


def admission_flow(state: AdmissionState) -> Flow[Admission]:
    """Reserve the call's worst case on every counter in force, or refuse it."""
    settings = state.settings
    lease = settings.policy.lease_s
    if unapplied:  # settles kept during an outage land before anything new is reserved
        yield from unapplied.flush(settings.store, settings.async_store)
    while True:
        # Every attempt, a wait's included, plans with stored limits at most a second old.
        book = _fresh_book(settings)
        if book is None:  # a Redis store's copy is over limits_refresh_s old: read it again
            book = yield LoadLimits()
        state.book = book
        if state.fixed_cost is None:
            yield from state.estimate_flow()
        outcome: Reservation | Denial | core.CapDenial | None = state.prepare()
        if outcome is None and state.counters:
            outcome = yield Reserve(
                state.reservation_id, state.counters, state.amount, lease, state.tokens, state.plain
            )
        if outcome is None or isinstance(outcome, Reservation):
            return state.admission(outcome)  # granted: nothing for the policy to decide
        step = state.step(outcome)
        if isinstance(step, core.Admit):
            return state.admission(step.reservation)
        if isinstance(step, core.Wait):
            yield Sleep(step.seconds, step.counter)
        elif isinstance(step, core.Refuse):
            state.denied(step.error, outcome.counter if isinstance(outcome, Denial) else None)
            raise step.error


_Plan = tuple[
    Policy, bool, object, str | None, tuple[Counter, ...], tuple[Cap, ...], LimitBook, bool
]
_last_plan: _Plan | None = None


def _plan(
    policy: Policy,
    frames: tuple[Frame, ...],
    who: Attribution,
    model: str | None,
    book: LimitBook = EMPTY_BOOK,
) -> tuple[tuple[Counter, ...], tuple[Cap, ...], bool]:
    """Counters and request caps of a call, and whether every counter is a plain hard
    dollar one (any store takes those), reusing the last plan when nothing it
    depends on changed: the policy, the stored limits, the model and either the
    attribution (when no frame has limits and the policy no run limit: the common
    case) or else the very same frame stack. A loop of calls asks for the same plan
    each time."""
    global _last_plan
    last = _last_plan
    if last is not None and last[0] is policy:
        run_limited = last[1]
    else:
        run_limited = any(limit.scope == "run" for limit in policy.limits)
    key: object = frames
    if not run_limited and not any(frame.limits for frame in frames):
        key = ("who", who.tenant, who.user, who.feature)
    if (
        last is not None
        and last[0] is policy
        and last[6] is book
        and last[3] == model
        and (last[2] is key or (key is not frames and last[2] == key))
    ):
        return last[4], last[5], last[7]
    if book.plans and (last is None or last[6] is not book or last[0] is not policy):
        _check_plans(policy, book)
    counters = plan_counters(policy, frames, who, model, book)
    caps = plan_caps(policy, frames, who, book)
    plain = all(c.unit == "usd" and not c.soft and c.warn_at is None for c in counters)
    _last_plan = (policy, run_limited, key, model, counters, caps, book, plain)
    return counters, caps, plain


def _check_plans(policy: Policy, book: LimitBook) -> None:
    """A plan assigned in the store that this process's policy does not define is
    skipped (its subject keeps the other limits in force): say so, once per plan."""
    for (scope, key), plan in book.plans.items():
        if plan not in policy.plans:
            warn_once(
                ("unknown plan", plan),
                "budgetguard: %s %r is on plan %r, which this process's Policy(plans=...) "
                "does not define; its other limits apply (logged once per plan)",
                scope,
                key,
                plan,
            )


def admit_flow(
    settings: Settings,
    request: LLMRequest | None = None,
    *,
    model: str | None = None,
    cost: int | None = None,
) -> Flow[Admission]:
    """Admit a call under the frames active now: ``request`` is estimated at its worst
    case, or ``cost`` (nano-USD) is reserved as given (``estimate=``)."""
    frames = active_frames()
    state = AdmissionState(
        settings=settings,
        frames=frames,
        who=attribution_of(frames),
        request=request,
        model=request.model if request else model,
        fixed_cost=cost,
    )
    return admission_flow(state)


def admit(request: LLMRequest) -> Admission:
    """Estimate ``request``'s worst case and reserve it in every counter in force."""
    settings = current()
    return run(admit_flow(settings, request), settings.store)


async def aadmit(request: LLMRequest) -> Admission:
    settings = current()
    return await arun(admit_flow(settings, request), settings.async_store)


def admit_cost(nanos: int, *, model: str | None = None) -> Admission:
    """Reserve a known worst case (``estimate=``) for code we cannot estimate."""
    settings = current()
    return run(admit_flow(settings, model=model, cost=nanos), settings.store)


async def aadmit_cost(nanos: int, *, model: str | None = None) -> Admission:
    settings = current()
    return await arun(admit_flow(settings, model=model, cost=nanos), settings.async_store)


def admit_after_flow(model: str | None = None) -> Flow[Admission]:
    """An admission for a call that already happened unreserved (no estimate, no
    instrumented client): it holds nothing and passes no limit check, and
    settling it charges every counter in force once (the store's limits included)
    - a call that no budget let through is still counted, never $0."""
    settings = current()
    frames = active_frames()
    who = attribution_of(frames)
    book = _fresh_book(settings)
    if book is None:
        book = yield LoadLimits()
    counters, _caps, _plain = _plan(settings.policy, frames, who, model, book)
    store = settings.store or settings.async_store
    reservation = store.pin(new_id(), counters) if counters and store is not None else None
    return Admission(
        requested_model=model,
        model=model,
        estimate=0,
        reservation=reservation,
        frames=frames,
        attribution=who,
        settings=settings,
        counters=counters,
    )


def _fresh_book(settings: Settings) -> LimitBook | None:
    """The stored limits without I/O when a store has a fresh enough copy (a
    ``MemoryStore`` always; a Redis store within ``limits_refresh_s``), else None."""
    holds_limits = False
    for store in (settings.store, settings.async_store):
        cached = getattr(store, "cached_book", None)
        if cached is not None:
            book = cached()
            if book is not None:
                return book  # type: ignore[no-any-return]
        holds_limits = holds_limits or hasattr(store, "alimit_book") or hasattr(store, "limit_book")
    return None if holds_limits else EMPTY_BOOK
