"""Input tokens of a call, counted before it is sent, erring high.

A reservation is only as safe as its estimate: if the prompt is counted low,
a call can spend past a limit. OpenAI models are counted exactly with their
tiktoken encoding plus the per-message overhead OpenAI documents. There is no
local tokenizer for Claude or Gemini, so their text is approximated from the
cl100k count times a safety factor, never below a characters-based floor and
never above the UTF-8 byte count (a true upper bound for byte-level BPE: a
token is at least one byte).

Encodings load lazily, once per process, under a lock. When one cannot load
(offline, no cached file) counting falls back to the UTF-8 byte count with a
single warning per encoding - an over-estimate, never a crash.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._core.errors import ConfigurationError

if TYPE_CHECKING:
    import tiktoken

    from .rates import ModelRates

__all__ = [
    "APPROX_FACTOR",
    "CHARS_PER_TOKEN_FLOOR",
    "IMAGE_TOKENS",
    "REPLY_PRIMER_TOKENS",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "TOOLS_OVERHEAD_TOKENS",
    "count_message_tokens",
    "count_text_tokens",
    "encoding_for",
    "estimate_tokens",
]

TOKENS_PER_MESSAGE = 3
"""OpenAI: every message is wrapped in ``<|start|>{role}<|message|>...<|end|>``."""
TOKENS_PER_NAME = 1
REPLY_PRIMER_TOKENS = 3
"""OpenAI: every reply is primed with ``<|start|>assistant<|message|>``."""
TOOLS_OVERHEAD_TOKENS = 20
"""Wrapper the provider puts around tool definitions (counted as their JSON)."""

APPROX_FACTOR = (7, 5)
"""Non-OpenAI text: at least 1.4 x the cl100k count (Claude's tokenizer yields more)."""
CHARS_PER_TOKEN_FLOOR = 3
"""Non-OpenAI text: at least one token per 3 characters."""

IMAGE_TOKENS = 3_000
"""An image part, whatever its size: above OpenAI's high-detail maximum for tile
models (1445 for 2048x768) and patch models (~2650), Claude's ~1600 for a
1.15 MP image and Gemini's 258 per tile for most images."""
_IMAGE_TOKENS_BY_PREFIX = {"gpt-4o-mini": 48_169}  # 2833 + 8 x 5667 for 2048x768 high detail
_IMAGE_TYPES = frozenset({"image", "image_url", "input_image", "image_file"})
_TEXT_TYPES = frozenset({"text", "input_text", "output_text"})
_JSON_KEYS = frozenset({"input", "arguments", "parameters", "input_schema"})

_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35")
_APPROX_ENCODING = "cl100k_base"

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding | None] = {}
_model_encodings: dict[str, str | None] = {}

_MEMO_CHARS = 16
"""Strings this short (roles, names, part types: a few in every message) are counted
once per encoding and remembered; longer text is encoded every time."""
_MEMO_SIZE = 4096
_memo: dict[tuple[tiktoken.Encoding, bool, str], int] = {}


def _bare(model: str) -> str:
    return model.rsplit("/", 1)[-1].lower()


def encoding_for(model: str) -> str | None:
    """The tiktoken encoding name of an OpenAI ``model``, else ``None`` (approximated)."""
    try:
        return _model_encodings[model]
    except KeyError:
        pass
    import tiktoken.model

    name = _bare(model)
    encoding: str | None
    try:
        encoding = tiktoken.model.encoding_name_for_model(name)
    except KeyError:
        if name.startswith(_O200K_PREFIXES):
            encoding = "o200k_base"
        elif name.startswith(_CL100K_PREFIXES):
            encoding = "cl100k_base"
        else:
            encoding = None
    if len(_model_encodings) > 4096:
        _model_encodings.clear()
    _model_encodings[model] = encoding
    return encoding


def _load(encoding: str) -> tiktoken.Encoding | None:
    """The encoding, loaded once per process; ``None`` (after one warning) when it cannot load."""
    try:
        return _encodings[encoding]
    except KeyError:
        pass
    with _lock:
        if encoding in _encodings:
            return _encodings[encoding]
        import tiktoken

        loaded: tiktoken.Encoding | None
        try:
            loaded = tiktoken.get_encoding(encoding)
        except Exception as error:
            loaded = None
            warnings.warn(
                f"budgetguard: tiktoken encoding {encoding!r} is unavailable ({error}); "
                "counting input as UTF-8 bytes (an over-estimate) for the rest of this "
                "process. Set TIKTOKEN_CACHE_DIR to a directory holding its cache file.",
                RuntimeWarning,
                stacklevel=4,
            )
        _encodings[encoding] = loaded
        return loaded


