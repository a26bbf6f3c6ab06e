"""``instrument(client)``: every create/stream call of an OpenAI or Anthropic client is guarded.

Each call goes estimate -> reserve (``admit``) -> call -> settle:

- the request's keyword arguments become an ``LLMRequest`` (model, messages,
  system, tools, max output tokens) that the engine prices at its worst case;
- when the policy downgrades, the ``model`` sent to the provider is rewritten;
- a response is settled from its reported usage and model;
- a stream is settled when it ends (from the provider's final usage), when
  the caller closes or abandons it (what was consumed: the input estimate
  plus the output seen so far, at most the estimate), or when it fails midway;
- an error before any response (HTTP status, connection) releases the hold
  and re-raises the SDK's own exception.

Only the resource objects of the given client instance are changed (their
``create`` / ``parse`` / ``stream`` attributes); SDK classes are untouched,
so other clients stay unguarded and instrumenting twice is a no-op. The
provider SDKs are never imported here: clients are recognised by the module
of their class, so ``import budgetguard`` works without them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from ._engine import Admission, LLMRequest, aadmit, admit
from ._errors import ConfigurationError, UsageError
from ._extract import (
    AnthropicStreamTracker,
    OpenAIChatStreamTracker,
    OpenAIResponsesStreamTracker,
    StreamTracker,
    usage_from_response,
)
from ._usage import Usage

__all__ = ["instrument"]

log = logging.getLogger("budgetguard")

C = TypeVar("C")
_MARK = "_budgetguard_instrumented"


# -- requests: SDK keyword arguments -> LLMRequest ----------------------------------
def _int_arg(kwargs: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = kwargs.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _mapping(item: object) -> Mapping[str, Any]:
    if isinstance(item, Mapping):
        return item
    dump = getattr(item, "model_dump", None)
    if callable(dump):
        dumped = dump()
        if isinstance(dumped, Mapping):
            return dumped
    return {"content": str(item)}


def _items(kwargs: dict[str, Any], name: str) -> list[Mapping[str, Any]] | None:
    """A list argument as mappings for the estimate; a one-shot iterable is kept for the SDK."""
    value = kwargs.get(name)
    if value is None or isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return None
    if not isinstance(value, (list, tuple)):
        value = kwargs[name] = list(value)  # a generator: read once, hand the list on
    return [_mapping(item) for item in value]


def _model_arg(kwargs: Mapping[str, Any], where: str) -> str:
    model = kwargs.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigurationError(f"{where}: model= must be a model name to budget the call")
    return model


def _system(value: object) -> str | list[Mapping[str, Any]] | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        return [_mapping(block) for block in value]
    return None


def _openai_chat(kwargs: dict[str, Any]) -> LLMRequest:
    return LLMRequest(
        model=_model_arg(kwargs, "chat.completions.create"),
        messages=_items(kwargs, "messages"),
        tools=_items(kwargs, "tools"),
        max_tokens=_int_arg(kwargs, "max_completion_tokens", "max_tokens"),
        provider="openai",
    )


def _openai_responses(kwargs: dict[str, Any]) -> LLMRequest:
    given = kwargs.get("input")
    return LLMRequest(
        model=_model_arg(kwargs, "responses.create"),
        prompt=given if isinstance(given, str) else None,
        messages=None if isinstance(given, str) else _items(kwargs, "input"),
        system=_system(kwargs.get("instructions")),
        tools=_items(kwargs, "tools"),
        max_tokens=_int_arg(kwargs, "max_output_tokens"),
        provider="openai",
    )


def _anthropic_messages(kwargs: dict[str, Any]) -> LLMRequest:
    return LLMRequest(
        model=_model_arg(kwargs, "messages.create"),
        messages=_items(kwargs, "messages"),
        system=_system(kwargs.get("system")),
        tools=_items(kwargs, "tools"),
        max_tokens=_int_arg(kwargs, "max_tokens"),
        provider="anthropic",
    )


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """One guarded SDK method: how to read its request and follow its stream."""

    name: str
    request: Callable[[dict[str, Any]], LLMRequest]
    tracker: Callable[[], StreamTracker]
    stream_options: bool = False  # chat completions: ask for the final usage chunk


_CHAT = _Endpoint("chat.completions", _openai_chat, OpenAIChatStreamTracker, stream_options=True)
_RESPONSES = _Endpoint("responses", _openai_responses, OpenAIResponsesStreamTracker)
_MESSAGES = _Endpoint("messages", _anthropic_messages, AnthropicStreamTracker)


@dataclass(slots=True)
class _Call:
    """One call's request, prepared before admission and adjusted after it."""

    endpoint: _Endpoint
    request: LLMRequest
    streaming: bool
    hide_usage_chunk: bool = False

    @classmethod
    def prepare(cls, endpoint: _Endpoint, kwargs: dict[str, Any], *, stream: bool) -> _Call:
        call = cls(endpoint, endpoint.request(kwargs), stream)
        if stream and endpoint.stream_options:
            options = kwargs.get("stream_options")
            options = dict(options) if isinstance(options, Mapping) else {}
            if "include_usage" not in options:
                # The caller did not ask for the usage chunk: request it, and hide it
                # again so code reading chunk.choices[0] sees the stream it expects.
                options["include_usage"] = True
                kwargs["stream_options"] = options
                call.hide_usage_chunk = True
        return call

    def admitted(self, admission: Admission, kwargs: dict[str, Any]) -> None:
        if admission.model is not None and admission.model != self.request.model:
            kwargs["model"] = admission.model


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


