"""One guarded call: estimate -> reserve -> (caller calls the LLM) -> settle.

``admit`` / ``aadmit`` run the admission loop; the steps themselves are
decided by the pure core (``_core.decide``), so the sync and async loops
only differ in how they wait and talk to the store. The result is an
``Admission``: the model to send, and the handle that settles the call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from . import _core
from ._config import Settings, current
from ._errors import StoreUnavailable, UnknownModel
from ._frames import Attribution, Frame, active_frames, attribution_of
from ._money import nanos_to_usd
from ._policy import Policy
from ._tokens import estimate_tokens
from ._usage import Usage
from .stores._base import AsyncStore, Counter, Denial, Reservation, Store

__all__ = [
    "Admission",
    "CallRecord",
    "LLMRequest",
    "aadmit",
    "aadmit_cost",
    "admit",
    "admit_after",
    "admit_cost",
]

log = logging.getLogger("budgetguard")


# -- reservation ids: unique across threads, processes and forks, ~100 ns ------
class _Ids:
    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_ids = _Ids()
new_id = _ids.next


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """What an LLM call asks for, enough to estimate its worst-case cost."""

    model: str
    messages: Sequence[Mapping[str, Any]] | None = None
    prompt: str | Sequence[str] | None = None
    system: str | Sequence[Mapping[str, Any]] | None = None
    tools: Sequence[Mapping[str, Any]] | None = None
    max_tokens: int | None = None
    provider: str | None = None


Outcome = Literal["ok", "downgraded", "denied", "error"]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What happened to one guarded call, handed to every listener (ledger, alerts).

    ``cost`` and ``estimate`` are nano-USD; ``counters`` are the limits the
    call was checked against (empty for a denial by the request cap).
    """

    at: float
    outcome: Outcome
    tenant: str | None
    user: str | None
    feature: str | None
    tags: Mapping[str, str]
    requested_model: str | None
    model: str | None
    usage: Usage | None
    estimate: int
    cost: int
    latency_s: float
    reservation_id: str | None
    counters: tuple[Counter, ...]
    error: str | None = None


def _emit(settings: Settings, record: CallRecord) -> None:
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
    provider: str | None = None
    started: float = field(default_factory=time.monotonic)
    counters: tuple[Counter, ...] = ()
    cost: int | None = None
    used_model: str | None = None
    usage: Usage | None = None

    @property
    def downgraded(self) -> bool:
        return self.model != self.requested_model

    @property
    def estimate_usd(self) -> Decimal:
        return nanos_to_usd(self.estimate)

    def price(self, usage: Usage, model: str | None = None) -> int:
        """Nano-USD for ``usage``; the reported model's price, else the admitted one's.

        A response may name a model we cannot price (a fine-tune, a new
        snapshot): the admitted model was priced when estimating, so the call
        is charged at its rates rather than at $0.
        """
        prices = self.settings.prices
        if model is not None and model != self.model:
            try:
                return prices.rates(model, self.provider).cost(usage)
            except UnknownModel:
                log.warning(
                    "budgetguard: response model %r has no price; charging %r rates",
                    model,
                    self.model,
                )
        if self.model is None:
            raise UnknownModel(model or "<none>", ": the call named no model to price usage with")
        return prices.rates(self.model, self.provider).cost(usage)

    def _finish(self, nanos: int, model: str | None, usage: Usage | None = None) -> bool:
        if self.cost is not None:
            return False
        self.cost = nanos
        self.used_model = model or self.model
        self.usage = usage
        for frame in self.frames:
            frame.tally.add(nanos)
        self._record("downgraded" if self.downgraded else "ok")
        return True

    def _record(self, outcome: Outcome, error: str | None = None) -> None:
        if not self.settings.listeners:
            return
        who = self.attribution
        _emit(
            self.settings,
            CallRecord(
                at=time.time(),
                outcome=outcome,
                tenant=who.tenant,
                user=who.user,
                feature=who.feature,
                tags=who.tags,
                requested_model=self.requested_model,
                model=self.used_model or self.model,
                usage=self.usage,
                estimate=self.estimate,
                cost=self.cost or 0,
                latency_s=time.monotonic() - self.started,
                reservation_id=self.reservation.id if self.reservation else None,
                counters=self.counters,
                error=error,
            ),
        )

    # -- sync ----------------------------------------------------------------
    def settle(self, usage: Usage, *, model: str | None = None) -> Decimal:
        return self.settle_nanos(self.price(usage, model), model=model, usage=usage)

    def settle_nanos(
        self, nanos: int, *, model: str | None = None, usage: Usage | None = None
    ) -> Decimal:
        if self._finish(nanos, model, usage) and self.reservation is not None:
            store = self.settings.sync_store()
            try:
                store.settle(self.reservation, nanos)
            except StoreUnavailable:
                _owed.keep(self.reservation, nanos)
            else:
                _owed.flush(store)
        return nanos_to_usd(self.cost or 0)

    def release(self, error: str | None = None) -> None:
        if self.cost is not None:
            return
        self.cost = 0
        self._record("error", error)
        if self.reservation is not None:
            try:
                self.settings.sync_store().release(self.reservation)
            except StoreUnavailable:
                log.error(
                    "budgetguard: store unavailable; hold %s expires with its lease",
                    self.reservation.id,
                )

    # -- async ---------------------------------------------------------------
    async def asettle(self, usage: Usage, *, model: str | None = None) -> Decimal:
        return await self.asettle_nanos(self.price(usage, model), model=model, usage=usage)

    async def asettle_nanos(
        self, nanos: int, *, model: str | None = None, usage: Usage | None = None
    ) -> Decimal:
        if self._finish(nanos, model, usage) and self.reservation is not None:
            store = self.settings.async_store_()
            try:
                await store.asettle(self.reservation, nanos)
            except StoreUnavailable:
                _owed.keep(self.reservation, nanos)
            else:
                await _owed.aflush(store)
        return nanos_to_usd(self.cost or 0)

    async def arelease(self, error: str | None = None) -> None:
        if self.cost is not None:
            return
        self.cost = 0
        self._record("error", error)
        if self.reservation is not None:
            try:
                await self.settings.async_store_().arelease(self.reservation)
            except StoreUnavailable:
                log.error(
                    "budgetguard: store unavailable; hold %s expires with its lease",
                    self.reservation.id,
                )


