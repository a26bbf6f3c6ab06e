"""A LangChain model call as an ``LLMRequest``, estimated by the rules ``instrument()`` uses.

A callback sees LangChain's messages and the model's invocation params (its
settings, bound tools, per-call kwargs), not the payload the integration
sends. They are turned into the keyword arguments of the SDK the integration
calls - Anthropic messages for ChatAnthropic, Gemini's ``config`` for
ChatGoogleGenerativeAI, OpenAI chat completions for every other chat model -
and read by that provider's adapter, so the calibrated overheads (tool
prompts, thinking, output schemas, server tools, cache writes) apply as they
do to an instrumented client.

ChatAnthropic's messages go through langchain-anthropic's own formatter: it
keeps the ``cache_control`` marks, which set how much of the prompt a Claude
call may write to its cache (held at the dearer write rate). Gemini's is not
used: it downloads image URLs. Where a formatter is missing, messages take
LangChain's OpenAI shape, and a Claude prompt with any cache mark is held as
if all of it were written.

The provider whose prices apply is, as for ``instrument()``: the handler's
``provider=``; the one genai-prices finds at the model's base URL (from its
serialized settings); else none - the model is priced by its name, then under
the provider LangChain reports (``ls_provider``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import CodeType
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.callbacks import manager as callback_manager

from .._core.attribution import Frame, RunTally
from .._core.errors import ConfigurationError
from .._core.plan import on_exceed_of
from .._core.records import LLMRequest
from .._engine import frames
from .._engine.admission import warn_once
from .._engine.ids import new_id
from ..pricing.calibration import family_of
from ..providers import anthropic as anthropic_messages
from ..providers import gemini, openai_chat
from ..providers.base import Adapter
from ..providers.fields import count_arg, int_arg
from ..providers.prepared import PreparedCall
from ..providers.routes import Route, provider_for_url

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

    from .._engine.config import Settings

__all__ = [
    "AWAITING",
    "HINTS",
    "Event",
    "ModelCall",
    "attributed",
    "attribution_id",
    "batch_of",
    "completion_request",
    "frame_of",
    "inline_for",
    "model_call",
    "route_of",
    "tag_value",
]

HINTS: Mapping[str, str] = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "google_genai": "google",
    "google_vertexai": "google",
    "groq": "groq",
    "mistral": "mistral",
    "mistralai": "mistral",
    "deepseek": "deepseek",
    "xai": "x-ai",
    "fireworks": "fireworks",
    "together": "together",
    "perplexity": "perplexity",
    "cohere": "cohere",
    "openrouter": "openrouter",
    "cerebras": "cerebras",
    "amazon_bedrock": "aws",
    "bedrock": "aws",
}
"""LangChain's ``ls_provider`` -> the genai-prices provider tried for a model its name
alone does not find (a model served on an unknown host)."""

_URL_FIELDS = ("openai_api_base", "anthropic_api_url", "base_url", "azure_endpoint", "endpoint")
"""Where the chat-model classes keep their base URL in their serialized settings."""

_MODEL_FIELDS = ("model", "model_name", "model_id", "deployment_name")

Family = Literal["openai", "anthropic", "google"]


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One model call as the callbacks describe it: what to estimate, and for the logs
    which LangChain class made it."""

    request: LLMRequest
    label: str


def model_call(
    serialized: Mapping[str, Any] | None,
    messages: Sequence[BaseMessage],
    params: Mapping[str, Any],
    metadata: Mapping[str, Any],
    route: Route,
) -> ModelCall:
    """The request a chat model is about to send, for ``on_chat_model_start``."""
    label = _label(serialized)
    model = _model_name(params, metadata, label)
    provider = str(metadata.get("ls_provider") or "")
    kwargs = _api_kwargs(params)
    family = _family(provider, model)
    if family == "anthropic":
        formatted = _anthropic_messages(messages, model)
        if formatted is not None:
            kwargs["system"], kwargs["messages"] = formatted
            return ModelCall(_prepared(anthropic_messages.ADAPTER, kwargs, model, route), label)
    openai_messages = _openai_messages(messages)
    if family == "google":
        config = {**kwargs, "candidate_count": kwargs.get("n")}
        request = _prepared(gemini.GENERATE, {"config": config}, model, route)
        system, turns = _split_system(openai_messages)
        return ModelCall(replace(request, messages=turns, system=system), label)
    if family == "anthropic":  # without langchain-anthropic's formatter
        kwargs["system"], kwargs["messages"] = _split_system(openai_messages)
        request = _prepared(anthropic_messages.ADAPTER, kwargs, model, route)
    else:
        kwargs["messages"] = openai_messages
        request = _prepared(openai_chat.ADAPTER, kwargs, model, route)
    if family_of(request.priced_as(model)) == "claude" and request.cache_write is None:
        # LangChain's OpenAI shape drops the cache marks: any of the prompt may be written
        request = replace(request, cache_write=_cache_marks(messages))
    return ModelCall(request, label)