# -- settling --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Charge:
    nanos: int
    usage: Usage | None
    model: str | None
    error: UsageError | None = None


def _charge_response(admission: Admission, result: object, where: str) -> _Charge:
    """What a complete response costs; its estimate when its usage cannot be read."""
    try:
        found = usage_from_response(result)
    except UsageError as error:
        log.error("budgetguard: %s: %s; charging the estimate", where, error)
        return _Charge(admission.estimate, None, None, error)
    if found is None:
        log.warning(
            "budgetguard: %s returned %s without usage; charging the estimate",
            where,
            type(result).__name__,
        )
        return _Charge(admission.estimate, None, None)
    model, usage = found
    return _Charge(admission.price(usage, model), usage, model)


class _Meter:
    """Follows one stream and settles it exactly once, however it ends."""

    def __init__(self, call: _Call, admission: Admission) -> None:
        self.call = call
        self.admission = admission
        self.tracker = call.endpoint.tracker()
        self.finished = False
        self.blind = False  # events cannot be seen: charge the estimate

    def feed(self, event: object) -> bool:
        """Track ``event``; False when it is the injected usage chunk the caller never asked for."""
        self.tracker.feed(event)
        if self.call.hide_usage_chunk:
            choices = getattr(event, "choices", None)
            if choices is not None and len(choices) == 0 and getattr(event, "usage", None):
                return False
        return True

    def _input_estimate(self) -> int | None:
        model, request = self.admission.model, self.call.request
        if model is None or request is None:
            return None
        try:
            from . import _tokens

            rates = self.admission.settings.prices.rates(model, request.provider)
            counted = _tokens.estimate_tokens(
                model,
                messages=request.messages,
                prompt=request.prompt,
                system=request.system,
                tools=request.tools,
                max_tokens=1,
                rates=rates,
            )
            return int(counted[0])
        except Exception:
            log.debug("budgetguard: no input estimate for a partial stream", exc_info=True)
            return None

    def charge(self) -> _Charge:
        tracker, admission = self.tracker, self.admission
        if self.blind:
            return _Charge(admission.estimate, None, None)
        if tracker.usage is not None:
            return _Charge(
                admission.price(tracker.usage, tracker.model), tracker.usage, tracker.model
            )
        # Ended without the final usage (closed, abandoned, cut): charge what was
        # consumed, never more than was held and never $0 for a request the
        # provider already billed.
        input_estimate = None if tracker.input_usage is not None else self._input_estimate()
        if tracker.input_usage is None and input_estimate is None:
            return _Charge(admission.estimate, None, tracker.model)
        usage = tracker.consumed(input_estimate or 0)
        try:
            nanos = admission.price(usage, tracker.model)
        except Exception:
            nanos = admission.estimate
        if admission.estimate:
            nanos = min(nanos, admission.estimate)
        return _Charge(nanos, usage, tracker.model)

    def take(self) -> _Charge | None:
        if self.finished:
            return None
        self.finished = True
        return self.charge()

    def finish(self) -> None:
        charge = self.take()
        if charge is not None:
            self.admission.settle_nanos(charge.nanos, model=charge.model, usage=charge.usage)

    async def afinish(self) -> None:
        charge = self.take()
        if charge is not None:
            await self.admission.asettle_nanos(charge.nanos, model=charge.model, usage=charge.usage)