class _Owed:
    """Settles the store could not take: the LLM was paid, so the charge is kept
    and retried after the next settle that goes through (settle is idempotent,
    so a retry can never double-charge)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._items: deque[tuple[Reservation, int]] = deque(maxlen=limit)
        self._lock = threading.Lock()

    def keep(self, reservation: Reservation, nanos: int) -> None:
        log.error(
            "budgetguard: store unavailable; settle of %s ($%s) kept to retry",
            reservation.id,
            nanos_to_usd(nanos),
        )
        with self._lock:
            self._items.append((reservation, nanos))

    def _take(self) -> list[tuple[Reservation, int]]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    def flush(self, store: Store) -> None:
        if not self._items:
            return
        for n, (reservation, nanos) in enumerate(items := self._take()):
            try:
                store.settle(reservation, nanos)
            except StoreUnavailable:
                with self._lock:
                    self._items.extendleft(reversed(items[n:]))
                return

    async def aflush(self, store: AsyncStore) -> None:
        if not self._items:
            return
        for n, (reservation, nanos) in enumerate(items := self._take()):
            try:
                await store.asettle(reservation, nanos)
            except StoreUnavailable:
                with self._lock:
                    self._items.extendleft(reversed(items[n:]))
                return

    def __len__(self) -> int:
        return len(self._items)


_owed = _Owed()


# -- the admission loop, as data ------------------------------------------------
@dataclass(slots=True)
class _Attempts:
    """State of one admission: which model we are trying, how long we waited."""

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

    def prepare(self) -> _core.CapDenial | None:
        """Estimate the current model and plan its counters; a cap breach needs no store."""
        settings = self.settings
        if self.fixed_cost is not None:
            self.amount = self.fixed_cost
        else:
            assert self.request is not None and self.model is not None
            self.amount = _worst_case(settings, self.request, self.model)
        self.counters, cap = _plan(settings.policy, self.frames, self.who, self.model)
        self.reservation_id = new_id()
        if cap is not None and self.amount > cap:
            return _core.CapDenial(cap, self.amount)
        return None

    def step(self, outcome: Reservation | Denial | _core.CapDenial | None) -> _core.Step:
        policy = self.settings.policy
        on_exceed = _core.on_exceed_of(policy, self.frames)
        next_model = None
        if on_exceed == "downgrade" and self.model is not None:
            chain = policy.downgrade_chain(self.model)
            next_model = chain[0] if chain else None
        step = _core.decide(
            outcome,
            on_exceed=on_exceed,
            model=self.model,
            next_model=next_model,
            waited_s=time.monotonic() - self.started,
            block_timeout=policy.block_timeout,
            attempt=self.attempt,
        )
        self.attempt += 1
        if isinstance(step, _core.TryModel):
            self.model = step.model
        return step

    def admission(self, reservation: Reservation | None) -> Admission:
        return Admission(
            requested_model=self.request.model if self.request else self.model,
            model=self.model,
            estimate=self.amount,
            reservation=reservation,
            frames=self.frames,
            attribution=self.who,
            settings=self.settings,
            provider=self.request.provider if self.request else None,
            counters=self.counters,
        )

    def denied(self, error: Exception) -> None:
        """Tell the listeners about a refused call (the ledger's "denied" rows)."""
        if not self.settings.listeners:
            return
        who = self.who
        _emit(
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
            ),
        )


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
    counters = _core.plan_counters(policy, frames, who, model)
    cap = _core.plan_caps(policy, frames)
    _last_plan = (policy, run_limited, key, model, counters, cap)
    return counters, cap


