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
from .._core.plan import on_exceed_of, plan_caps, plan_counters
from .._core.policy import Policy
from .._core.records import CallRecord, LLMRequest
from ..pricing.rates import ModelRates
from ..pricing.tokens import estimate_tokens
from ..stores.drive import Flow, Reserve, Sleep, arun, run
from .admission import Admission, emit
from .config import Settings, current
from .frames import active_frames
from .ids import new_id
from .upkeep import unapplied, upkeep

__all__ = [
    "aadmit",
    "aadmit_cost",
    "admission_flow",
    "admit",
    "admit_after",
    "admit_cost",
    "admit_flow",
    "worst_case",
]


@dataclass(slots=True)
class AdmissionState:
    """Where one admission stands: the model being tried, its estimate and
    counters, how many attempts were made and since when."""

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

    def prepare(self) -> core.CapDenial | None:
        """Estimate the current model and plan its counters; a cap breach needs no store."""
        settings = self.settings
        if self.fixed_cost is not None:
            self.amount = self.fixed_cost
        else:
            assert self.request is not None and self.model is not None
            self.rates = rates_for(settings, self.request, self.model)
            self.amount = worst_case(settings, self.request, self.model, self.rates)
        self.counters, cap = _plan(settings.policy, self.frames, self.who, self.model)
        self.reservation_id = new_id()
        if cap is not None and self.amount > cap:
            return core.CapDenial(cap, self.amount)
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
        )
        self.attempt += 1
        if isinstance(step, core.TryModel):
            self.model = step.model
        return step

    def admission(self, reservation: Reservation | None) -> Admission:
        settings = self.settings
        if reservation is not None:
            upkeep.track(reservation, settings.policy.lease_s, settings.store, settings.async_store)
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
        )

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
            ),
        )


def admission_flow(state: AdmissionState) -> Flow[Admission]:
    """Reserve the call's worst case on every counter in force, or refuse it."""
    settings = state.settings
    lease = settings.policy.lease_s
    if unapplied:  # settles kept during an outage land before anything new is reserved
        yield from unapplied.flush(settings.store, settings.async_store)
    while True:
        outcome: Reservation | Denial | core.CapDenial | None = state.prepare()
        if outcome is None and state.counters:
            outcome = yield Reserve(state.reservation_id, state.counters, state.amount, lease)
        if outcome is None or isinstance(outcome, Reservation):
            return state.admission(outcome)  # granted: nothing for the policy to decide
        step = state.step(outcome)
        if isinstance(step, core.Admit):
            return state.admission(step.reservation)
        if isinstance(step, core.Wait):
            yield Sleep(step.seconds)
        elif isinstance(step, core.Refuse):
            state.denied(step.error, outcome.counter if isinstance(outcome, Denial) else None)
            raise step.error


_Plan = tuple[Policy, bool, object, str | None, tuple[Counter, ...], int | None]
_last_plan: _Plan | None = None


def _plan(
    policy: Policy, frames: tuple[Frame, ...], who: Attribution, model: str | None
) -> tuple[tuple[Counter, ...], int | None]:
    """Counters and request cap of a call, reusing the last plan when nothing it
    depends on changed: the policy, the model and either the attribution (when
    no frame has limits and the policy no run limit: the common case) or else
    the very same frame stack. A loop of calls asks for the same plan each time."""
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
        and last[3] == model
        and (last[2] is key or (key is not frames and last[2] == key))
    ):
        return last[4], last[5]
    counters = plan_counters(policy, frames, who, model)
    cap = plan_caps(policy, frames)
    _last_plan = (policy, run_limited, key, model, counters, cap)
    return counters, cap


def rates_for(settings: Settings, request: LLMRequest, model: str) -> ModelRates:
    """The rates ``request`` sent to ``model`` is priced at."""
    return settings.prices.rates(
        request.priced_as(model), request.provider, request.price_context, request.provider_hint
    )


def worst_case(
    settings: Settings, request: LLMRequest, model: str, rates: ModelRates | None = None
) -> int:
    """The most ``request`` sent to ``model`` can cost, in nano-USD."""
    if rates is None:
        rates = rates_for(settings, request, model)
    input_tokens, output_tokens = estimate_tokens(
        model,
        messages=request.messages,
        prompt=request.prompt,
        system=request.system,
        tools=request.tools,
        max_tokens=request.max_tokens,
        rates=rates,
    )
    return rates.worst_case(input_tokens, output_tokens * request.choices)


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


def admit_after(model: str | None = None) -> Admission:
    """An admission for a call that already happened unreserved (no estimate, no
    instrumented client): it holds nothing and passes no limit check, and
    settling it charges every counter in force once - a call that no budget let
    through is still counted, never $0."""
    settings = current()
    frames = active_frames()
    who = attribution_of(frames)
    counters, _cap = _plan(settings.policy, frames, who, model)
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
