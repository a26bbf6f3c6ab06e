"""Reading SDK objects and JSON alike: fields, token counts, request arguments.

Responses may be the SDKs' pydantic models or plain dicts (JSON); requests
are the keyword arguments of an SDK method. Every adapter reads them through
these helpers, so a malformed count fails the same way everywhere: a
``UsageError`` naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._core.errors import ConfigurationError, UsageError
from .._core.usage import PriceContext, Usage, UsageDetails

__all__ = [
    "ServerTools",
    "check_block",
    "count",
    "count_arg",
    "get",
    "has",
    "int_arg",
    "items_arg",
    "limit_arg",
    "mapping",
    "model_arg",
    "model_of",
    "schema_text",
    "system_arg",
    "usage_of",
]

_MISSING = object()


# -- responses -------------------------------------------------------------------
def get(obj: object, name: str) -> Any:
    """A field of an SDK model or a JSON dict; ``None`` when absent."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def has(obj: object, name: str) -> bool:
    if isinstance(obj, Mapping):
        return name in obj
    return getattr(obj, name, _MISSING) is not _MISSING


def count(obj: object, name: str, path: str, *, required: bool = False) -> int:
    """A token count: a non-negative int (``None``/absent is 0 unless ``required``)."""
    value = get(obj, name)
    where = f"{path}.{name}"
    if value is None:
        if required:
            raise UsageError(f"{where}: missing from the provider's usage block")
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{where}: expected a non-negative int, got {value!r}")
    if value < 0:
        raise UsageError(f"{where}: must be >= 0, got {value}")
    return value


def usage_of(
    path: str,
    *,
    details: UsageDetails | None = None,
    context: PriceContext = (),
    **counts: int,
) -> Usage:
    """A ``Usage`` whose inconsistencies (cache above input, ...) name ``path``."""
    try:
        return Usage(**counts, details=details, context=context)
    except UsageError as error:
        raise UsageError(f"{path}: inconsistent counts: {error}") from None


def model_of(obj: object) -> str | None:
    model = get(obj, "model")
    return model if isinstance(model, str) and model else None


def check_block(usage: object, path: str) -> None:
    if isinstance(usage, (str, bytes, int, float, list, tuple)):
        raise UsageError(f"{path}: expected an object, got {usage!r}")


# -- requests --------------------------------------------------------------------
def int_arg(kwargs: Mapping[str, Any], *names: str) -> int | None:
    """The first of ``names`` given as an int."""
    for name in names:
        value = kwargs.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def limit_arg(value: object) -> int | None:
    """A use limit (``max_uses``, ``max_tool_calls``): a non-negative int, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def count_arg(value: object) -> int:
    """How many completions a call asks for (``n``, ``candidate_count``): 1 unless a
    positive int says more (the API refuses anything else itself)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 1:
        return value
    return 1


@dataclass(frozen=True, slots=True)
class ServerTools:
    """What a request's server-side tools may bill as input no request shows: ``uses``
    bounded runs (``max_uses``), ``searches`` of them web searches (a fee each), and why
    the rest has no bound."""

    uses: int = 0
    searches: int = 0
    unbounded: tuple[str, ...] = ()
    content_tokens: int = 0
    """Results whose size the request caps itself (web fetch's ``max_content_tokens``)."""

    def request_fields(self) -> dict[str, Any]:
        return {
            "server_tool_uses": self.uses,
            "web_searches": self.searches,
            "unbounded": self.unbounded,
            "hidden_input_tokens": self.content_tokens,
        }


def schema_text(value: object) -> str | None:
    """An output-format schema as the JSON text the provider adds to the prompt: a dict
    as it is, a pydantic model class (``parse(response_format=Model)``) by its JSON
    schema; None when there is none."""
    if value is None:
        return None
    as_schema = getattr(value, "model_json_schema", None)
    dump = getattr(value, "model_dump", None)
    if isinstance(value, type) and callable(as_schema):
        try:
            value = as_schema()
        except Exception:
            return None
    elif callable(dump):
        value = dump(exclude_none=True)
    if not isinstance(value, Mapping) or not value:
        return None
    return json.dumps(value, ensure_ascii=False, default=str)


def mapping(item: object) -> Mapping[str, Any]:
    """A message, part or tool as a mapping (SDK param objects are dumped)."""
    if isinstance(item, Mapping):
        return item
    dump = getattr(item, "model_dump", None)
    if callable(dump):
        dumped = dump()
        if isinstance(dumped, Mapping):
            return dumped
    return {"content": str(item)}


def items_arg(kwargs: dict[str, Any], name: str) -> list[Mapping[str, Any]] | None:
    """A list argument as mappings for the estimate; a one-shot iterable is kept for the SDK."""
    value = kwargs.get(name)
    if value is None or isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return None
    if not isinstance(value, (list, tuple)):
        value = kwargs[name] = list(value)  # a generator: read once, hand the list on
    return [mapping(item) for item in value]


def model_arg(kwargs: Mapping[str, Any], where: str) -> str:
    model = kwargs.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigurationError(f"{where}: model= must be a model name to budget the call")
    return model


def system_arg(value: object) -> str | list[Mapping[str, Any]] | None:
    """A system prompt given as a string or as a list of blocks."""
    if isinstance(value, str):
        return value
    if isinstance(value, Iterable) and not isinstance(value, (bytes, Mapping)):
        return [mapping(block) for block in value]
    return None
