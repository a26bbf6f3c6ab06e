"""pydantic-ai: ``BudgetedModel`` puts a budget in front of every request an agent makes.

::

    from budgetguard.integrations.pydantic_ai import BudgetedModel

    agent = Agent(BudgetedModel(OpenAIChatModel("gpt-4o", provider=...)))
    with bg.spend_limit(usd="0.50", user="u-42"):
        agent.run_sync("...")

It wraps any pydantic-ai model (``WrapperModel``) rather than subclassing each
one, and guards the one place every agent run, stream, graph iteration and
direct ``model_request`` goes through: ``Model.request`` and
``Model.request_stream``. Each request is

- estimated at its worst case, from the messages, settings and tool
  definitions rendered as the SDK call the model makes (``_pydantic_ai_request``:
  the same rules as ``bg.instrument`` for that wire format), and reserved on
  every budget in force (``bg.aadmit``) - or refused with ``bg.BudgetExceeded``
  before anything is sent. pydantic-ai does not wrap an error a model raises,
  so it reaches the caller of ``agent.run`` / ``run_sync`` as it is;
- sent with what the policy chose: a downgraded model (the wrapped model
  renamed, or the one given in ``downgrades=``) and an output cap (the
  ``max_tokens`` setting, which every pydantic-ai model sends);
- settled from the response's ``usage`` (``_pydantic_ai_charge``), streams
  when they close: from the final usage, or what was consumed when closed
  early. A request the provider refused or never got releases its hold; one
  whose answer pydantic-ai could not read is charged its reservation.

Budgets come from the caller's frames (``bg.spend_limit`` / ``bg.budget``, a
``contextvars`` stack): pydantic-ai runs the model and the tools in tasks
that copy the caller's context, so a tool that calls an LLM itself - an
instrumented client, another agent - spends from the same frames.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import anyio
from pydantic_ai.exceptions import AgentRunError, UnexpectedModelBehavior, UserError
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model, ModelRequestContext, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings, merge_model_settings

from .._core.errors import BudgetError, ConfigurationError, describe_error
from .._engine.admission import Admission, warn_once
from .._engine.charges import Charge, unpriced
from .._engine.flow import aadmit
from ..providers.calls import warn_unanswered
from ..providers.routes import Route, route_for
from ..stores.drive import arun
from ._pydantic_ai_charge import WHERE, consumed_charge, response_charge
from ._pydantic_ai_request import Wire, cap_settings, llm_request, wire_of

if TYPE_CHECKING:
    from pydantic_ai import RunContext
    from pydantic_ai.models.batch import Batch, EncodedBatchRequest

__all__ = ["BudgetedModel"]


@dataclass(init=False)
class BudgetedModel(WrapperModel):
    """A pydantic-ai model whose every request is reserved, then settled, on the budgets
    in force; a request that does not fit raises ``bg.BudgetExceeded`` unsent.

    ``provider``: the genai-prices provider id to price under (``"openrouter"``,
    ``"azure"``, ...); by default the one the model's base URL belongs to, else prices
    by model name. ``models``: names the API takes mapped to the model to price them as
    (an Azure deployment: ``{"prod-chat": "gpt-4o"}``). ``downgrades``: the model to send
    when the policy downgrades to a name (``{"gpt-4o-mini": OpenAIChatModel(...)}``);
    without one, the wrapped model is sent under the new name.
    """

    _route: Route = field(repr=False)
    _wire: Wire = field(repr=False)
    _downgrades: dict[str, Model] = field(repr=False, compare=False)

    def __init__(
        self,
        wrapped: Model | str,
        *,
        provider: str | None = None,
        models: Mapping[str, str] | None = None,
        downgrades: Mapping[str, Model] | None = None,
    ) -> None:
        if not isinstance(wrapped, Model | str):
            raise ConfigurationError(
                f"wrapped: expected a pydantic-ai Model or model name, got {type(wrapped).__name__}"
            )
        super().__init__(wrapped)
        inner: Model | None = self.wrapped
        while inner is not None:  # through InstrumentedModel, ConcurrencyLimitedModel, ...
            if isinstance(inner, BudgetedModel):
                raise ConfigurationError(
                    "wrapped: already a BudgetedModel; wrapping it again would reserve and "
                    "charge each request twice"
                )
            inner = getattr(inner, "wrapped", None)
        inner = self.wrapped
        self._route = _route(inner, provider, models)
        self._wire = wire_of(inner)
        self._downgrades = dict(downgrades or {})
        for name, model in self._downgrades.items():
            if not isinstance(model, Model):
                kind = type(model).__name__
                raise ConfigurationError(
                    f"downgrades[{name!r}]: expected a pydantic-ai Model, got {kind}"
                )

    # -- requests -----------------------------------------------------------------------
    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        admission, model, settings = await self._reserve(
            messages, model_settings, model_request_parameters
        )
        try:
            response = await model.request(messages, settings, model_request_parameters)
        except BaseException as error:
            await _failed(admission, error)
            raise
        await _settle(admission, response_charge(admission, response))
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        admission, model, settings = await self._reserve(
            messages, model_settings, model_request_parameters
        )
        opened: list[StreamedResponse] = []
        async with AsyncExitStack() as stack:
            # Registered first, so it runs last: once the wrapped stream has closed.
            stack.push_async_callback(_settle_stream, admission, opened)
            try:
                stream = await stack.enter_async_context(
                    model.request_stream(messages, settings, model_request_parameters, run_context)
                )
            except BaseException as error:
                await _failed(admission, error)
                raise
            opened.append(stream)
            yield stream

    async def _reserve(
        self,
        messages: Sequence[ModelMessage],
        model_settings: ModelSettings | None,
        params: ModelRequestParameters,
    ) -> tuple[Admission, Model, ModelSettings | None]:
        """Reserve the request's worst case, as the wrapped model would send it; then the
        model and settings to send, as the policy chose (a downgrade, an output cap)."""
        inner = self.wrapped
        merged = merge_model_settings(inner.settings, model_settings)
        settings, prepared = inner.prepare_request(merged, params)
        request = self._route.request(
            llm_request(self._wire, inner.model_name, messages, settings, prepared)
        )
        admission = await aadmit(request)
        try:  # nothing is sent yet: any failure from here releases the hold
            model = self._model_for(admission.model)
            if admission.output_cap is not None:
                priced_as = request.priced_as(model.model_name)
                model_settings = cap_settings(
                    self._wire, model_settings, admission.output_cap, priced_as, merged
                )
        except BaseException as error:
            await _release(admission, error)
            raise
        return admission, model, model_settings

    def _model_for(self, name: str | None) -> Model:
        inner = self.wrapped
        if name is None or name == inner.model_name:
            return inner
        found = self._downgrades.get(name)
        if found is None:
            found = self._downgrades[name] = _renamed(inner, name)
        return found

    # -- spending this adapter does not guard -----------------------------------------
    async def compact_messages(
        self, request_context: ModelRequestContext, *, instructions: str | None = None
    ) -> ModelResponse:
        _unguarded("compact_messages")
        return await super().compact_messages(request_context, instructions=instructions)

    async def batch_create(self, requests: Sequence[EncodedBatchRequest]) -> Batch:
        _unguarded("batch_create")
        return await super().batch_create(requests)


# -- helpers ------------------------------------------------------------------------------
def _route(model: Model, provider: str | None, models: Mapping[str, str] | None) -> Route:
    """Where the model's requests go, priced as ``bg.instrument`` prices its SDK client:
    the provider its base URL belongs to (or the one given), else by model name, with
    the SDK's own provider (``openai``, ``anthropic``) as the hint."""
    client = getattr(model, "client", None)
    route = route_for(client if client is not None else model, provider, models)
    if route.home is None:
        route = replace(route, home=_provider_id(model.system))
    return route