def count_text_tokens(model: str, text: str) -> int:
    """Tokens of ``text`` for ``model``: exact for OpenAI, a documented upper-leaning bound else."""
    if not text:
        return 0
    name = encoding_for(model)
    exact = name is not None
    encoding = _load(name if name is not None else _APPROX_ENCODING)
    if encoding is None:
        return len(text.encode("utf-8"))
    if len(text) > _MEMO_CHARS:
        return len(encoding.encode_ordinary(text)) if exact else _approximate(encoding, text)
    key = (encoding, exact, text)
    counted = _memo.get(key)
    if counted is None:
        counted = len(encoding.encode_ordinary(text)) if exact else _approximate(encoding, text)
        if len(_memo) >= _MEMO_SIZE:
            _memo.clear()
        _memo[key] = counted
    return counted


def _approximate(cl100k: tiktoken.Encoding, text: str) -> int:
    """Claude, Gemini and others: max(1.4 x cl100k, chars / 3), capped at UTF-8 bytes."""
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    numerator, denominator = APPROX_FACTOR
    scaled = -(-len(cl100k.encode_ordinary(text)) * numerator // denominator)
    floor = -(-len(text) // CHARS_PER_TOKEN_FLOOR)
    return min(size, max(scaled, floor))


def _image_tokens(model: str) -> int:
    name = _bare(model)
    for prefix, tokens in _IMAGE_TOKENS_BY_PREFIX.items():
        if name.startswith(prefix):
            return tokens
    return IMAGE_TOKENS


def _count_value(model: str, value: object) -> int:
    """Every string in a message value, with image parts at a flat conservative cost."""
    if value is None:
        return 0
    if isinstance(value, str):
        return count_text_tokens(model, value)
    if type(value) is dict or isinstance(value, Mapping):
        kind = value.get("type")
        if kind in _IMAGE_TYPES:
            return _image_tokens(model)
        if kind in _TEXT_TYPES and isinstance(value.get("text"), str):
            return count_text_tokens(model, value["text"])
        return sum(
            # Tool arguments reach the model as JSON, keys included.
            count_text_tokens(model, _dumps(item))
            if key in _JSON_KEYS and not isinstance(item, str)
            else _count_value(model, item)
            for key, item in value.items()
        )
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return sum(_count_value(model, item) for item in value)
    if isinstance(value, bool | int | float):
        return count_text_tokens(model, str(value))
    return count_text_tokens(model, _dumps(value))


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def count_message_tokens(
    model: str,
    messages: Sequence[Mapping[str, Any]] | None = None,
    *,
    system: str | Sequence[Mapping[str, Any]] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Input tokens of a chat request, >= what the provider will bill as its prompt.

    ``messages`` are OpenAI chat messages (``content`` a string or a list of
    parts; ``name``; ``tool_calls``) or Anthropic messages (content blocks:
    text, image, tool_use, tool_result); ``system`` is Anthropic's system
    parameter; ``tools`` are JSON schemas, counted as their JSON. Each message
    costs ``TOKENS_PER_MESSAGE`` (+``TOKENS_PER_NAME`` for a name) on top of
    its strings, and the reply primer ``REPLY_PRIMER_TOKENS``, as OpenAI
    documents; image parts cost ``IMAGE_TOKENS``.
    """
    total = REPLY_PRIMER_TOKENS
    if system:
        total += TOKENS_PER_MESSAGE + _count_value(model, system)
    for index, message in enumerate(messages or ()):
        if type(message) is not dict and not isinstance(message, Mapping):
            raise ConfigurationError(
                f"messages[{index}]: expected a mapping, got {type(message).__name__}"
            )
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "name":
                total += TOKENS_PER_NAME
            if type(value) is str:  # role and plain content: skip the type dispatch
                total += count_text_tokens(model, value)
            else:
                total += _count_value(model, value)
    if tools:
        total += TOOLS_OVERHEAD_TOKENS + sum(
            count_text_tokens(model, _dumps(tool)) for tool in tools
        )
    return total


def estimate_tokens(
    model: str,
    *,
    messages: Sequence[Mapping[str, Any]] | None = None,
    prompt: str | Sequence[str] | None = None,
    system: str | Sequence[Mapping[str, Any]] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    max_tokens: int | None,
    rates: ModelRates,
) -> tuple[int, int]:
    """``(input_tokens, worst-case output_tokens)`` of a call before it is sent.

    Output is ``max_tokens``, or the model's ``max_output_tokens`` when the
    call sets none. ``prompt`` (completions-style text, or a list of texts)
    is counted as plain text on top of any messages.
    """
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0
    ):
        raise ConfigurationError(f"max_tokens: expected an int >= 0, got {max_tokens!r}")
    input_tokens = 0
    if messages is not None or system is not None or tools is not None:
        input_tokens += count_message_tokens(model, messages, system=system, tools=tools)
    if prompt is not None:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        input_tokens += sum(_count_value(model, text) for text in prompts)
    if max_tokens is not None:
        output_tokens = max_tokens
    else:
        output_tokens = rates.max_output_tokens or rates.context_window or _default_output()
    return input_tokens, output_tokens


def _default_output() -> int:
    from .output_limits import DEFAULT_MAX_OUTPUT_TOKENS

    return DEFAULT_MAX_OUTPUT_TOKENS