_background: set[asyncio.Task[None]] = set()


def _finish_abandoned(meter: _Meter, *, is_async: bool) -> None:
    """A stream collected unfinished: settle now (sync) or on the running loop (async)."""
    if meter.finished:
        return
    try:
        if is_async:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None and not loop.is_closed():
                task = loop.create_task(meter.afinish())
                _background.add(task)
                task.add_done_callback(_background.discard)
                return
        meter.finish()
    except Exception:
        log.exception("budgetguard: settling an abandoned stream failed")


class _Proxy:
    """Delegates everything it does not define to the SDK object it wraps."""

    _inner: Any

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("_inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)


class _SettlingResponse(_Proxy):
    """A stream's HTTP response as the SDK's stream helpers hold it: they close it,
    not the stream, when their ``with`` block ends (``responses.stream()``,
    ``chat.completions.stream()``), so closing it settles what was consumed."""

    def __init__(self, inner: Any, meter: _Meter) -> None:
        self._inner = inner
        self._meter = meter

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._meter.finish()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            await self._meter.afinish()


class _MeteredStream(_Proxy):
    """What the sync and async guarded streams share: the SDK stream, its meter."""

    def __init__(self, inner: Any, meter: _Meter) -> None:
        self._inner = inner
        self._meter = meter
        self._iterator: Any = None

    @property
    def response(self) -> _SettlingResponse:
        return _SettlingResponse(self._inner.response, self._meter)

    def __del__(self) -> None:
        meter = self.__dict__.get("_meter")
        if meter is not None:
            _finish_abandoned(meter, is_async=isinstance(self, AsyncGuardedStream))


class GuardedStream(_MeteredStream):
    """An SDK ``Stream`` whose events feed the meter; settles on end, close or collection."""

    def __iter__(self) -> GuardedStream:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = iter(self._inner)
        while True:
            try:
                event = next(self._iterator)
                keep = self._meter.feed(event)
            except BaseException:
                self._meter.finish()
                raise
            if keep:
                return event

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._meter.finish()

    def __enter__(self) -> GuardedStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncGuardedStream(_MeteredStream):
    """An SDK ``AsyncStream`` whose events feed the meter."""

    def __aiter__(self) -> AsyncGuardedStream:
        return self

    async def __anext__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._inner.__aiter__()
        while True:
            try:
                event = await self._iterator.__anext__()
                keep = self._meter.feed(event)
            except BaseException:
                await self._meter.afinish()
                raise
            if keep:
                return event

    async def close(self) -> None:
        try:
            await self._inner.close()
        finally:
            await self._meter.afinish()

    async def __aenter__(self) -> AsyncGuardedStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


# -- guarded methods ------------------------------------------------------------------
def _guard_sync(original: Callable[..., Any], endpoint: _Endpoint, *, streams: bool) -> Any:
    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        call = _Call.prepare(endpoint, kwargs, stream=streams and kwargs.get("stream") is True)
        admission = admit(call.request)
        call.admitted(admission, kwargs)
        try:
            result = original(*args, **kwargs)
        except BaseException as error:
            admission.release(_describe(error))
            raise
        if call.streaming:
            return GuardedStream(result, _Meter(call, admission))
        charge = _charge_response(admission, result, endpoint.name)
        admission.settle_nanos(charge.nanos, model=charge.model, usage=charge.usage)
        if charge.error is not None:
            raise charge.error
        return result

    setattr(guarded, _MARK, True)
    return guarded


def _guard_async(original: Callable[..., Awaitable[Any]], endpoint: _Endpoint) -> Any:
    @functools.wraps(original)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        call = _Call.prepare(endpoint, kwargs, stream=kwargs.get("stream") is True)
        admission = await aadmit(call.request)
        call.admitted(admission, kwargs)
        try:
            result = await original(*args, **kwargs)
        except BaseException as error:
            await admission.arelease(_describe(error))
            raise
        if call.streaming:
            return AsyncGuardedStream(result, _Meter(call, admission))
        charge = _charge_response(admission, result, endpoint.name)
        await admission.asettle_nanos(charge.nanos, model=charge.model, usage=charge.usage)
        if charge.error is not None:
            raise charge.error
        return result

    setattr(guarded, _MARK, True)
    return guarded


class _StreamManager:
    """Wraps Anthropic's ``messages.stream(...)`` manager: admits on enter, settles on exit.

    The SDK's ``MessageStream`` reads events from its raw ``Stream``; that raw
    stream is swapped for a guarded one, so ``text_stream``,
    ``get_final_message()`` and plain iteration are all metered.
    """

    def __init__(self, original: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self._original = original
        self._kwargs = kwargs
        self._manager: Any = None
        self._meter: _Meter | None = None
        self._guard: Any = None

    def _open(self, admission: Admission, call: _Call) -> None:
        call.admitted(admission, self._kwargs)
        self._meter = _Meter(call, admission)
        self._manager = self._original(**self._kwargs)

    def _wrap(self, stream: Any, guarded: type[GuardedStream | AsyncGuardedStream]) -> Any:
        assert self._meter is not None
        raw = getattr(stream, "_raw_stream", None)
        if raw is None:
            log.warning(
                "budgetguard: cannot meter this SDK's message stream; charging the estimate"
            )
            self._meter.blind = True
            return stream
        self._guard = guarded(raw, self._meter)
        stream._raw_stream = self._guard
        return stream

    def __enter__(self) -> Any:
        call = _Call.prepare(_MESSAGES, self._kwargs, stream=True)
        admission = admit(call.request)
        try:
            self._open(admission, call)
            stream = self._manager.__enter__()
        except BaseException as error:
            admission.release(_describe(error))
            raise
        return self._wrap(stream, GuardedStream)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._manager.__exit__(exc_type, exc, tb)
        finally:
            if self._meter is not None:
                self._meter.finish()

    async def __aenter__(self) -> Any:
        call = _Call.prepare(_MESSAGES, self._kwargs, stream=True)
        admission = await aadmit(call.request)
        try:
            self._open(admission, call)
            stream = await self._manager.__aenter__()
        except BaseException as error:
            await admission.arelease(_describe(error))
            raise
        return self._wrap(stream, AsyncGuardedStream)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._manager.__aexit__(exc_type, exc, tb)
        finally:
            if self._meter is not None:
                await self._meter.afinish()


def _guard_stream_manager(original: Callable[..., Any]) -> Any:
    @functools.wraps(original)
    def stream(**kwargs: Any) -> _StreamManager:
        return _StreamManager(original, kwargs)

    setattr(stream, _MARK, True)
    return stream


# -- instrument ------------------------------------------------------------------------
def _sdk_of(client: object) -> str | None:
    for cls in type(client).__mro__:
        root = cls.__module__.split(".", 1)[0]
        if root in ("openai", "anthropic"):
            return root
    return None


def _is_async(client: object) -> bool:
    # The SDKs' async resource methods hide behind sync decorators, so ask the class.
    return any(cls.__name__.startswith("Async") for cls in type(client).__mro__)


def _wrap(
    resource: object, name: str, endpoint: _Endpoint, *, is_async: bool, streams: bool = True
) -> None:
    original = getattr(resource, name, None)
    if original is None or getattr(original, _MARK, False):
        return
    if is_async or inspect.iscoroutinefunction(original):
        guarded = _guard_async(original, endpoint)
    else:
        guarded = _guard_sync(original, endpoint, streams=streams)
    setattr(resource, name, guarded)


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
    is_async = _is_async(client)
    if sdk == "openai":
        completions = getattr(getattr(client, "chat", None), "completions", None)
        responses = getattr(client, "responses", None)
        if completions is None and responses is None:
            raise ConfigurationError(f"instrument: {type(client).__name__} has no chat/responses")
        if completions is not None:
            _wrap(completions, "create", _CHAT, is_async=is_async)
            _wrap(completions, "parse", _CHAT, is_async=is_async, streams=False)
        if responses is not None:
            _wrap(responses, "create", _RESPONSES, is_async=is_async)
            _wrap(responses, "parse", _RESPONSES, is_async=is_async, streams=False)
    elif sdk == "anthropic":
        messages = getattr(client, "messages", None)
        if messages is None:
            raise ConfigurationError(f"instrument: {type(client).__name__} has no messages")
        _wrap(messages, "create", _MESSAGES, is_async=is_async)
        stream = getattr(messages, "stream", None)
        if stream is not None and not getattr(stream, _MARK, False):
            messages.stream = _guard_stream_manager(stream)
    else:
        raise ConfigurationError(
            f"instrument: expected an openai or anthropic client, got {type(client).__name__}"
        )
    setattr(client, _MARK, True)
    return client
