"""``instrument(client)``: every LLM call of a supported SDK client is guarded.

Each call goes estimate -> reserve -> call -> settle (``calls.call_flow``):

- the request's keyword arguments become an ``LLMRequest`` (model, messages,
  system, tools, max output tokens) that the engine prices at its worst case;
- when the policy downgrades, the ``model`` sent to the provider is rewritten;
- a response is settled from its reported usage and model;
- a stream is settled when it ends (from the provider's final usage), when
  the caller closes or abandons it (what was consumed: the input estimate
  plus the output seen so far, at most the estimate), or when it fails midway;
- an error before any response (HTTP status, connection) releases the hold
  and re-raises the SDK's own exception.

Which methods are guarded is data: each adapter in ``registry.ADAPTERS``
names its SDK and its surfaces, and this module wraps them, generically.
Only the resource objects of the given client instance are changed; SDK
classes are untouched, so other clients stay unguarded and instrumenting
twice is a no-op. The provider SDKs are never imported here: clients are
recognised by the module of their class, so ``import budgetguard`` works
without them.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from .._core.errors import ConfigurationError
from .._engine.config import Settings, current
from ..stores.drive import Flow, Invoke, arun, run
from .base import Adapter, Surface
from .calls import PreparedCall, StreamMeter, call_flow, describe
from .registry import ADAPTERS, adapters_for
from .streams import AsyncGuardedStream, GuardedStream

__all__ = ["instrument"]

log = logging.getLogger("budgetguard")

C = TypeVar("C")
_MARK = "_budgetguard_instrumented"


def _prepare(
    original: Callable[..., Any],
    adapter: Adapter,
    surface: Surface,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[Flow[tuple[Any, StreamMeter | None]], Settings]:
    """The call's flow, and the settings (store) it runs on."""
    settings = current()
    streaming = surface.streams and kwargs.get("stream") is True
    call = PreparedCall.prepare(adapter, kwargs, stream=streaming)
    return call_flow(call, settings, original, args, kwargs), settings


def _guard_sync(original: Callable[..., Any], adapter: Adapter, surface: Surface) -> Any:
    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        flow, settings = _prepare(original, adapter, surface, args, kwargs)
        result, meter = run(flow, settings.store)
        return result if meter is None else GuardedStream(result, meter)

    setattr(guarded, _MARK, True)
    return guarded


def _guard_async(original: Callable[..., Any], adapter: Adapter, surface: Surface) -> Any:
    @functools.wraps(original)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        flow, settings = _prepare(original, adapter, surface, args, kwargs)
        result, meter = await arun(flow, settings.async_store)
        return result if meter is None else AsyncGuardedStream(result, meter)

    setattr(guarded, _MARK, True)
    return guarded


class _StreamManager:
    """Wraps a stream-manager method (Anthropic's ``messages.stream(...)``):
    admits on enter, settles on exit.

    The SDK's ``MessageStream`` reads events from its raw ``Stream``; that raw
    stream is swapped for a guarded one, so ``text_stream``,
    ``get_final_message()`` and plain iteration are all metered.
    """

    def __init__(
        self, original: Callable[..., Any], adapter: Adapter, kwargs: dict[str, Any]
    ) -> None:
        self._original = original
        self._adapter = adapter
        self._kwargs = kwargs
        self._manager: Any = None
        self._meter: StreamMeter | None = None
        self._settings: Settings | None = None

    def _enter(self, settings: Settings, *, is_async: bool) -> Flow[Any]:
        self._settings = settings
        call = PreparedCall.prepare(self._adapter, self._kwargs, stream=True)
        admission = yield from call.admit(settings)
        try:
            call.admitted(admission, self._kwargs)
            self._meter = StreamMeter(call, admission)
            self._manager = self._original(**self._kwargs)
            enter = self._manager.__aenter__ if is_async else self._manager.__enter__
            stream = yield Invoke(enter)
        except BaseException as error:
            yield from admission.release_flow(describe(error))
            raise
        return stream

    def _wrap(self, stream: Any, guarded: type[GuardedStream | AsyncGuardedStream]) -> Any:
        assert self._meter is not None
        raw = getattr(stream, "_raw_stream", None)
        if raw is None:
            log.warning(
                "budgetguard: cannot meter this SDK's message stream; charging the estimate"
            )
            self._meter.blind = True
            return stream
        stream._raw_stream = guarded(raw, self._meter)
        return stream

    def __enter__(self) -> Any:
        settings = current()
        stream = run(self._enter(settings, is_async=False), settings.store)
        return self._wrap(stream, GuardedStream)

    async def __aenter__(self) -> Any:
        settings = current()
        stream = await arun(self._enter(settings, is_async=True), settings.async_store)
        return self._wrap(stream, AsyncGuardedStream)

    def _exit(self, exc_info: tuple[Any, Any, Any], *, is_async: bool) -> Flow[None]:
        """Close the SDK's manager, then settle what its stream consumed."""
        close = self._manager.__aexit__ if is_async else self._manager.__exit__
        try:
            yield Invoke(functools.partial(close, *exc_info))
        finally:
            if self._meter is not None:
                yield from self._meter.finish_flow()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._settings is not None
        run(self._exit((exc_type, exc, tb), is_async=False), self._settings.store)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._settings is not None
        await arun(self._exit((exc_type, exc, tb), is_async=True), self._settings.async_store)


