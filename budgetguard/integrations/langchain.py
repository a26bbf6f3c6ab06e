"""``BudgetCallbackHandler``: every LangChain model call behind the budgets in force.

    from budgetguard.integrations.langchain import BudgetCallbackHandler

    llm = ChatOpenAI(model="gpt-4o-mini", max_tokens=500, callbacks=[BudgetCallbackHandler()])

Why a callback rather than ``bg.instrument(llm.root_client)``: the chat models
call their SDK through ``with_raw_response`` and hand it their own payloads,
so an instrumented client sees an ``invoke`` only as a raw body it cannot
price; LangChain's callbacks see every chat model (OpenAI, Anthropic, Google,
any other) the same way, sync or async, streamed or not, in chains and in
LangGraph nodes.

- ``on_chat_model_start`` / ``on_llm_start``: the call's worst case (its
  messages and the model's bound params, estimated by the rules
  ``instrument()`` uses) is reserved on every budget in force; a call that
  does not fit raises ``bg.BudgetExceeded`` to the caller before any request
  is sent (the handler is ``raise_error``).
- ``on_llm_end``: settled from the usage the result reports (cache reads and
  writes, reasoning: ``_langchain_usage``); a result without usage is charged
  its reservation and logged once; a LangChain cache hit costs nothing.
- ``on_llm_error``: an answer the SDK refused after it was billed (openai's
  ``LengthFinishReasonError``) is charged the usage it carries; a stream that
  had begun is charged what it consumed (its chunks, or the tokens
  ``on_llm_new_token`` counted when the model streams inside ``invoke()``), at
  most its reservation; any other failure releases the hold.

Attribution: the enclosing ``bg.budget`` / ``bg.spend_limit`` frames, as for
any guarded call, then the handler's own ``tenant`` / ``user`` / ``feature`` /
``tags``, then the run's ``metadata`` (``config={"metadata": {"user": "u-42"}}``).

Sync and async: LangChain's sync callback manager calls a handler's methods
and drops whatever an ``async`` one raises (it runs them in a throwaway event
loop), so a refusal would be lost; its async manager awaits ``async`` methods
and runs plain ones on its executor. A plain handler would work in both, but in
async code every event would then hold an executor thread - and a call waiting
for budget (``contention_wait_s``, ``on_exceed="block"``) holds one until the
calls it waits for settle, which they cannot do once the few executor threads
are all waiting. So each event is an ``Event``: the async manager's lookup
(recognised by its code object) gets the coroutine - admitted and settled on
the async store, waiting on the event loop, in the caller's task and frames -
and every other lookup gets the plain method.

What a callback cannot do is change the request: it cannot send a cheaper
model or a lower output cap. So its calls are admitted with the policy's
``downgrade`` read as ``raise`` and without ``fit_output`` or
``max_output_tokens``: a call is held at the output cap it is sent with (the
model's ``max_tokens``, else the model's maximum), never at one it will not get.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from .._core.attribution import Frame
from .._core.errors import ConfigurationError, describe_error
from .._engine.admission import warn_once
from .._engine.charges import priced, unpriced, worst_case_of
from .._engine.config import Settings, current
from .._engine.flow import admit_after_flow, admit_flow
from .._engine.upkeep import upkeep
from ..providers.calls import release_unanswered
from ..providers.routes import route_for
from ..stores.drive import Flow, arun, run
from ._langchain_requests import (
    Event,
    ModelCall,
    attributed,
    attribution_id,
    batch_of,
    completion_request,
    frame_of,
    inline_for,
    model_call,
    route_of,
    tag_value,
)
from ._langchain_usage import (
    Billed,
    Open,
    adrive,
    billed,
    billed_error,
    charge_of,
    consumed,
    delivered,
    drive,
    partial_output,
    unended,
)

__all__ = ["BudgetCallbackHandler"]

MAX_OPEN_RUNS = 10_000
"""Calls started and not yet ended that one handler keeps; past it the oldest is dropped:
its lease is no longer renewed, so its hold is freed when the lease runs out."""

_FIELDS = ("tenant", "user", "feature")


class BudgetCallbackHandler(BaseCallbackHandler):
    """Reserve each LangChain model call's worst case before it is sent, settle it with
    its usage after; refuse it with ``bg.BudgetExceeded`` when it does not fit.

    Pass it in ``callbacks=[...]`` (the model's, or ``config=``); one handler may
    serve every model, thread and task. ``tenant``, ``user``, ``feature`` and
    ``tags`` attribute every call it sees; a run's ``metadata`` wins over them
    (keys ``"tenant"``, ``"user"``, ``"feature"``; rename them with
    ``metadata_keys={"user": "user_id"}``), and ``tag_keys`` names metadata keys
    whose values become tags (``("langgraph_node",)``). ``provider`` and
    ``models`` are ``instrument()``'s: the genai-prices provider to price under,
    and API names (an Azure deployment) mapped to the model to price them as.

    ``max_call_s`` (default an hour): a call that started and has not ended after it
    is charged its reservation, with a warning, the next time a call starts or ends
    on this handler - its end will not come (another ``raise_error`` handler failed
    after this one reserved, the caller was interrupted); it may have been sent, so it
    is never freed at $0. Two calls open at once under one ``run_id`` (a shared
    ``config={"run_id": ...}``) cannot be told apart at their ends: the earlier is
    charged its reservation when the later starts, and each end is then settled as
    it comes (the end matching no open call as one whose start was not seen) - it
    may overcharge, never undercharge.
    """

    raise_error = True

    @property
    def run_inline(self) -> bool:  # type: ignore[override]
        return inline_for(self, BudgetCallbackHandler)

    def __init__(
        self,
        *,
        tenant: str | None = None,
        user: str | None = None,
        feature: str | None = None,
        tags: Mapping[str, str] | None = None,
        metadata_keys: Mapping[str, str] | None = None,
        tag_keys: Sequence[str] = (),
        provider: str | None = None,
        models: Mapping[str, str] | None = None,
        max_call_s: float = 3600.0,
    ) -> None:
        super().__init__()
        if isinstance(max_call_s, bool) or not isinstance(max_call_s, int | float):
            raise ConfigurationError(f"max_call_s: expected seconds, got {max_call_s!r}")
        if not max_call_s > 0:
            raise ConfigurationError(f"max_call_s: expected seconds > 0, got {max_call_s!r}")
        self._max_call_s = float(max_call_s)
        static = {"tenant": tenant, "user": user, "feature": feature}
        self._attribution = {
            field: attribution_id(value, field)
            for field, value in static.items()
            if value is not None
        }
        self._tags = {
            str(key): tag_value(value, f"tags[{key!r}]") for key, value in (tags or {}).items()
        }
        keys = {field: field for field in _FIELDS}
        for field, key in (metadata_keys or {}).items():
            if field not in _FIELDS or not isinstance(key, str) or not key:
                raise ConfigurationError(
                    f"metadata_keys: expected {{'tenant' | 'user' | 'feature': 'metadata key'}}, "
                    f"got {field!r}: {key!r}"
                )
            keys[field] = key
        self._keys = keys
        if isinstance(tag_keys, str) or not all(isinstance(k, str) and k for k in tag_keys):
            raise ConfigurationError(f"tag_keys: expected metadata key names, got {tag_keys!r}")
        self._tag_keys = tuple(tag_keys)
        self._route = route_for(object(), provider, models)
        self._open: dict[UUID, Open] = {}
        self._lock = threading.Lock()
        self._started = itertools.count()
        self._admitting: tuple[Settings, Settings] | None = None

    # Only model events matter: skipping the rest spares LangChain a dispatch per step.
    @property
    def ignore_chain(self) -> bool:
        return True

    @property
    def ignore_agent(self) -> bool:
        return True

    @property
    def ignore_retriever(self) -> bool:
        return True

    @property
    def ignore_retry(self) -> bool:
        return True

    @property
    def ignore_custom_event(self) -> bool:
        return True

    # -- the events: thin shells that drive one flow on the sync or the async store ------
    def _chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._sweep()
        call, settings = self._chat_call(serialized, messages, metadata, kwargs)
        flow = self._start_flow(run_id, call, metadata, settings, batch_of(kwargs))
        self._charge_ahead(run(flow, settings.store))

    async def _achat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        await self._asweep()
        call, settings = self._chat_call(serialized, messages, metadata, kwargs)
        flow = self._start_flow(run_id, call, metadata, settings, batch_of(kwargs))
        await self._acharge_ahead(await arun(flow, settings.async_store))

    def _llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._sweep()
        call, settings = self._completion_call(serialized, prompts, metadata, kwargs)
        flow = self._start_flow(run_id, call, metadata, settings, batch_of(kwargs))
        self._charge_ahead(run(flow, settings.store))

    async def _allm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        await self._asweep()
        call, settings = self._completion_call(serialized, prompts, metadata, kwargs)
        flow = self._start_flow(run_id, call, metadata, settings, batch_of(kwargs))
        await self._acharge_ahead(await arun(flow, settings.async_store))

    def _llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        opened, settings = self._closing(run_id)
        drive(self._end_flow(opened, response, kwargs), settings.store)
        self._sweep()

    async def _allm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        opened, settings = self._closing(run_id)
        await adrive(self._end_flow(opened, response, kwargs), settings.async_store)
        await self._asweep()

    def _llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        opened, settings = self._closing(run_id)
        flow = self._error_flow(opened, error, kwargs.get("response"), self._batch_left(opened))
        drive(flow, settings.store)
        self._sweep()

    async def _allm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        # agenerate() ends every run of a batch itself, the failed ones and the others
        opened, settings = self._closing(run_id)
        flow = self._error_flow(opened, error, kwargs.get("response"), ())
        await adrive(flow, settings.async_store)
        await self._asweep()

    def _new_token(self, token: str, *, run_id: UUID, **kwargs: Any) -> None:
        """Count what a stream delivers: a stream cut inside ``invoke()`` (a model that
        streams internally) ends with no output in its error, only in its tokens."""
        opened = self._open.get(run_id)
        if opened is not None:
            opened.tokens.append(delivered(token, kwargs.get("chunk")))

    async def _anew_token(self, token: str, *, run_id: UUID, **kwargs: Any) -> None:
        """The same, awaited: no executor hop per token in async streams."""
        opened = self._open.get(run_id)
        if opened is not None:
            opened.tokens.append(delivered(token, kwargs.get("chunk")))

    on_chat_model_start = Event(_chat_model_start, _achat_model_start)
    on_llm_start = Event(_llm_start, _allm_start)
    on_llm_end = Event(_llm_end, _allm_end)
    on_llm_error = Event(_llm_error, _allm_error)
    on_llm_new_token = Event(_new_token, _anew_token)

    # -- start: reserve, or refuse before anything is sent ---------------------------------
    def _chat_call(
        self,
        serialized: Mapping[str, Any] | None,
        messages: Sequence[Sequence[BaseMessage]],
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> tuple[ModelCall, Settings]:
        found = metadata or {}
        route = route_of(self._route, serialized, found)
        params = kwargs.get("invocation_params") or {}
        flat = [message for group in messages for message in group]
        return model_call(serialized, flat, params, found, route), self._settings()

    def _completion_call(
        self,
        serialized: Mapping[str, Any] | None,
        prompts: Sequence[str],
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> tuple[ModelCall, Settings]:
        found = metadata or {}
        route = route_of(self._route, serialized, found)
        params = kwargs.get("invocation_params") or {}
        return completion_request(serialized, prompts, params, found, route), self._settings()

    def _start_flow(
        self,
        run_id: UUID,
        call: ModelCall,
        metadata: Mapping[str, Any] | None,
        settings: Settings,
        batch: object = None,
    ) -> Flow[Open | None]:
        """Reserve the call under a frame with its attribution; remember it by run id.
        Returns the call already open under ``run_id``, to charge (class docstring)."""
        try:
            with attributed(self._frame(metadata or {}, settings)):
                admission = yield from admit_flow(settings, call.request)
        except GeneratorExit:
            raise
        except BaseException:
            # LangChain starts every run of a generate() before it sends any: refused
            # here, none of them is sent, and the ones already reserved are freed.
            for other in self._take_batch(batch):
                yield from other.admission.release_flow("another call of its batch was refused")
            raise
        with self._lock:
            earlier = self._open.pop(run_id, None)
            if len(self._open) >= MAX_OPEN_RUNS:
                dropped = self._open.pop(next(iter(self._open)))
                if dropped.admission.reservation is not None:  # no more lease renewals
                    upkeep.untrack(dropped.admission.reservation.id)
                warn_once(
                    ("langchain-open-runs",),
                    "budgetguard: %d LangChain calls started and never ended; dropping the "
                    "oldest (%s): its hold is freed when its lease runs out",
                    MAX_OPEN_RUNS,
                    dropped.label,
                )
            opened = Open(admission, call.label, batch, next(self._started), time.monotonic())
            self._open[run_id] = opened
        return earlier

    def _charge_ahead(self, earlier: Open | None, why: str = "") -> None:
        if earlier is not None:
            drive(unended(earlier, why), earlier.admission.settings.store)

    async def _acharge_ahead(self, earlier: Open | None, why: str = "") -> None:
        if earlier is not None:
            await adrive(unended(earlier, why), earlier.admission.settings.async_store)

    def _overdue(self) -> list[Open]:
        """The calls open longer than ``max_call_s``, taken out (oldest first: ``_open``
        keeps the order they started in)."""
        cutoff = time.monotonic() - self._max_call_s
        with self._lock:
            old = list(
                itertools.takewhile(lambda key: self._open[key].opened_at < cutoff, self._open)
            )
            return [self._open.pop(key) for key in old]

    def _sweep(self) -> None:
        for opened in self._overdue():
            self._charge_ahead(opened, f"no end after max_call_s={self._max_call_s:g}s")

    async def _asweep(self) -> None:
        for opened in self._overdue():
            await self._acharge_ahead(opened, f"no end after max_call_s={self._max_call_s:g}s")

    def _take_batch(self, batch: object) -> list[Open]:
        if batch is None:
            return []
        with self._lock:
            keys = [key for key, run in self._open.items() if run.batch == batch]
            return [self._open.pop(key) for key in keys]

    def _settings(self) -> Settings:
        """The settings to admit with: the policy without the output caps a callback cannot
        send (``max_output_tokens``, ``fit_output``; a downgrade is the frame's business).
        Kept per configuration."""
        settings = current()
        known = self._admitting
        if known is not None and known[0] is settings:
            return known[1]
        policy = settings.policy
        changes: dict[str, Any] = {}
        if policy.fit_output:
            changes["fit_output"] = False
        if policy.max_output_tokens is not None:
            changes["max_output_tokens"] = None
        admitting = (
            replace(settings, policy=policy.model_copy(update=changes)) if changes else settings
        )
        self._admitting = (settings, admitting)
        return admitting

    def _frame(self, metadata: Mapping[str, Any], settings: Settings) -> Frame | None:
        """A frame with the handler's and the run's attribution, and ``raise`` where the
        policy or an enclosing frame asks for a downgrade; None when there is nothing to
        add."""
        who = dict(self._attribution)
        for name, key in self._keys.items():
            value = metadata.get(key)
            if value is not None:
                who[name] = attribution_id(value, f"metadata[{key!r}]")
        tags = dict(self._tags)
        for key in self._tag_keys:
            value = metadata.get(key)
            if value is not None:
                tags[key] = tag_value(value, f"metadata[{key!r}]")
        return frame_of(who, tags, settings)

    # -- end: settle from the usage, or charge conservatively ------------------------------
    def _closing(self, run_id: UUID) -> tuple[Open | None, Settings]:
        """The call ``run_id`` started (None: not seen), and the settings it was admitted
        with: its hold lives in their store."""
        with self._lock:
            opened = self._open.pop(run_id, None)
        return opened, opened.admission.settings if opened is not None else current()

    def _end_flow(
        self, opened: Open | None, response: LLMResult, kwargs: Mapping[str, Any]
    ) -> Flow[None]:
        try:
            found = billed(response)
        except Exception as error:  # charged its reservation rather than left held
            found = Billed(None, None, f"its result could not be read ({describe_error(error)})")
        if opened is not None:
            yield from charge_of(opened.admission, opened.label, found).settle(opened.admission)
        elif not found.cached:
            # An end whose start this handler never saw (LangChain skips a non-inline
            # handler's on_llm_start in async code when an inline one is attached): the
            # provider billed it, so it is charged to the budgets in force, unchecked.
            with attributed(self._frame(kwargs.get("metadata") or {}, current())):
                admission = yield from admit_after_flow(found.model)
            where = "LangChain model (start not seen)"
            if found.usage is not None:
                charge = priced(admission, where, found.usage, found.model)
            else:
                charge = worst_case_of(admission, where, found.unreadable or "no usage")
            yield from charge.settle(admission)

    def _batch_left(self, failed: Open | None) -> list[Open]:
        """The other calls still open in ``failed``'s batch: a sync ``generate()`` over
        several message lists stops at its first failure and ends none of them."""
        return self._take_batch(failed.batch) if failed is not None else []

    def _error_flow(
        self, opened: Open | None, error: BaseException, response: object, left: Sequence[Open]
    ) -> Flow[None]:
        if opened is None:
            return
        admission = opened.admission
        found = billed_error(error)  # answered, then refused by the SDK: billed
        partial = partial_output(response) or opened.streamed()
        if found is not None:
            yield from charge_of(admission, opened.label, found).settle(admission)
        elif partial is None:
            yield from release_unanswered(admission, opened.label, error)
        else:
            yield from consumed(admission, partial).settle(admission)
        for other in left:
            if other.started < opened.started:  # answered, but its usage never reported
                why = "a later call of its generate() batch failed; LangChain dropped its usage"
                yield from unpriced(other.admission, other.label, None, why).settle(other.admission)
            else:  # never sent: the batch stopped at the failure
                yield from other.admission.release_flow("an earlier call of its batch failed")
