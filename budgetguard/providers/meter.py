"""Following one stream to its end, and settling it exactly once, however it ends."""

from __future__ import annotations

from .._core.errors import UsageError, describe_error
from .._engine.admission import Admission
from .._engine.charges import Charge, priced, stopped_early, unpriced
from ..stores.drive import Flow
from .prepared import PreparedCall

__all__ = ["StreamMeter"]


class StreamMeter:
    """Follows one stream and settles it exactly once, however it ends."""

    def __init__(self, call: PreparedCall, admission: Admission) -> None:
        self.call = call
        self.admission = admission
        self.tracker = call.adapter.tracker()
        self.finished = False
        self.ended = False  # read to its end (not closed early, not cut by an error)
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

    def charge(self) -> Charge:
        tracker, admission = self.tracker, self.admission
        where = self.call.adapter.name
        if self.blind:
            return unpriced(admission, where, tracker.model, "its stream could not be metered")
        if self.unreadable is not None:
            return unpriced(admission, where, tracker.model, self.unreadable)
        if tracker.usage is not None:
            return priced(admission, where, tracker.usage, tracker.model)
        if self.ended:  # read to its end, and still no usage: nothing says what it billed
            why = "its stream ended without reporting its usage"
            return unpriced(admission, where, tracker.model, why)
        # Stopped before the final usage (closed, abandoned, cut): charge what was
        # consumed, never more than was held and never $0 for a request the
        # provider already billed.
        input_estimate = None if tracker.input_usage is not None else admission.input_tokens
        if tracker.input_usage is None and input_estimate is None:
            return stopped_early(admission, None, tracker.model)
        return stopped_early(admission, tracker.consumed(input_estimate or 0), tracker.model)

    def finish_flow(self, error: BaseException | None = None) -> Flow[None]:
        """Settle what the stream consumed; the second and later calls do nothing. A
        stream that failed before its first event (a lazy stream's HTTP error) cost
        nothing: its hold is released."""
        if self.finished:
            return
        self.finished = True
        if error is not None and self.tracker.events == 0:
            yield from self.admission.release_flow(describe_error(error))
            return
        yield from self.charge().settle(self.admission)
