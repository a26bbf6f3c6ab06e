"""What a trial asks (cases, from JSONL) and how it marks an answer (checks)."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._core.errors import ConfigurationError

__all__ = ["CHECKS", "Case", "Check", "TrialError", "load_cases", "resolve_check"]

Check = Callable[[str, Any], bool]
"""``check(answer_text, expected) -> bool``: was the model right?"""


class TrialError(ConfigurationError):
    """Bad trial input (a case, a check, a model): raised before anything is sent, or,
    for a check that raises, when the trial stops. The CLI exits 2 with its message."""


@dataclass(frozen=True, slots=True)
class Case:
    """One question: chat ``messages`` (``prompt`` becomes one user message) and the
    ``expected`` answer the check compares to. ``line``: where it came from (1-based)."""

    messages: tuple[Mapping[str, Any], ...]
    expected: Any
    line: int = 0

    @classmethod
    def of(cls, data: Any, line: int = 0) -> Case:
        where = f"line {line}: " if line else ""
        if not isinstance(data, Mapping):
            raise TrialError(f"{where}expected a JSON object, got {type(data).__name__}")
        if "expected" not in data:
            raise TrialError(f"{where}missing 'expected'")
        messages = data.get("messages")
        prompt = data.get("prompt")
        if (messages is None) == (prompt is None):
            raise TrialError(f"{where}give exactly one of 'messages' or 'prompt'")
        if prompt is not None:
            if not isinstance(prompt, str) or not prompt:
                raise TrialError(f"{where}'prompt' must be a non-empty string")
            messages = [{"role": "user", "content": prompt}]
        if not isinstance(messages, list) or not messages:
            raise TrialError(f"{where}'messages' must be a non-empty list")
        for n, message in enumerate(messages):
            ok = isinstance(message, Mapping) and isinstance(message.get("role"), str)
            if not ok or not isinstance(message.get("content"), str):
                raise TrialError(
                    f"{where}messages[{n}]: expected {{'role': ..., 'content': 'text'}}"
                )
        return cls(tuple(dict(m) for m in messages), data["expected"], line)


def load_cases(source: str | Path | Iterable[Any]) -> list[Case]:
    """Cases from a JSONL file (blank lines skipped), or from objects / ``Case`` s.
    Every line is read before anything is sent: a bad one is named by its number."""
    if not isinstance(source, str | Path):
        return [c if isinstance(c, Case) else Case.of(c, n) for n, c in enumerate(source, 1)]
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrialError(f"cases: cannot read {str(path)!r}: {exc}") from None
    cases = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise TrialError(f"{path}: line {number}: not valid JSON: {exc.msg}") from None
        try:
            cases.append(Case.of(data, number))
        except TrialError as exc:
            raise TrialError(f"{path}: {exc}") from None
    if not cases:
        raise TrialError(f"{path}: no cases")
    return cases


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def exact(answer: str, expected: Any) -> bool:
    """The answer is the expected text, ignoring case and surrounding/extra whitespace
    (a list of texts: any of them)."""
    options = expected if isinstance(expected, list) else [expected]
    return any(_norm(answer) == _norm(str(option)) for option in options)


def contains(answer: str, expected: Any) -> bool:
    """The expected text appears in the answer (case-insensitive; a list: any of them)."""
    options = expected if isinstance(expected, list) else [expected]
    return any(_norm(str(option)) in _norm(answer) for option in options)


def json_equal(answer: str, expected: Any) -> bool:
    """The answer parses as JSON (a ```json fence is allowed) equal to ``expected``."""
    text = answer.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        return bool(json.loads(text) == expected)
    except json.JSONDecodeError:
        return False


CHECKS: Mapping[str, Check] = {"exact": exact, "contains": contains, "json": json_equal}


def resolve_check(check: str | Check) -> Check:
    """``exact``, ``contains``, ``json``, ``python:module:func``, or a callable."""
    if callable(check):
        return check
    if check in CHECKS:
        return CHECKS[check]
    if isinstance(check, str) and check.startswith("python:"):
        module_name, _, attr = check.removeprefix("python:").partition(":")
        if not module_name or not attr:
            raise TrialError(f"check: expected python:module:func, got {check!r}")
        if os.getcwd() not in sys.path:  # as --app: the user's own module, run from its folder
            sys.path.insert(0, os.getcwd())
        try:
            found = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise TrialError(f"check: cannot load {check!r}: {exc}") from None
        if not callable(found):
            raise TrialError(f"check: {check!r} is not callable")
        return found  # type: ignore[no-any-return]
    raise TrialError(
        f"check: unknown check {check!r}; use exact, contains, json or python:module:func"
    )


def system_and_turns(
    messages: Sequence[Mapping[str, Any]],
) -> tuple[str | None, list[Mapping[str, Any]]]:
    """System messages joined (Anthropic and Gemini take them apart), and the rest."""
    system = [str(m["content"]) for m in messages if m["role"] in ("system", "developer")]
    turns = [m for m in messages if m["role"] not in ("system", "developer")]
    return ("\n\n".join(system) or None), turns
