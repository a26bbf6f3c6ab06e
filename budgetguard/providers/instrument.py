"""``instrument(client)``: every LLM call of a supported SDK client is guarded.

Each call goes estimate -> reserve -> call -> settle (``calls.call_flow``):

- the request's keyword arguments become an ``LLMRequest`` (model, messages,
  system, tools, max output tokens, service tier) that the engine prices at
  its worst case, under the client's provider (``routes.py``);
- when the policy downgrades, the ``model`` sent to the provider is rewritten;
- a response is settled from its reported usage and model;
- a stream is settled when it ends (from the provider's final usage), when
  the caller closes or abandons it (what was consumed: the input estimate
  plus the output seen so far, at most the estimate), or when it fails midway;
- an error before any response (HTTP status, connection) releases the hold
  and re-raises the SDK's own exception.

Which methods are guarded is data: each adapter in ``registry.ADAPTERS``
names its SDK and its surfaces, and this module wraps them, generically.
Copies of the client (``with_options``, ``copy``) are instrumented too, and
the SDKs' ``with_raw_response`` / ``with_streaming_response`` views call the
guarded methods. Methods that spend money but are not guarded (images,
audio, batches, ...) log one warning the first time they are called.

Only the given client instance is changed; SDK classes are untouched, so
other clients stay unguarded and instrumenting twice is a no-op. The
provider SDKs are never imported here: clients are recognised by the module
of their class, so ``import budgetguard`` works without them.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from .._core.errors import ConfigurationError
from .._engine.admission import warn_once
from .._engine.config import Settings, current
from ..stores.drive import Flow, arun, run
from .base import Adapter, Surface
from .calls import Sent, call_flow
from .manager import StreamManager
from .prepared import PreparedCall
from .raw import AsyncUnreadResponse, UnreadResponse, raw_stream
from .registry import ADAPTERS, adapters_for
from .routes import Route, route_for
from .streams import AsyncGuardedStream, GuardedStream

__all__ = ["UNGUARDED", "instrument"]

log = logging.getLogger("budgetguard")

C = TypeVar("C")
_MARK = "_budgetguard_instrumented"

UNGUARDED: Mapping[str, tuple[tuple[tuple[str, ...], tuple[str, ...] | None], ...]] = {
    "openai": (
        (("images",), None),
        (("audio", "speech"), None),
        (("audio", "transcriptions"), None),
        (("audio", "translations"), None),
        (("batches",), ("create",)),
        (("completions",), ("create",)),
        (("videos",), ("create",)),
        (("responses",), ("compact",)),
        (("beta", "threads", "runs"), ("create", "create_and_poll", "stream")),
        (("realtime",), ("connect",)),
        (("beta", "realtime"), ("connect",)),
        (("fine_tuning", "jobs"), ("create",)),
        (("evals", "runs"), ("create",)),
        (("containers",), ("create",)),
    ),
    "anthropic": (
        (("messages", "batches"), ("create",)),
        (("beta", "messages", "batches"), ("create",)),
    ),
    "google": (
        (("batches",), ("create", "create_embeddings")),
        (("models",), ("generate_images", "generate_videos", "edit_image", "upscale_image")),
        (("aio", "models"), ("generate_images", "generate_videos", "edit_image", "upscale_image")),
        (("aio", "live"), ("connect",)),
        (("aio", "batches"), ("create", "create_embeddings")),
        (("caches",), ("create",)),
        (("aio", "caches"), ("create",)),
        (("tunings",), ("tune",)),
        (("aio", "tunings"), ("tune",)),
    ),
}
"""Per SDK, resources (and methods; None: every public one) that spend money but are
not guarded: calling one logs a warning once. docs/integrations.md lists them."""


# -- guarded calls -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Target:
    """One guarded method: the SDK's original, its adapter and surface, the client's route."""

    original: Callable[..., Any]
    adapter: Adapter
    surface: Surface
    route: Route

    def prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Flow[Sent], Settings]:
        """The call's flow, and the settings (store) it runs on."""
        settings = current()
        surface = self.surface
        streaming = surface.kind == "stream" or (surface.streams and kwargs.get("stream") is True)
        call = PreparedCall.prepare(self.adapter, kwargs, self.route, stream=streaming)
        return call_flow(call, settings, self.original, args, kwargs), settings


def _hand_over(sent: Sent, *, is_async: bool) -> Any:
    """What the caller gets: the response, or its metered stand-in."""
    if sent.unread is not None:
        unread = AsyncUnreadResponse if is_async else UnreadResponse
        return unread(sent.result, *sent.unread)
    if sent.meter is None:
        return sent.result
    stream = (AsyncGuardedStream if is_async else GuardedStream)(sent.stream, sent.meter)
    return stream if sent.stream is sent.result else raw_stream(sent.result, stream)


