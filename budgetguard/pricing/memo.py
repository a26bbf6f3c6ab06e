"""Bounded, thread-safe memos keyed by content, for token counts.

An agent re-sends its whole history on every turn: counting each message
once, and each long string once per encoding, makes a re-estimate cost about
the new message only. Keys are built from the content (``freeze``), never
from object identity, so a caller mutating a message between two calls gets
a fresh count.

Reads take no lock (one ``dict.get``, atomic under the GIL); writes and
eviction do. Eviction is first-in first-out by insertion, bounded both in
entries and in the characters the keys hold alive.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

__all__ = ["BoundedMemo", "freeze", "thaw"]

V = TypeVar("V")

_DICT = object()
_LIST = object()
_BYTES = object()


class _Unfreezable(Exception):
    """A value whose content cannot be a key (an arbitrary object): no memo for it."""


class BoundedMemo(Generic[V]):
    """At most ``entries`` values whose keys hold at most ``chars`` characters."""

    __slots__ = ("_chars", "_data", "_lock", "_max_chars", "_max_entries", "_max_item")

    def __init__(self, entries: int, chars: int) -> None:
        self._data: dict[object, tuple[V, int]] = {}
        self._lock = threading.Lock()
        self._max_entries = entries
        self._max_chars = chars
        self._max_item = chars // 4
        self._chars = 0

    def get(self, key: object) -> V | None:
        found = self._data.get(key)
        return None if found is None else found[0]

    def put(self, key: object, value: V, size: int, *, replace: bool = False) -> None:
        """Remember ``value`` (whose key holds ``size`` characters); an existing entry is
        kept unless ``replace``."""
        if size > self._max_item:
            return
        with self._lock:
            data = self._data
            if key in data:
                if not replace:
                    return
                self._chars -= data.pop(key)[1]
            while data and (len(data) >= self._max_entries or self._chars + size > self._max_chars):
                oldest = next(iter(data))
                self._chars -= data.pop(oldest)[1]
            data[key] = (value, size)
            self._chars += size

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._chars = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def chars(self) -> int:
        return self._chars


def freeze(value: object) -> tuple[object, int] | None:
    """``(key, characters)`` for a JSON-like value, or ``None`` when it holds something else.

    Dicts, lists and scalars are tagged so that ``{"a": 1}``, ``[["a", 1]]`` and
    ``{"a": True}`` get different keys."""
    size = [0]
    try:
        return _freeze(value, size), size[0]
    except (_Unfreezable, RecursionError):
        return None


def _freeze(value: object, size: list[int]) -> object:
    if isinstance(value, str):
        size[0] += len(value)
        return value
    if isinstance(value, Mapping):
        pairs: list[tuple[object, object]] = []
        for key, item in value.items():
            if type(item) is str:
                size[0] += len(item)
                pairs.append((key, item))
            else:
                pairs.append((key, _freeze(item, size)))
        return (_DICT, tuple(pairs))
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return (type(value), value)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        size[0] += len(data)
        return (_BYTES, data)
    if isinstance(value, Sequence):
        return (_LIST, tuple(_freeze(item, size) for item in value))
    raise _Unfreezable


def thaw(key: object) -> object:
    """A fresh plain copy (dicts, lists, scalars) of the value ``key`` was frozen from.

    It compares ``==`` to the original while the original is unchanged; the
    caller's later mutations cannot reach it."""
    if type(key) is tuple and key:
        tag = key[0]
        if tag is _DICT:
            return {name: thaw(item) for name, item in key[1]}
        if tag is _LIST:
            return [thaw(item) for item in key[1]]
        if tag is _BYTES:
            return key[1]
        return _Number(key[0], key[1])
    return key


class _Number:
    """A number that equals only numbers of its own type: ``True``, ``1`` and ``1.0`` are
    ``==`` in Python but count differently."""

    __slots__ = ("kind", "value")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, kind: object, value: object) -> None:
        self.kind = kind
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is self.kind and other == self.value
