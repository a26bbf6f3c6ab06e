"""Binding a decorated function's arguments by name, computed once per function."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["Binder", "bind"]


class Binder:
    """Binds a decorated function's arguments by name, for attribution and
    ``estimate=`` callables. ``inspect.signature`` costs more than the rest of
    a guarded call, so it is computed once; plain parameters (no ``*args``,
    ``**kwargs``, positional- or keyword-only) are then bound without it,
    anything else (or a bad call, for its error) by ``Signature.bind``."""

    __slots__ = ("_fn", "_plain", "_signature")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._signature: inspect.Signature | None = None
        self._plain: tuple[tuple[str, Any], ...] | None = None

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        signature = self._signature
        if signature is None:
            signature = self._signature = inspect.signature(self._fn)
            params = signature.parameters.values()
            if all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params):
                self._plain = tuple((p.name, p.default) for p in params)
        plain = self._plain
        if plain is not None and len(args) <= len(plain):
            bound = _bind_plain(plain, args, kwargs)
            if bound is not None:
                return bound
        arguments = signature.bind(*args, **kwargs)
        arguments.apply_defaults()
        return dict(arguments.arguments)


def _bind_plain(
    plain: tuple[tuple[str, Any], ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any] | None:
    """What ``Signature.bind`` + ``apply_defaults`` give, in parameter order; None
    when the call does not fit (``Signature.bind`` then raises its own error)."""
    bound: dict[str, Any] = {}
    given = len(args)
    named = 0
    for i, (name, default) in enumerate(plain):
        if i < given:
            if name in kwargs:
                return None  # given twice
            bound[name] = args[i]
        elif name in kwargs:
            bound[name] = kwargs[name]
            named += 1
        elif default is not inspect.Parameter.empty:
            bound[name] = default
        else:
            return None  # missing
    return bound if named == len(kwargs) else None  # else an unknown keyword


def bind(fn: Binder | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if fn is None:
        return {}
    return fn.bind(args, kwargs)
