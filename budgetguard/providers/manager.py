"""Stream managers (Anthropic's ``messages.stream(...)``): admitted on enter, settled on exit."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .._core.errors import describe_error
from .._engine.config import Settings, current
from ..stores.drive import Flow, Invoke, arun, run
from .base import Adapter
from .meter import StreamMeter
from .prepared import PreparedCall
from .routes import Route
from .streams import AsyncGuardedStream, GuardedStream

__all__ = ["StreamManager"]

log = logging.getLogger("budgetguard")


class StreamManager:
    """Wraps a stream-manager method (Anthropic's ``messages.stream(...)``):
    admits on enter, settles on exit.

    The SDK's ``MessageStream`` reads events from its raw ``Stream``; that raw
    stream is swapped for a guarded one, so ``text_stream``,
    ``get_final_message()`` and plain iteration are all metered.
    """

    def __init__(
        self,
        original: Callable[..., Any],
        adapter: Adapter,
        route: Route,
        kwargs: dict[str, Any],
    ) -> None:
        self._original = original
        self._adapter = adapter
        self._route = route
        self._kwargs = kwargs
        self._manager: Any = None
        self._meter: StreamMeter | None = None
        self._settings: Settings | None = None

    def _enter(self, settings: Settings, *, is_async: bool) -> Flow[Any]:
        self._settings = settings
        call = PreparedCall.prepare(self._adapter, self._kwargs, self._route, stream=True)
        admission = yield from call.admit(settings)
        try:
            call.admitted(admission, self._kwargs)
            self._meter = StreamMeter(call, admission)
            self._manager = self._original(**self._kwargs)
            enter = self._manager.__aenter__ if is_async else self._manager.__enter__
            stream = yield Invoke(enter)
        except BaseException as error:
            yield from admission.release_flow(describe_error(error))
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
