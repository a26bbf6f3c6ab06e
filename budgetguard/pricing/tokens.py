"""Input tokens of a call, counted before it is sent, erring high.

A reservation is only as safe as its estimate: if the prompt is counted low,
a call can spend past a limit. OpenAI models are counted exactly with their
tiktoken encoding plus the per-message overhead OpenAI documents. Claude and
Gemini text is bounded from the cl100k count with each family's calibrated
factor (``calibration``), never above the UTF-8 byte count. Images and other
media cost their provider's formula (``images``, ``media``), whose sound is flagged.

``estimate_input`` also says which part of the input an Anthropic request
marks for its prompt cache (``cache_control``): those tokens are billed as
cache writes, dearer than plain input.

Counts are memoised by content: each message once (per model), each string
once per encoding, so re-estimating a growing agent history costs about the
new message. Encodings load lazily, once per process, under a lock. When one
cannot load (offline, no cached file) counting falls back to the UTF-8 byte
count with a single warning per encoding - an over-estimate, never a crash.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._core.errors import ConfigurationError
from .calibration import OTHER, Bound, bound_for, family_of
from .images import UNKNOWN_IMAGE_TOKENS, image_tokens, is_image_part
from .media import is_media_part, is_sound_part, media_tokens
from .memo import BoundedMemo, freeze, thaw
from .tool_text import openai_tool_text

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
    "InputEstimate",
    "count_message_tokens",
    "count_text_tokens",
    "encoding_for",
    "estimate_input",
    "estimate_tokens",
]

TOKENS_PER_MESSAGE = 3
"""Every message is wrapped in ``<|start|>{role}<|message|>...<|end|>`` (OpenAI); Claude's
wrapper measures 6-7 tokens for one message, below this plus the role and reply primer."""
TOKENS_PER_NAME = 1
REPLY_PRIMER_TOKENS = 3
"""OpenAI: every reply is primed with ``<|start|>assistant<|message|>``."""
TOOLS_OVERHEAD_TOKENS = 20
"""Wrapper OpenAI puts around tool definitions (counted as their JSON); Claude's tool-use
system prompt is larger and per model (``calibration``)."""

APPROX_FACTOR = OTHER.ascii_factor
"""Models of no known family: at least 1.4 x the cl100k count (plus one token per digit)."""
CHARS_PER_TOKEN_FLOOR = OTHER.floor[1]
"""Models of no known family: at least one token per 3 characters."""
IMAGE_TOKENS = UNKNOWN_IMAGE_TOKENS
"""An image sent to a model of no known family, whatever its size."""

_TEXT_TYPES = frozenset({"text", "input_text", "output_text"})
_JSON_KEYS = frozenset({"input", "arguments", "parameters", "input_schema"})
_SKIP_KEYS = frozenset({"cache_control"})  # request metadata, never tokens
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-")
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35")
_APPROX_ENCODING = "cl100k_base"
_DIGITS = "0123456789"

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding | None] = {}
_model_encodings: dict[str, str | None] = {}
_rules: dict[str, _Rule] = {}

_Counted = tuple[int, tuple[tuple[int, bool], ...], bool]
"""Tokens of a message, system block or tool, its cache markers (end, one-hour TTL), sound."""

_texts: BoundedMemo[int] = BoundedMemo(entries=65_536, chars=64_000_000)
"""Token count of a string, by (encoding, rule, string)."""
_messages: BoundedMemo[_Counted] = BoundedMemo(entries=16_384, chars=64_000_000)
"""(tokens, cache markers) of a message, system or tool, by (model, image cap, content)."""
_objects: BoundedMemo[tuple[object, _Counted]] = BoundedMemo(entries=16_384, chars=64_000_000)
"""The same, by object identity, valid while the object still equals its snapshot."""


@dataclass(frozen=True, slots=True)
class InputEstimate:
    """All input tokens of a request, and the part of them its prompt-cache markers write.

    ``tokens`` is at least what the provider bills as the prompt.
    ``cache_write_tokens`` is the part of ``tokens`` in the prefix (tools, then
    system, then messages) up to the last block carrying ``cache_control``;
    ``cache_write_1h_tokens`` the part of those up to the last marker whose
    ``ttl`` is ``"1h"``, as Anthropic bills mixed TTLs with no cache hit.
    """

    tokens: int
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    sound: bool = False  # audio or video (or a file that may be either): dearer on some models


@dataclass(frozen=True, slots=True)
class _Rule:
    key: str  # memo key: the encoding and the rule applied to its count
    encoding: str
    bound: Bound | None  # None: the exact count
    family: str  # "openai", "claude", "gemini" or "other"


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


def _rule(model: str) -> _Rule:
    try:
        return _rules[model]
    except KeyError:
        pass
    exact = encoding_for(model)
    if exact is not None:
        rule = _Rule(exact, exact, None, "openai")
    else:
        bound = bound_for(model)
        rule = _Rule(bound.name, _APPROX_ENCODING, bound, family_of(model))
    if len(_rules) > 4096:
        _rules.clear()
    _rules[model] = rule
    return rule


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
    """Tokens of ``text`` for ``model``: exact for OpenAI, the family's upper bound else."""
    if not text:
        return 0
    return _count_text(_rule(model), text)