def _guard(target: _Target, *, is_async: bool) -> Any:
    if is_async:

        @functools.wraps(target.original)
        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            flow, settings = target.prepare(args, kwargs)
            return _hand_over(await arun(flow, settings.async_store), is_async=True)

        setattr(guarded_async, _MARK, True)
        return guarded_async

    @functools.wraps(target.original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        flow, settings = target.prepare(args, kwargs)
        return _hand_over(run(flow, settings.store), is_async=False)

    setattr(guarded, _MARK, True)
    return guarded


def _guard_stream_manager(original: Callable[..., Any], adapter: Adapter, route: Route) -> Any:
    @functools.wraps(original)
    def stream(**kwargs: Any) -> StreamManager:
        return StreamManager(original, adapter, route, kwargs)

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


def _forget_raw_views(obj: object) -> None:
    """The SDKs cache ``with_raw_response`` / ``with_streaming_response`` views, which hold
    the methods they saw first: dropped, they are rebuilt around the guarded ones."""
    cached = getattr(obj, "__dict__", None)
    if isinstance(cached, dict):
        cached.pop("with_raw_response", None)
        cached.pop("with_streaming_response", None)


def _wrap(
    resource: object, surface: Surface, adapter: Adapter, route: Route, *, is_async: bool
) -> bool:
    """Replace ``resource.<method>`` by its guarded twin; False when there is none."""
    name = surface.method
    original = getattr(resource, name, None)
    if original is None and surface.fallback is not None:
        name = surface.fallback
        original = getattr(resource, name, None)
    if original is None:
        return False
    if getattr(original, _MARK, False):
        return True
    if surface.kind == "stream_manager":
        guarded = _guard_stream_manager(original, adapter, route)
    else:
        use_async = is_async or inspect.iscoroutinefunction(original)
        guarded = _guard(_Target(original, adapter, surface, route), is_async=use_async)
    setattr(resource, name, guarded)
    _forget_raw_views(resource)
    return True


def _warn_unguarded(client: object, sdk: str) -> None:
    for path, methods in UNGUARDED.get(sdk, ()):
        resource = _resource(client, path)
        if resource is None:
            continue
        names = methods or tuple(
            n for n in dir(type(resource)) if not n.startswith("_") and not n.startswith("with_")
        )
        for name in names:
            original = getattr(resource, name, None)
            if not callable(original) or getattr(original, _MARK, False):
                continue
            where = ".".join((*path, name))
            setattr(resource, name, _warning_once(original, where))


def _warning_once(original: Callable[..., Any], where: str) -> Any:
    @functools.wraps(original)
    def unguarded(*args: Any, **kwargs: Any) -> Any:
        warn_once(
            ("unguarded", where),
            "budgetguard: client.%s is not guarded: its calls are not reserved or charged "
            "to any budget (see docs/integrations.md, 'What is not guarded')",
            where,
        )
        return original(*args, **kwargs)

    setattr(unguarded, _MARK, True)
    return unguarded


def _keep_guard_on_copies(client: object, route: Route) -> None:
    """``client.with_options(...)`` / ``client.copy()`` return new clients: instrument them
    the same way (they used to escape every budget)."""
    for name in ("with_options", "copy"):
        original = getattr(client, name, None)
        if not callable(original) or getattr(original, _MARK, False):
            continue

        def copying(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            return _instrument(_original(*args, **kwargs), route)

        functools.update_wrapper(copying, original)
        setattr(copying, _MARK, True)
        setattr(client, name, copying)


def _instrument(client: C, route: Route) -> C:
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
            if resource is not None and _wrap(resource, surface, adapter, route, is_async=is_async):
                guarded += 1
    if not guarded:
        raise ConfigurationError(
            f"instrument: {type(client).__name__} has none of the {sdk} methods budgetguard guards"
        )
    _warn_unguarded(client, sdk)
    _keep_guard_on_copies(client, route)
    _forget_raw_views(client)
    setattr(client, _MARK, True)
    return client


def instrument(
    client: C, *, provider: str | None = None, models: Mapping[str, str] | None = None
) -> C:
    """Guard ``client``'s LLM calls with the budgets in force; returns the same client.

    Supports ``openai.OpenAI`` / ``AsyncOpenAI`` / ``AzureOpenAI`` (chat completions,
    Responses, embeddings; ``create`` / ``parse`` / ``stream``), ``anthropic.Anthropic``
    and its async, Bedrock and Vertex variants (``messages``, ``beta.messages``) and
    ``google.genai.Client`` (``models`` and ``aio.models``: ``generate_content``,
    ``generate_content_stream``, ``embed_content``; chats go through them).

    ``provider``: the genai-prices provider id whose prices apply (``"openrouter"``,
    ``"azure"``, ``"groq"``, ...); by default the one matching the client's base URL,
    else none (models priced by name; one only a local server knows needs a price).
    ``models``: names the API takes mapped to the model to price them as (Azure
    deployments: ``{"prod-chat": "gpt-4o"}``). Instrumenting a client twice changes
    nothing.
    """
    if getattr(client, _MARK, False):
        return client
    return _instrument(client, route_for(client, provider, models))
