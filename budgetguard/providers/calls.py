"""One guarded SDK call, written once: prepare -> admit -> invoke -> settle.

``call_flow`` is a generator of operations (``stores/drive.py``): it admits
the request, sends it through ``Invoke`` (the SDK's own method, called or
awaited by the driver), and settles the response from its usage. A streamed
response is handed back with a ``StreamMeter`` that settles it when it ends.

Calls made through ``with_raw_response`` return the SDK's raw response
object: its body is parsed (the SDK caches the parse, so the caller gets
the same object) and settled from it. Calls made through
``with_streaming_response`` have not read their body yet: they are settled
when the caller parses it, or at close (``raw.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._core.errors import describe_error
from .._engine.admission import Admission, warn_once
from .._engine.charges import charge_response, unpriced
from .._engine.config import Settings
from ..stores.drive import Flow, Invoke
from .meter import StreamMeter
from .prepared import PreparedCall, raw_mode

__all__ = [
    "PreparedCall",
    "Sent",
    "call_flow",
    "raw_mode",
    "release_unanswered",
    "warn_unanswered",
]


@dataclass(frozen=True, slots=True)
class Sent:
    """What the SDK answered, and what is left to settle once the caller reads it.

    ``meter``: a stream to meter (``stream`` is it, when the SDK gave a raw response
    whose parse is the stream). ``unread``: a ``with_streaming_response`` response,
    settled when its body is parsed or closed.
    """

    result: Any
    meter: StreamMeter | None = None
    stream: Any = None
    unread: tuple[PreparedCall, Admission] | None = None


def warn_unanswered(endpoint: str, model: str | None, error: BaseException) -> None:
    """Log once per endpoint, model and cause when a call that raised may have been
    billed: anything but an HTTP error status (the provider's refusal, nothing billed) -
    a timeout, a lost connection or a cancellation may come after the provider took the
    request."""
    if not isinstance(getattr(error, "status_code", getattr(error, "code", None)), int):
        warn_once(
            (endpoint, model, type(error).__name__),
            "budgetguard: %s (%s) ended by %s before it answered; its hold is released at "
            "$0, though the provider may have received and billed it (logged once per "
            "endpoint, model and cause)",
            endpoint,
            model,
            type(error).__name__,
        )


def release_unanswered(admission: Admission, endpoint: str, error: BaseException) -> Flow[None]:
    """Release the hold of a call that raised instead of answering (nothing says what it
    cost), never silently where it may have been billed (``warn_unanswered``)."""
    warn_unanswered(endpoint, admission.model, error)
    yield from admission.release_flow(describe_error(error))


def call_flow(
    call: PreparedCall,
    settings: Settings,
    send: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Flow[Sent]:
    """Admit, send, settle (or hand the stream or unread body back with its meter)."""
    admission = yield from call.admit(settings)
    call.admitted(admission, kwargs)
    try:
        result = yield Invoke(functools.partial(send, *args, **kwargs))
    except BaseException as error:
        yield from release_unanswered(admission, call.adapter.name, error)
        raise
    if call.raw == "stream" and hasattr(result, "parse"):
        return Sent(result, unread=(call, admission))
    if call.raw is not None and hasattr(result, "parse"):
        try:
            parsed = yield Invoke(result.parse)  # cached by the SDK: the caller gets the same
        except Exception as error:  # a body the SDK cannot parse: the caller's to see
            why = f"its body could not be parsed ({describe_error(error)})"
            yield from unpriced(admission, call.adapter.name, None, why).settle(admission)
            return Sent(result)
        if call.streaming:
            return Sent(result, StreamMeter(call, admission), stream=parsed)
        yield from charge_response(admission, parsed, call.adapter.name).settle(admission)
        return Sent(result)
    if call.streaming:
        return Sent(result, StreamMeter(call, admission), stream=result)
    yield from charge_response(admission, result, call.adapter.name).settle(admission)
    return Sent(result)