def _count_text(rule: _Rule, text: str) -> int:
    encoding = _load(rule.encoding)
    if encoding is None:
        return len(text.encode("utf-8"))
    key = (rule.key, text)
    counted = _texts.get(key)
    if counted is None:
        counted = len(encoding.encode_ordinary(text))
        if rule.bound is not None:
            counted = _bounded(rule.bound, counted, text)
        _texts.put(key, counted, len(text))
    return counted


def _bounded(bound: Bound, cl100k: int, text: str) -> int:
    """``min(bytes, max(ceil(cl100k x factor) + per_digit x digits, ceil(chars x floor)))``."""
    chars = len(text)
    if text.isascii():
        size, (numerator, denominator) = chars, bound.ascii_factor
    else:
        size, (numerator, denominator) = len(text.encode("utf-8")), bound.other_factor
    scaled = -(-cl100k * numerator // denominator)
    if bound.per_digit:
        scaled += bound.per_digit * sum(map(text.count, _DIGITS))
    per_char, chars_per = bound.floor
    return min(size, max(scaled, -(-chars * per_char // chars_per)))


class _Counter:
    """One request's counting context: the model's rule and the image cap."""

    __slots__ = ("cap", "model", "per_message", "reply_primer", "rule", "sound")

    def __init__(self, model: str, cap: int | None) -> None:
        self.model = model
        self.rule = rule = _rule(model)
        self.cap = cap
        bound = rule.bound
        self.per_message = TOKENS_PER_MESSAGE if bound is None else bound.per_message
        self.reply_primer = REPLY_PRIMER_TOKENS if bound is None else bound.reply_primer
        self.sound = False  # set by the parts counted since a message or block began

    def value(self, value: object) -> int:
        """Every string in a message value, images by their provider's formula."""
        if value is None:
            return 0
        if isinstance(value, str):
            return _count_text(self.rule, value) if value else 0
        if type(value) is dict or isinstance(value, Mapping):
            return self._mapping(value)
        if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
            return sum(self.value(item) for item in value)
        if isinstance(value, bool | int | float):
            return _count_text(self.rule, str(value))
        return _count_text(self.rule, _dumps(value))

    def _mapping(self, value: Mapping[str, Any]) -> int:
        kind = value.get("type")
        if kind in _TEXT_TYPES and isinstance(value.get("text"), str):
            return _count_text(self.rule, value["text"]) if value["text"] else 0
        if is_image_part(value):
            return image_tokens(self.model, value, family=self.rule.family, cap=self.cap)
        if is_media_part(value):  # documents, audio, video: sized from their bytes, never as text
            self.sound = self.sound or is_sound_part(value)
            counted = media_tokens(
                self.model,
                value,
                family=self.rule.family,
                cap=self.cap,
                text_tokens=lambda text: _count_text(self.rule, text) if text else 0,
            )
            if counted is not None:
                return counted
        total = 0
        for key, item in value.items():
            if key in _SKIP_KEYS:
                continue
            if key in _JSON_KEYS and not isinstance(item, str):  # tool arguments: sent as JSON
                total += _count_text(self.rule, _dumps(item))
            else:
                total += self.value(item)
        return total

    def memo(self, kind: str, item: Any, count: Callable[[Any], _Counted]) -> _Counted:
        """``count(item)`` -> (tokens, markers), remembered by the item's content.

        The same object seen again is recognised by ``==`` against a snapshot of
        it (one C-level comparison, no traversal in Python); any other object, or
        one mutated since, by its frozen content."""
        seen = (kind, id(item), self.model, self.cap)
        known = _objects.get(seen)
        if known is not None and known[0] == item:
            return known[1]
        frozen = freeze(item)
        if frozen is None:
            return count(item)
        key = (kind, self.model, self.cap, frozen[0])
        found = _messages.get(key)
        if found is None:
            found = count(item)
            _messages.put(key, found, frozen[1])
        snapshot = thaw(frozen[0])
        if snapshot == item:  # a Mapping that is not a dict compares unequal: no fast path
            _objects.put(seen, (snapshot, found), frozen[1], replace=True)
        return found

    def message(self, message: Mapping[str, Any]) -> _Counted:
        self.sound = False
        total = self.per_message
        markers: list[tuple[int, bool]] = []
        for key, value in message.items():
            if key in _SKIP_KEYS:
                continue
            if key == "name":
                total += TOKENS_PER_NAME
            if type(value) is str:  # role and plain content: skip the type dispatch
                total += _count_text(self.rule, value) if value else 0
            elif isinstance(value, list | tuple):
                for part in value:  # content blocks: a marker ends the prefix after its block
                    total += self.value(part)
                    mark = _marker(part)
                    if mark is not None:
                        markers.append((total, mark))
            else:
                total += self.value(value)
        ttl = _marker(message, nested=False)  # its blocks' markers are in already
        if ttl is not None:
            markers.append((total, ttl))
        return total, tuple(markers), self.sound

    def tool(self, tool: Mapping[str, Any]) -> _Counted:
        definition = {key: item for key, item in tool.items() if key not in _SKIP_KEYS}
        rendered = openai_tool_text(definition) if self.rule.bound is None else None
        tokens = _count_text(self.rule, rendered if rendered is not None else _dumps(definition))
        ttl = _marker(tool)
        return tokens, ((tokens, ttl),) if ttl is not None else (), False

    def block(self, block: object) -> _Counted:
        self.sound = False
        tokens = self.value(block)
        ttl = _marker(block)
        return tokens, ((tokens, ttl),) if ttl is not None else (), self.sound


def _marker(item: object, *, nested: bool = True) -> bool | None:
    """``None`` without ``cache_control``; else whether its TTL is one hour (unknown TTLs are).

    A marker inside a block's own ``content`` (a tool result's blocks) counts as
    the block's: the prefix then ends a little later, which only errs dear."""
    if not isinstance(item, Mapping):
        return None
    found: bool | None = None
    control = item.get("cache_control")
    if control is not None:
        ttl = control.get("ttl") if isinstance(control, Mapping) else None
        found = ttl not in (None, "5m")
    inner = item.get("content") if nested else None
    if isinstance(inner, list | tuple):
        for block in inner:
            inside = _marker(block)
            if inside is not None:
                found = bool(found) or inside
    return found


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _chat(
    counter: _Counter,
    messages: Sequence[Mapping[str, Any]] | None,
    system: str | Sequence[Mapping[str, Any]] | None,
    tools: Sequence[Mapping[str, Any]] | None,
) -> tuple[int, list[tuple[int, bool]], bool]:
    """Tokens of tools, system and messages (Anthropic's cache order), cache markers, sound."""
    total = 0
    markers: list[tuple[int, bool]] = []
    sound = False

    def add(counted: _Counted) -> None:
        nonlocal total, sound
        markers.extend((total + offset, ttl) for offset, ttl in counted[1])
        total += counted[0]
        sound = sound or counted[2]

    if tools:
        bound = counter.rule.bound
        if bound is None:
            total += TOOLS_OVERHEAD_TOKENS
        else:
            total += bound.tools_prompt + bound.per_tool * len(tools)
        for tool in tools:
            add(counter.memo("tool", tool, counter.tool))
    if system:
        total += counter.per_message
        blocks = [system] if isinstance(system, str) else system
        for block in blocks:
            add(counter.memo("block", block, counter.block))
    for index, message in enumerate(messages or ()):
        if type(message) is not dict and not isinstance(message, Mapping):
            raise ConfigurationError(
                f"messages[{index}]: expected a mapping, got {type(message).__name__}"
            )
        add(counter.memo("message", message, counter.message))
    return total + counter.reply_primer, markers, sound


def estimate_input(
    model: str,
    *,
    messages: Sequence[Mapping[str, Any]] | None = None,
    prompt: str | Sequence[str] | None = None,
    system: str | Sequence[Mapping[str, Any]] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    rates: ModelRates | None = None,
    cache_control: Mapping[str, Any] | None = None,
) -> InputEstimate:
    """All input tokens of a request, and the part its ``cache_control`` markers write.

    ``messages`` are OpenAI chat messages (``content`` a string or a list of
    parts; ``name``; ``tool_calls``), Anthropic messages (content blocks) or
    Gemini contents (``parts``, ``inline_data``); ``system`` is Anthropic's
    system parameter; ``tools`` are JSON schemas, counted as their JSON.
    ``prompt`` (completions-style text, or a list of texts) is counted as
    plain text on top. ``rates`` caps one image at the context window.
    ``cache_control`` is Anthropic's request-level (automatic) caching: it
    marks the whole prompt. With no marker, no cache write is reported.
    """
    counter = _Counter(model, rates.context_window if rates is not None else None)
    tokens = 0
    markers: list[tuple[int, bool]] = []
    sound = False
    if messages is not None or system is not None or tools is not None:
        tokens, markers, sound = _chat(counter, messages, system, tools)
        if cache_control is not None:  # automatic caching: up to the last block
            one_hour = _marker({"cache_control": cache_control})
            markers.append((tokens - counter.reply_primer, bool(one_hour)))
    if prompt is not None:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        tokens += sum(counter.value(text) for text in prompts)
    if not markers:
        return InputEstimate(tokens, sound=sound)
    write = max(position for position, _ in markers)
    write_1h = max((position for position, one_hour in markers if one_hour), default=0)
    return InputEstimate(tokens, write, write_1h, sound)


def count_message_tokens(
    model: str,
    messages: Sequence[Mapping[str, Any]] | None = None,
    *,
    system: str | Sequence[Mapping[str, Any]] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Input tokens of a chat request, >= what the provider will bill as its prompt.

    Each message costs ``TOKENS_PER_MESSAGE`` (+``TOKENS_PER_NAME`` for a name)
    on top of its strings, and the reply primer ``REPLY_PRIMER_TOKENS``, as
    OpenAI documents; images cost what their provider's formula says.
    """
    return _chat(_Counter(model, None), messages, system, tools)[0]


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

    Input is ``estimate_input(...).tokens``. Output is ``max_tokens``, or the
    model's ``max_output_tokens`` when the call sets none.
    """
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0
    ):
        raise ConfigurationError(f"max_tokens: expected an int >= 0, got {max_tokens!r}")
    counted = estimate_input(
        model, messages=messages, prompt=prompt, system=system, tools=tools, rates=rates
    )
    if max_tokens is not None:
        output_tokens = max_tokens
    else:
        output_tokens = rates.max_output_tokens or rates.context_window or _default_output()
    return counted.tokens, output_tokens


def _default_output() -> int:
    from .output_limits import DEFAULT_MAX_OUTPUT_TOKENS

    return DEFAULT_MAX_OUTPUT_TOKENS
