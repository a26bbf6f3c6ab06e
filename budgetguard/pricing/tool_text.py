"""OpenAI function tools as the model reads them: a TypeScript-like namespace, not JSON.

OpenAI renders each function tool into its prompt as a type declaration
(``type get_weather = (_: { location: string, unit?: "c" | "f" }) => any;``
under ``namespace functions``, descriptions as ``//`` comments), so a tool
bills a fraction of its JSON (a median 15 % on recorded Responses calls).
The rendering here follows the published reverse engineering of that format
(hmarr/openai-chat-tokens) and errs long where it is unsure: every
description at every depth is kept, and a schema construct it does not
render (``anyOf``, ``$ref``, ``pattern``, bounds, defaults...) is added as
its JSON. The fixed part around the declarations is the caller's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["openai_tool_text"]

_RENDERED = frozenset({"type", "properties", "required", "description", "items", "enum", "title"})
"""Keys the rendering expresses; ``title`` is dropped by OpenAI's rendering too."""
_MAX_DEPTH = 16
_log = logging.getLogger("budgetguard")
_warned: set[str] = set()


def _malformed(name: str, what: str) -> None:
    """Log once per tool name that its schema was not one (it is counted as its JSON)."""
    if name not in _warned and len(_warned) < 256:
        _warned.add(name)
        _log.warning("function tool %r: %s; counted as its JSON", name, what)


def _extra(schema: Mapping[str, Any]) -> str:
    """What the rendering does not express, as JSON (a comment-like tail, counted)."""
    rest = {key: value for key, value in schema.items() if key not in _RENDERED}
    return f" /* {json.dumps(rest, ensure_ascii=False, default=str)} */" if rest else ""


def _type(schema: object, indent: int, depth: int) -> str:
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return json.dumps(schema, ensure_ascii=False, default=str)
    kind = schema.get("type")
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        text = " | ".join(json.dumps(value, ensure_ascii=False, default=str) for value in enum)
    elif kind == "object" or "properties" in schema:
        text = "{\n" + _properties(schema, indent + 2, depth + 1) + "\n" + " " * indent + "}"
    elif kind == "array":
        items = schema.get("items")
        text = f"{_type(items, indent, depth + 1)}[]" if items is not None else "any[]"
    elif kind in ("integer", "number"):
        text = "number"
    elif isinstance(kind, str):
        text = kind
    elif isinstance(kind, list):
        text = " | ".join(str(k) for k in kind)
    else:
        text = "any"
    return text + _extra(schema)


def _properties(schema: Mapping[str, Any], indent: int, depth: int) -> str:
    properties = schema.get("properties")
    required = schema.get("required")
    needed = (
        {name for name in required if isinstance(name, str)}
        if isinstance(required, list)
        else set()
    )
    lines: list[str] = []
    for name, value in properties.items() if isinstance(properties, Mapping) else ():
        description = value.get("description") if isinstance(value, Mapping) else None
        if isinstance(description, str) and description:
            lines.append(f"// {description}")
        mark = "" if name in needed else "?"
        lines.append(f"{name}{mark}: {_type(value, indent, depth)},")
    return "\n".join(" " * indent + line for line in lines)


def openai_tool_text(tool: Mapping[str, Any]) -> str | None:
    """The declaration a chat (``{"type": "function", "function": {...}}``) or Responses
    (``{"type": "function", "name": ...}``) function tool renders to; ``None`` for any other
    tool (a built-in, a custom grammar tool), which the caller counts as its JSON."""
    if tool.get("type") != "function":
        return None
    function = tool.get("function")
    spec = function if isinstance(function, Mapping) else tool
    name = spec.get("name")
    if not isinstance(name, str):
        return None
    parameters = spec.get("parameters")
    if parameters is not None and not isinstance(parameters, Mapping):
        _malformed(name, "parameters is not a JSON schema object")
        return None
    properties = parameters.get("properties") if parameters is not None else None
    if properties is not None and not isinstance(properties, Mapping):
        _malformed(name, "parameters.properties is not an object")
        return None
    lines: list[str] = []
    description = spec.get("description")
    if isinstance(description, str) and description:
        lines.append(f"// {description}")
    if isinstance(parameters, Mapping) and parameters.get("properties"):
        body = _properties(parameters, 0, 0)
        lines.append(f"type {name} = (_: {{\n{body}\n}}) => any;{_extra(_outer(parameters))}")
    else:
        extra = _extra(_outer(parameters)) if isinstance(parameters, Mapping) else ""
        lines.append(f"type {name} = () => any;{extra}")
    return "\n".join(lines)


def _outer(parameters: Mapping[str, Any]) -> Mapping[str, Any]:
    """The top-level schema minus what every function schema has (``type: object``,
    ``additionalProperties: false`` under strict mode)."""
    return {
        key: value
        for key, value in parameters.items()
        if key not in ("additionalProperties", "$schema")
    }