def _worst_case(settings: Settings, request: LLMRequest, model: str) -> int:
    rates = settings.prices.rates(model, request.provider)
    input_tokens, output_tokens = estimate_tokens(
        model,
        messages=request.messages,
        prompt=request.prompt,
        system=request.system,
        tools=request.tools,
        max_tokens=request.max_tokens,
        rates=rates,
    )
    return rates.worst_case(input_tokens, output_tokens)


def _start(request: LLMRequest | None, model: str | None, cost: int | None) -> _Attempts:
    frames = active_frames()
    return _Attempts(
        settings=current(),
        frames=frames,
        who=attribution_of(frames),
        request=request,
        model=request.model if request else model,
        fixed_cost=cost,
    )


def _run(attempts: _Attempts) -> Admission:
    store = attempts.settings.sync_store()
    lease = attempts.settings.policy.lease_s
    while True:
        outcome: Reservation | Denial | _core.CapDenial | None = attempts.prepare()
        if outcome is None and attempts.counters:
            outcome = store.reserve(
                attempts.reservation_id, attempts.counters, attempts.amount, lease
            )
        if outcome is None or isinstance(outcome, Reservation):
            return attempts.admission(outcome)  # granted: nothing for the policy to decide
        step = attempts.step(outcome)
        if isinstance(step, _core.Admit):
            return attempts.admission(step.reservation)
        if isinstance(step, _core.Wait):
            time.sleep(step.seconds)
        elif isinstance(step, _core.Refuse):
            attempts.denied(step.error)
            raise step.error


async def _arun(attempts: _Attempts) -> Admission:
    store = attempts.settings.async_store_()
    lease = attempts.settings.policy.lease_s
    while True:
        outcome: Reservation | Denial | _core.CapDenial | None = attempts.prepare()
        if outcome is None and attempts.counters:
            outcome = await store.areserve(
                attempts.reservation_id, attempts.counters, attempts.amount, lease
            )
        if outcome is None or isinstance(outcome, Reservation):
            return attempts.admission(outcome)  # granted: nothing for the policy to decide
        step = attempts.step(outcome)
        if isinstance(step, _core.Admit):
            return attempts.admission(step.reservation)
        if isinstance(step, _core.Wait):
            await asyncio.sleep(step.seconds)
        elif isinstance(step, _core.Refuse):
            attempts.denied(step.error)
            raise step.error


def admit(request: LLMRequest) -> Admission:
    """Estimate ``request``'s worst case and reserve it in every counter in force."""
    return _run(_start(request, None, None))


async def aadmit(request: LLMRequest) -> Admission:
    return await _arun(_start(request, None, None))


def admit_after(model: str | None = None) -> Admission:
    """An admission for a call that already happened unreserved (no estimate, no
    instrumented client): it holds nothing and passes no limit check, and
    settling it charges every counter in force once - a call that no budget let
    through is still counted, never $0."""
    settings = current()
    frames = active_frames()
    who = attribution_of(frames)
    counters, _cap = _plan(settings.policy, frames, who, model)
    store: Store | AsyncStore | None = settings.store or settings.async_store
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


def admit_cost(nanos: int, *, model: str | None = None) -> Admission:
    """Reserve a known worst case (``estimate=``) for code we cannot estimate."""
    return _run(_start(None, model, nanos))


async def aadmit_cost(nanos: int, *, model: str | None = None) -> Admission:
    return await _arun(_start(None, model, nanos))
