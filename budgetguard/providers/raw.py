"""Raw responses (``with_raw_response``, ``with_streaming_response``), settled from their body.

The SDKs' raw response objects keep the HTTP response and parse the body on
demand (``.parse()``, cached). Two cases need a stand-in:

- a raw response to a *streamed* request: its ``parse()`` is the SDK stream,
  which must be the metered one (``RawStream``);
- a ``with_streaming_response`` response, whose body is only read when the
  caller asks: it is settled from the body the caller parses, or - closed
  unparsed (read as bytes, or not at all) - charged its reservation, logged
  and recorded as ``unpriced`` (``UnreadResponse``).

Everything else passes through to the SDK's object.
"""

from __future__ import annotations

import inspect
from typing import Any

from .._engine.admission import Admission
from .._engine.charges import charge_response, unpriced
from ..stores.drive import Flow, Invoke, arun, run
from .meter import StreamMeter
from .prepared import PreparedCall
from .streams import AsyncGuardedStream, GuardedStream, _Proxy

__all__ = ["AsyncRawStream", "AsyncUnreadResponse", "RawStream", "UnreadResponse", "raw_stream"]


def raw_stream(inner: Any, stream: GuardedStream | AsyncGuardedStream) -> _Proxy:
    """A raw response to a streamed request whose ``parse()`` gives the metered stream:
    awaited where the SDK's is (Anthropic's async raw responses), called where not."""
    if inspect.iscoroutinefunction(getattr(inner, "parse", None)):
        return AsyncRawStream(inner, stream)
    return RawStream(inner, stream)


class _Raw(_Proxy):
    def __init__(self, inner: Any, stream: GuardedStream | AsyncGuardedStream) -> None:
        self._inner = inner
        self._stream = stream


class RawStream(_Raw):
    """A raw response to a streamed request: ``parse()`` gives the metered stream."""

    def parse(self, **_: Any) -> Any:
        return self._stream


class AsyncRawStream(_Raw):
    """``RawStream`` for an SDK whose raw ``parse()`` is a coroutine."""

    async def parse(self, **_: Any) -> Any:
        return self._stream


class _Unread(_Proxy):
    """What the sync and async unread responses share: the call, and whether it settled."""

    def __init__(self, inner: Any, call: PreparedCall, admission: Admission) -> None:
        self._inner = inner
        self._call = call
        self._admission = admission
        self._settled = False

    def _parse_flow(self, kwargs: dict[str, Any]) -> Flow[tuple[Any, StreamMeter | None]]:
        """Parse the body; settle from it (or meter it, if it is a stream)."""
        parsed = yield Invoke(lambda: self._inner.parse(**kwargs))
        if self._settled:
            return parsed, None
        self._settled = True
        if self._call.streaming:
            return parsed, StreamMeter(self._call, self._admission)
        charge = charge_response(self._admission, parsed, self._call.adapter.name)
        yield from charge.settle(self._admission)
        return parsed, None

    def _close_flow(self) -> Flow[None]:
        """Closed unparsed: nothing says what it billed, so its reservation is charged."""
        if self._settled:
            return
        self._settled = True
        reason = "its body was never parsed (read raw, or not at all)"
        charge = unpriced(self._admission, self._call.adapter.name, None, reason)
        yield from charge.settle(self._admission)


class UnreadResponse(_Unread):
    """A sync ``with_streaming_response`` response, settled when parsed or closed."""

    def parse(self, **kwargs: Any) -> Any:
        parsed, meter = run(self._parse_flow(kwargs), self._admission.settings.store)
        return parsed if meter is None else GuardedStream(parsed, meter)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            run(self._close_flow(), self._admission.settings.store)


class AsyncUnreadResponse(_Unread):
    """An async ``with_streaming_response`` response, settled when parsed or closed."""

    async def parse(self, **kwargs: Any) -> Any:
        flow = self._parse_flow(kwargs)
        parsed, meter = await arun(flow, self._admission.settings.async_store)
        return parsed if meter is None else AsyncGuardedStream(parsed, meter)

    async def close(self) -> None:
        try:
            closed = self._inner.close()
            if inspect.isawaitable(closed):
                await closed
        finally:
            await arun(self._close_flow(), self._admission.settings.async_store)