@functools.lru_cache(maxsize=64)
def _provider_id(system: str) -> str | None:
    """genai-prices' id of a pydantic-ai provider name, when it knows one."""
    from genai_prices.data_snapshot import get_snapshot

    try:
        return str(get_snapshot().find_provider(None, system, None).id)
    except LookupError:
        return None


def _renamed(model: Model, name: str) -> Model:
    """``model`` sending ``name``: a shallow copy (same provider and client, same
    settings) with its model name replaced and its cached profile dropped."""
    if not isinstance(getattr(model, "_model_name", None), str):
        raise ConfigurationError(
            f"BudgetedModel: the policy downgraded {model.model_name!r} to {name!r}, but a "
            f"{type(model).__name__} cannot be renamed; pass downgrades={{{name!r}: <model>}}"
        )
    clone = copy.copy(model)
    vars(clone)["_model_name"] = name
    for cls in type(clone).__mro__:
        for attribute, value in vars(cls).items():
            if isinstance(value, functools.cached_property):
                vars(clone).pop(attribute, None)
    return clone


async def _settle_stream(admission: Admission, opened: list[StreamedResponse]) -> None:
    """A finished stream is charged its usage; one that stopped early what it consumed.
    (A stream that never opened was released already.)"""
    if not opened:
        return
    try:
        response = opened[0].get()
        if response.state in ("complete", "suspended"):
            charge = response_charge(admission, response)
        else:
            charge = consumed_charge(admission, response)
    except Exception as error:  # nothing readable left: the hold, as for a blind stream
        why = f"its stream could not be read ({describe_error(error)})"
        charge = unpriced(admission, WHERE, admission.model, why)
    await _settle(admission, charge)


async def _settle(admission: Admission, charge: Charge) -> None:
    """Charge ``admission`` (once), even when the request's task is being cancelled."""
    with anyio.CancelScope(shield=True):
        await arun(charge.settle(admission), admission.settings.async_store)


async def _release(admission: Admission, error: BaseException) -> None:
    with anyio.CancelScope(shield=True):
        await admission.arelease(describe_error(error))


async def _failed(admission: Admission, error: BaseException) -> None:
    """A request that raised: released when nothing was billed (refused, unreachable,
    cancelled, rejected before sending), else charged its reservation - the provider
    answered, and its answer could not be read."""
    if _billed(error):
        why = f"its response could not be read ({describe_error(error)})"
        await _settle(admission, unpriced(admission, WHERE, admission.model, why))
    else:
        if not isinstance(error, BudgetError | UserError):
            warn_unanswered(WHERE, admission.model, error)
        await _release(admission, error)


def _billed(error: BaseException) -> bool:
    if not isinstance(error, Exception) or isinstance(error, BudgetError | UserError):
        return False  # cancelled, a budget refusal, a request pydantic-ai refused to send
    if isinstance(error, UnexpectedModelBehavior):
        return True  # an answer it could not use: empty, invalid, filtered, cut at max_tokens
    # The provider refused or was not reached (HTTP status, connection, timeout), or the
    # run stopped before sending; anything else broke while reading an answer.
    return not isinstance(error, AgentRunError)


def _unguarded(method: str) -> None:
    warn_once(
        ("unguarded", "pydantic-ai", method),
        "budgetguard: BudgetedModel.%s is not guarded: its calls are not reserved or charged "
        "to any budget (see docs/integrations.md, 'pydantic-ai')",
        method,
    )