def _guard_stream_manager(original: Callable[..., Any], adapter: Adapter) -> Any:
    @functools.wraps(original)
    def stream(**kwargs: Any) -> _StreamManager:
        return _StreamManager(original, adapter, kwargs)

    setattr(stream, _MARK, True)
    return stream


# -- instrument ------------------------------------------------------------------------
def _sdk_of(client: object) -> str | None:
    known = {adapter.sdk for adapter in ADAPTERS}
    for cls in type(client).__mro__:
        root = cls.__module__.split(".", 1)[0]
        if root in known:
            return root
    return None


def _is_async(client: object) -> bool:
    # The SDKs' async resource methods hide behind sync decorators, so ask the class.
    return any(cls.__name__.startswith("Async") for cls in type(client).__mro__)


def _resource(client: object, path: tuple[str, ...]) -> object | None:
    resource: object | None = client
    for name in path:
        resource = getattr(resource, name, None)
    return resource


def _wrap(resource: object, surface: Surface, adapter: Adapter, *, is_async: bool) -> bool:
    """Replace ``resource.<method>`` by its guarded twin; False when there is none."""
    original = getattr(resource, surface.method, None)
    if original is None:
        return False
    if getattr(original, _MARK, False):
        return True
    if surface.kind == "stream_manager":
        guarded = _guard_stream_manager(original, adapter)
    elif is_async or inspect.iscoroutinefunction(original):
        guarded = _guard_async(original, adapter, surface)
    else:
        guarded = _guard_sync(original, adapter, surface)
    setattr(resource, surface.method, guarded)
    return True


def instrument(client: C) -> C:
    """Guard ``client``'s LLM calls with the budgets in force; returns the same client.

    Supports ``openai.OpenAI`` / ``AsyncOpenAI`` (``chat.completions.create`` and
    ``.parse``, ``responses.create`` and ``.parse``, streaming included) and
    ``anthropic.Anthropic`` / ``AsyncAnthropic`` (``messages.create``,
    ``messages.stream``). Instrumenting a client twice changes nothing.
    """
    if getattr(client, _MARK, False):
        return client
    sdk = _sdk_of(client)
    if sdk is None:
        known = ", ".join(sorted({adapter.sdk for adapter in ADAPTERS}))
        raise ConfigurationError(
            f"instrument: expected a client of {known}, got {type(client).__name__}"
        )
    is_async = _is_async(client)
    guarded = 0
    for adapter in adapters_for(sdk):
        for surface in adapter.surfaces:
            resource = _resource(client, surface.path)
            if resource is not None and _wrap(resource, surface, adapter, is_async=is_async):
                guarded += 1
    if not guarded:
        raise ConfigurationError(
            f"instrument: {type(client).__name__} has none of the {sdk} methods budgetguard guards"
        )
    setattr(client, _MARK, True)
    return client
