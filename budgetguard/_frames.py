"""The stack of active ``budget`` / ``spend_limit`` frames, per thread and task.

A ``contextvars`` tuple: each thread and each asyncio task sees its own
stack, tasks inherit their creator's, and pushing never mutates what another
context sees.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

from ._policy import Limit, OnExceed

__all__ = ["Attribution", "Frame", "RunTally", "active_frames", "attribution_of"]


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


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who a call is for: the innermost frame that says wins; tags merge."""

    tenant: str | None = None
    user: str | None = None
    feature: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


_frames: ContextVar[tuple[Frame, ...]] = ContextVar("budgetguard_frames", default=())


def active_frames() -> tuple[Frame, ...]:
    return _frames.get()


def attribution_of(frames: tuple[Frame, ...]) -> Attribution:
    tenant = user = feature = None
    tags: dict[str, str] = {}
    for frame in frames:
        tenant = frame.tenant or tenant
        user = frame.user or user
        feature = frame.feature or feature
        tags.update(frame.tags)
    return Attribution(tenant, user, feature, tags)


def push(frame: Frame) -> object:
    return _frames.set((*_frames.get(), frame))


def pop(token: object) -> None:
    _frames.reset(token)  # type: ignore[arg-type]