def completion_request(
    serialized: Mapping[str, Any] | None,
    prompts: Sequence[str],
    params: Mapping[str, Any],
    metadata: Mapping[str, Any],
    route: Route,
) -> ModelCall:
    """The request a completion model (``on_llm_start``) is about to send."""
    label = _label(serialized)
    kwargs = _api_kwargs(params)
    request = LLMRequest(
        model=_model_name(params, metadata, label),
        prompt=list(prompts),
        max_tokens=int_arg(kwargs, "max_tokens", "max_output_tokens", "max_new_tokens"),
        choices=count_arg(kwargs.get("n")),
    )
    return ModelCall(route.request(request), label)


def route_of(
    base: Route, serialized: Mapping[str, Any] | None, metadata: Mapping[str, Any]
) -> Route:
    """``base`` (the handler's provider and model aliases) completed for one model: the
    provider at its base URL, and the provider LangChain says it is as the hint."""
    url = _base_url(serialized)
    provider = base.provider or (_provider_at(url) if url else None)
    hint = HINTS.get(str(metadata.get("ls_provider") or ""))
    return Route(provider, base.models, url, hint)


def _prepared(adapter: Adapter, kwargs: dict[str, Any], model: str, route: Route) -> LLMRequest:
    kwargs["model"] = model
    return PreparedCall.prepare(adapter, kwargs, route, stream=False).request


def _label(serialized: Mapping[str, Any] | None) -> str:
    name = serialized.get("name") if serialized else None
    if not isinstance(name, str) or not name:
        ids = serialized.get("id") if serialized else None
        name = ids[-1] if isinstance(ids, list) and ids and isinstance(ids[-1], str) else "model"
    return f"LangChain {name}"


def _model_name(params: Mapping[str, Any], metadata: Mapping[str, Any], label: str) -> str:
    for value in (metadata.get("ls_model_name"), *(params.get(key) for key in _MODEL_FIELDS)):
        if isinstance(value, str) and value:
            return value
    raise ConfigurationError(
        f"{label}: names no model (metadata ls_model_name, invocation params "
        f"{', '.join(_MODEL_FIELDS)}): budgetguard cannot price its calls"
    )


def _family(provider: str, model: str) -> Family:
    if provider == "anthropic":
        return "anthropic"
    if provider in ("google_genai", "google_vertexai") and family_of(model) == "gemini":
        return "google"
    return "openai"


def _api_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    """The invocation params as API keyword arguments: ``model_kwargs`` (sent as they
    are by the integrations) merged under the named settings."""
    extra = params.get("model_kwargs")
    merged = dict(extra) if isinstance(extra, Mapping) else {}
    merged.update((key, value) for key, value in params.items() if key != "model_kwargs")
    return merged


def _base_url(serialized: Mapping[str, Any] | None) -> str | None:
    settings = serialized.get("kwargs") if serialized else None
    if not isinstance(settings, Mapping):
        return None
    for field in _URL_FIELDS:
        value = settings.get(field)
        if isinstance(value, str) and value:
            return value
    return None


@functools.lru_cache(maxsize=64)
def _provider_at(url: str) -> str | None:
    return provider_for_url(url)


def _openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    from langchain_core.messages import convert_to_openai_messages

    converted = convert_to_openai_messages(list(messages))
    return [dict(message) for message in converted]


def _anthropic_messages(
    messages: Sequence[BaseMessage], model: str
) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]] | None:
    """``(system, messages)`` as ChatAnthropic sends them, cache marks in place; None
    (logged once) where langchain-anthropic's formatter is missing."""
    try:
        from langchain_anthropic.chat_models import _format_messages

        system, formatted = _format_messages(list(messages), model=model)
    except (ImportError, TypeError, AttributeError) as error:
        warn_once(
            ("langchain-anthropic-formatter", type(error).__name__),
            "budgetguard: langchain-anthropic's message formatter is unavailable (%s); "
            "Claude calls are estimated from LangChain's OpenAI-shaped messages, and a "
            "prompt with any cache_control mark is held as if all of it were written",
            error,
        )
        return None
    return (system or None), list(formatted)


