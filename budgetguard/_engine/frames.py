"""The stack of active ``budget`` / ``spend_limit`` frames, per thread and task.

A ``contextvars`` tuple: each thread and each asyncio task sees its own
stack, tasks inherit their creator's, and pushing never mutates what another
context sees.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from .._core.attribution import Frame

__all__ = ["active_frames", "pop", "push"]

_frames: ContextVar[tuple[Frame, ...]] = ContextVar("budgetguard_frames", default=())


def active_frames() -> tuple[Frame, ...]:
    return _frames.get()


def push(frame: Frame) -> Token[tuple[Frame, ...]]:
    return _frames.set((*_frames.get(), frame))


def pop(token: Token[tuple[Frame, ...]]) -> None:
    _frames.reset(token)
