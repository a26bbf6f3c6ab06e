"""Who a call is for and which frames enclose it, as values.

A ``Frame`` is one entered ``budget`` / ``spend_limit``: attribution (tenant,
user, feature, tags), extra limits, and the tally of what was spent inside.
The stack of active frames lives in a context variable in the engine
(``budgetguard._engine.frames``); everything here is plain data.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from .policy import Limit, OnExceed

__all__ = ["Attribution", "Frame", "RunTally", "attribution_of"]


@dataclass(slots=True)
class RunTally:
    """What one frame spent: shared by the threads and tasks running inside it."""

    spent: int = 0
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, nanos: int) -> None:
        with self.lock:
            self.spent += nanos
            self.calls += 1


@dataclass(frozen=True, slots=True)
class Frame:
    id: str
    tenant: str | None
    user: str | None
    feature: str | None
    tags: Mapping[str, str]
    limits: tuple[Limit, ...]
    on_exceed: OnExceed | None
    tally: RunTally
    name: str | None = None
    """Names the frame in errors (``spend_limit(name="agent")``): which run refused."""


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who a call is for: the innermost frame that says wins; tags merge."""

    tenant: str | None = None
    user: str | None = None
    feature: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


def attribution_of(frames: tuple[Frame, ...]) -> Attribution:
    tenant = user = feature = None
    tags: dict[str, str] = {}
    for frame in frames:
        tenant = frame.tenant or tenant
        user = frame.user or user
        feature = frame.feature or feature
        tags.update(frame.tags)
    return Attribution(tenant, user, feature, tags)