def _split_system(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """The system messages' text, as a separate system prompt, and the other turns."""
    roles = ("system", "developer")
    text = "\n".join(_text(m.get("content")) for m in messages if m.get("role") in roles)
    return (text or None), [m for m in messages if m.get("role") not in roles]


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] if isinstance(part, Mapping) and isinstance(part.get("text"), str) else ""
            for part in content
        )
    return ""


def _cache_marks(messages: Sequence[BaseMessage]) -> Literal["5m", "1h"] | None:
    """The longest cache lifetime any block of ``messages`` asks for (None: no mark)."""
    found: Literal["5m", "1h"] | None = None
    for message in messages:
        blocks = message.content if isinstance(message.content, list) else []
        marks = [block.get("cache_control") for block in blocks if isinstance(block, Mapping)]
        marks.append(message.additional_kwargs.get("cache_control"))
        for mark in marks:
            if isinstance(mark, Mapping):
                if mark.get("ttl") == "1h":
                    return "1h"
                found = "5m"
    return found


def batch_of(kwargs: Mapping[str, Any]) -> object:
    """What the runs of one ``generate()`` over several message lists share: their parent
    and the very params object LangChain passes to each start (None: a batch of one)."""
    size = kwargs.get("batch_size")
    if not isinstance(size, int) or size < 2:
        return None
    return (kwargs.get("parent_run_id"), id(kwargs.get("invocation_params")))


def attribution_id(value: object, field: str) -> str:
    """An attribution id: a non-empty string, or an int (a numeric user id) as one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"{field}: expected a non-empty string id, got {value!r} (an empty id would "
            "escape every limit of its scope)"
        )
    return value


def tag_value(value: object, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigurationError(f"{field}: expected a string tag value, got {value!r}")
    return str(value)


def frame_of(who: Mapping[str, str], tags: Mapping[str, str], settings: Settings) -> Frame | None:
    """A frame with a call's attribution, and ``raise`` where the policy or an enclosing
    frame asks for a downgrade (a callback cannot send one); None: nothing to add."""
    downgrading = on_exceed_of(settings.policy, frames.active_frames()) == "downgrade"
    if not who and not tags and not downgrading:
        return None
    return Frame(
        id=new_id(),
        tenant=who.get("tenant"),
        user=who.get("user"),
        feature=who.get("feature"),
        tags=dict(tags),
        limits=(),
        on_exceed="raise" if downgrading else None,
        tally=RunTally(),
    )


@contextmanager
def attributed(frame: Frame | None) -> Iterator[None]:
    """``frame`` pushed for the duration (None: nothing)."""
    token = frames.push(frame) if frame is not None else None
    try:
        yield
    finally:
        if token is not None:
            frames.pop(token)


AWAITING: frozenset[CodeType] = frozenset(
    function.__code__
    for function in (getattr(callback_manager, "_ahandle_event_for_handler", None),)
    if callable(function) and hasattr(function, "__code__")
)
"""Where LangChain's async callback manager looks a handler's events up (to await them
when they are coroutine functions). Missing in some future release: every event is then
the plain method, which LangChain runs on its executor - still correct, only slower."""


class Event:
    """One callback, as a coroutine to LangChain's async manager and a plain method to
    everything else (see ``langchain.py``'s docstring)."""

    def __init__(self, plain: Callable[..., Any], awaited: Callable[..., Any]) -> None:
        self.plain, self.awaited = plain, awaited

    def __get__(self, handler: object, owner: type | None = None) -> Any:
        if handler is None:
            return self
        caller = sys._getframe(1).f_code
        chosen = self.awaited if caller in AWAITING else self.plain
        return chosen.__get__(handler, owner)


_LLM_START: CodeType | None = getattr(
    getattr(callback_manager.AsyncCallbackManager, "on_llm_start", None), "__code__", None
)


def inline_for(handler: object, kind: type) -> bool:
    """Whether ``handler`` runs inline, for the LangChain code reading it: inline where
    LangChain's async ``on_llm_start`` would skip it (another inline handler, LangSmith's
    tracer, is attached: only inline ones then see the start), and nowhere else there
    (inline, it would hide that start from every non-inline handler). Inline everywhere
    else: its async events are awaited all the same, and a ``generate()``'s starts then
    run one after the other. Never without ``AWAITING``: a plain event run inline would
    block the event loop."""
    if not AWAITING:
        return False
    caller = sys._getframe(2)
    if caller.f_code.co_name in ("<listcomp>", "<genexpr>") and caller.f_back is not None:
        caller = caller.f_back  # Python < 3.12 runs a comprehension in a frame of its own
    if _LLM_START is None or caller.f_code is not _LLM_START:
        return True
    others = getattr(caller.f_locals.get("self"), "handlers", None) or ()
    return any(not isinstance(other, kind) and other.run_inline for other in others)
