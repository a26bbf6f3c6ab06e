"""``bg_litellm.completion(...)`` / ``acompletion(...)``: LiteLLM calls, guarded.

::

    from budgetguard.integrations import litellm as bg_litellm

    response = bg_litellm.completion(model="anthropic/claude-haiku-4-5", messages=[...],
                                     max_tokens=300)

Same arguments and return values as ``litellm.completion`` / ``acompletion``
(it is called underneath, looked up at each call), with the budget around it:
the call's worst case is estimated from ``model``, ``messages``, ``tools``,
``response_format`` and the output cap (``max_tokens`` /
``max_completion_tokens``, else the policy's or the model's maximum), priced
at the provider LiteLLM routes it to (``_litellm_wire.py``), reserved on every
budget in force, and settled from the usage the provider reported - never
from LiteLLM's ``response_cost``. A call that does not fit raises
``bg.BudgetExceeded`` before anything is sent. A downgrade rewrites ``model``
(keeping its provider prefix) and a policy output cap ``max_tokens``.

``stream=True`` returns LiteLLM's stream, metered: the final usage chunk is
asked for (``stream_options={"include_usage": True}``, hidden again from a
caller who did not ask for it) and settles the call when the stream ends; a
stream closed or cut early is charged what it consumed, and one that ends
without the provider's usage is charged its reservation and logged.

Why a wrapper and not a LiteLLM callback: LiteLLM runs SDK callbacks inside
``except Exception``, so a callback cannot stop a call. (The proxy is another
matter: ``litellm_proxy.BudgetHook`` refuses in its pre-call hook.)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import litellm as _litellm

from .._engine.config import Settings, current
from ..providers.calls import release_unanswered
from ..providers.meter import StreamMeter
from ..providers.prepared import PreparedCall
from ..providers.routes import Route
from ..providers.streams import AsyncGuardedStream, GuardedStream
from ..stores.drive import Flow, Invoke, arun, run
from ._litellm_wire import LiteLLMCall, LiteLLMStreamTracker

__all__ = ["acompletion", "completion"]

_ROUTE = Route()
"""The provider comes from LiteLLM's routing (``LiteLLMCall.of``), not from a client."""

_Sent = tuple[Any, StreamMeter | None]


def _keywords(
    send: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Every argument by name (``completion`` and ``acompletion`` order theirs differently)."""
    if not args:
        return dict(kwargs)
    bound = inspect.signature(send).bind_partial(*args, **kwargs)
    named: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if bound.signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        else:
            named[name] = value
    return named


def _prepare(
    send: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Flow[_Sent], Settings]:
    """The call's flow, and the settings it runs under (read once: a reconfiguration never
    tears a call in half). Raises naming a bad argument before anything is reserved."""
    named = _keywords(send, args, kwargs)
    adapter = LiteLLMCall.of(named)
    call = PreparedCall.prepare(adapter, named, _ROUTE, stream=named.get("stream") is True)
    settings = current()
    return _call_flow(call, adapter, settings, send, named), settings


def _call_flow(
    call: PreparedCall,
    adapter: LiteLLMCall,
    settings: Settings,
    send: Callable[..., Any],
    kwargs: dict[str, Any],
) -> Flow[_Sent]:
    """Admit, send what the policy chose, settle (or hand the stream back with its meter)."""
    admission = yield from call.admit(settings)
    call.admitted(admission, kwargs)
    if admission.model is not None and admission.model != call.request.model:
        kwargs["model"] = adapter.sent_model(admission.model)
    try:
        result = yield Invoke(functools.partial(send, **kwargs))
    except BaseException as error:
        yield from release_unanswered(admission, "litellm.completion", error)
        raise
    if call.streaming:
        meter = StreamMeter(call, admission)
        if isinstance(meter.tracker, LiteLLMStreamTracker):
            meter.tracker.stream = result
        return result, meter
    yield from adapter.charge(admission, result).settle(admission)
    return result, None


def completion(*args: Any, **kwargs: Any) -> Any:
    """``litellm.completion``, guarded (see the module docstring)."""
    flow, settings = _prepare(_litellm.completion, args, kwargs)
    result, meter = run(flow, settings.store)
    return result if meter is None else GuardedStream(result, meter)


async def acompletion(*args: Any, **kwargs: Any) -> Any:
    """``litellm.acompletion``, guarded (see the module docstring)."""
    flow, settings = _prepare(_litellm.acompletion, args, kwargs)
    result, meter = await arun(flow, settings.async_store)
    return result if meter is None else AsyncGuardedStream(result, meter)
