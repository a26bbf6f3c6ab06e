"""One guarded SDK call, written once: prepare -> admit -> invoke -> settle.

``call_flow`` is a generator of operations (``stores/drive.py``): it admits
the request, sends it through ``Invoke`` (the SDK's own method, called or
awaited by the driver), and settles the response from its usage. A streamed
response is handed back with a ``StreamMeter`` that settles it when it ends.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._core.errors import UsageError
from .._core.records import LLMRequest
from .._engine.admission import Admission
from .._engine.charges import Charge, charge_response, priced, unpriced
from .._engine.config import Settings
from .._engine.flow import admit_flow
from ..pricing.tokens import estimate_tokens
from ..stores.drive import Flow, Invoke
from .base import Adapter

__all__ = ["PreparedCall", "StreamMeter", "call_flow", "describe"]

log = logging.getLogger("budgetguard")


@dataclass(slots=True)
class PreparedCall:
    """One call's request, read before admission and adjusted after it."""

    adapter: Adapter
    request: LLMRequest
    streaming: bool
    hide_usage_chunk: bool = False

    @classmethod
    def prepare(cls, adapter: Adapter, kwargs: dict[str, Any], *, stream: bool) -> PreparedCall:
        call = cls(adapter, adapter.request(kwargs), stream)
        if stream and adapter.stream_usage_option:
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
        """Send the model the policy chose (a downgrade rewrites ``model``)."""
        if admission.model is not None and admission.model != self.request.model:
            kwargs["model"] = admission.model

    def admit(self, settings: Settings) -> Flow[Admission]:
        return admit_flow(settings, self.request)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class StreamMeter:
    """Follows one stream and settles it exactly once, however it ends."""

    def __init__(self, call: PreparedCall, admission: Admission) -> None:
        self.call = call
        self.admission = admission
        self.tracker = call.adapter.tracker()
        self.finished = False
        self.blind = False  # events cannot be seen: charge the estimate
        self.unreadable: str | None = None  # a usage block could not be read: why

    def feed(self, event: object) -> bool:
        """Track ``event``; False when it is the injected usage chunk the caller never asked for.

        A malformed usage block never breaks the caller's stream: it is remembered,
        and the stream is charged its reservation when it ends."""
        try:
            self.tracker.feed(event)
        except UsageError as error:
            self.unreadable = self.unreadable or str(error)
        if self.call.hide_usage_chunk:
            choices = getattr(event, "choices", None)
            if choices is not None and len(choices) == 0 and getattr(event, "usage", None):
                return False
        return True

    def _input_estimate(self) -> int | None:
        model, request = self.admission.model, self.call.request
        if model is None:
            return None
        try:
            rates = self.admission.settings.prices.rates(model, request.provider)
            counted = estimate_tokens(
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

    def charge(self) -> Charge:
        tracker, admission = self.tracker, self.admission
        where = self.call.adapter.name
        if self.blind:
            return unpriced(admission, where, tracker.model, "its stream could not be metered")
        if self.unreadable is not None:
            return unpriced(admission, where, tracker.model, self.unreadable)
        if tracker.usage is not None:
            return priced(admission, where, tracker.usage, tracker.model)
        # Ended without the final usage (closed, abandoned, cut): charge what was
        # consumed, never more than was held and never $0 for a request the
        # provider already billed.
        input_estimate = None if tracker.input_usage is not None else self._input_estimate()
        if tracker.input_usage is None and input_estimate is None:
            return Charge(admission.estimate, None, tracker.model)
        usage = tracker.consumed(input_estimate or 0)
        try:
            nanos = admission.price(usage, tracker.model)
        except Exception:
            nanos = admission.estimate
        if admission.estimate:
            nanos = min(nanos, admission.estimate)
        return Charge(nanos, usage, tracker.model)

    def finish_flow(self) -> Flow[None]:
        """Settle what the stream consumed; the second and later calls do nothing."""
        if self.finished:
            return
        self.finished = True
        yield from self.charge().settle(self.admission)


def call_flow(
    call: PreparedCall,
    settings: Settings,
    send: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Flow[tuple[Any, StreamMeter | None]]:
    """Admit, send, settle: ``(response, None)``, or ``(stream, its meter)``."""
    admission = yield from call.admit(settings)
    call.admitted(admission, kwargs)
    try:
        result = yield Invoke(functools.partial(send, *args, **kwargs))
    except BaseException as error:
        yield from admission.release_flow(describe(error))
        raise
    if call.streaming:
        return result, StreamMeter(call, admission)
    yield from charge_response(admission, result, call.adapter.name).settle(admission)
    return result, None
