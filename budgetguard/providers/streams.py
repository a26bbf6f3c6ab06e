"""Guarded streams: the SDK's stream objects, metered, settled exactly once.

``GuardedStream`` / ``AsyncGuardedStream`` wrap an SDK ``Stream`` /
``AsyncStream``; each event feeds the call's ``StreamMeter``, and the stream
settles when it ends, is closed, fails midway or is garbage collected. What
to charge is decided once, by the meter; these classes only iterate.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any

from ..stores.drive import arun, run
from .meter import StreamMeter

__all__ = ["AsyncGuardedStream", "GuardedStream", "afinish", "finish", "finish_abandoned"]

log = logging.getLogger("budgetguard")


def finish(meter: StreamMeter, error: BaseException | None = None) -> None:
    """Settle a stream from sync code (released if it failed before its first event)."""
    run(meter.finish_flow(error), meter.admission.settings.store)


async def afinish(meter: StreamMeter, error: BaseException | None = None) -> None:
    """Settle a stream from async code."""
    await arun(meter.finish_flow(error), meter.admission.settings.async_store)


_background: set[asyncio.Task[None]] = set()


def finish_abandoned(meter: StreamMeter, *, is_async: bool) -> None:
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
                task = loop.create_task(afinish(meter))
                _background.add(task)
                task.add_done_callback(_background.discard)
                return
        finish(meter)
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


class SettlingResponse(_Proxy):
    """A stream's HTTP response as the SDK's stream helpers hold it: they close it,
    not the stream, when their ``with`` block ends (``responses.stream()``,
    ``chat.completions.stream()``), so closing it settles what was consumed."""

    def __init__(self, inner: Any, meter: StreamMeter) -> None:
        self._inner = inner
        self._meter = meter

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            finish(self._meter)

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            await afinish(self._meter)


class MeteredStream(_Proxy):
    """What the sync and async guarded streams share: the SDK stream, its meter."""

    def __init__(self, inner: Any, meter: StreamMeter) -> None:
        self._inner = inner
        self._meter = meter
        self._iterator: Any = None

    @property
    def response(self) -> SettlingResponse:
        return SettlingResponse(self._inner.response, self._meter)

    def __del__(self) -> None:
        meter = self.__dict__.get("_meter")
        if meter is not None:
            finish_abandoned(meter, is_async=isinstance(self, AsyncGuardedStream))


class GuardedStream(MeteredStream):
    """An SDK ``Stream`` whose events feed the meter; settles on end, close or collection."""

    def __iter__(self) -> GuardedStream:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = iter(self._inner)
        while True:
            try:
                event = next(self._iterator)
            except StopIteration:
                self._meter.ended = True
                finish(self._meter)
                raise
            except BaseException as error:
                finish(self._meter, error)
                raise
            keep = self._meter.feed(event)
            if keep:
                return event

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            finish(self._meter)

    def __enter__(self) -> GuardedStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncGuardedStream(MeteredStream):
    """An SDK ``AsyncStream`` whose events feed the meter."""

    def __aiter__(self) -> AsyncGuardedStream:
        return self

    async def __anext__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._inner.__aiter__()
        while True:
            try:
                event = await self._iterator.__anext__()
            except StopAsyncIteration:
                self._meter.ended = True
                await afinish(self._meter)
                raise
            except BaseException as error:
                await afinish(self._meter, error)
                raise
            keep = self._meter.feed(event)
            if keep:
                return event

    async def close(self) -> None:
        try:
            # An SDK AsyncStream closes with close(); an async generator (Gemini) with aclose().
            closer = getattr(self._inner, "aclose", None) or self._inner.close
            await closer()
        finally:
            await afinish(self._meter)

    async def __aenter__(self) -> AsyncGuardedStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
