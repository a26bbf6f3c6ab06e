"""What a LiteLLM call asks for and what it billed: the provider, the request, the usage.

LiteLLM takes OpenAI chat-completions arguments whatever the provider behind
it, so a call is read by the chat-completions adapter
(``providers/openai_chat.py``: messages, tools, output schema, the output cap,
``n``) and answered with OpenAI-shaped usage, plus what LiteLLM adds for
Anthropic: cache writes (``prompt_tokens_details.cache_write_tokens``, or
``cache_creation_input_tokens``), their one-hour part
(``prompt_tokens_details.cache_creation_token_details.ephemeral_1h_input_tokens``),
web searches (``server_tool_use.web_search_requests``) and the service tier
on the usage itself.

The prices are the provider's, not LiteLLM's: LiteLLM routes the call
(``litellm.get_llm_provider``: a prefix such as ``anthropic/``, ``gemini/``,
``openrouter/``, or a bare OpenAI name), its provider is mapped to the
genai-prices id (``PROVIDERS``, else the same name), and the model is priced
without the prefix. LiteLLM's own figures are never charged: its
``response_cost`` is ignored, and usage LiteLLM made up is refused as
unreadable (``UsageError``), so the call is charged its reservation and
logged - a response whose provider sent no usage comes back with zeros, and a
stream whose provider sent none ends with a usage LiteLLM counted itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import litellm

from .._core.errors import ConfigurationError, UnknownModel, UsageError, describe_error
from .._core.money import check_nanos
from .._core.records import LLMRequest
from .._core.usage import PriceContext, Usage, UsageDetails
from .._engine.admission import Admission
from .._engine.charges import Charge, priced, unpriced
from ..providers import openai_chat
from ..providers.anthropic import price_context as anthropic_context
from ..providers.fields import count, get, model_of
from ..providers.openai_chat import OpenAIChatStreamTracker, service_tier_context
from ..providers.tracking import StreamTracker

__all__ = [
    "PROVIDERS",
    "LiteLLMCall",
    "LiteLLMStreamTracker",
    "litellm_usage",
    "provider_reported_usage",
]

PROVIDERS: Mapping[str, str] = {
    "gemini": "google",
    "vertex_ai": "google",
    "vertex_ai_beta": "google",
    "xai": "x-ai",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "bedrock": "aws",
    "bedrock_converse": "aws",
    "moonshot": "moonshotai",
    "github_copilot": "github-copilot",
    "text-completion-openai": "openai",
    "cohere_chat": "cohere",
    "anthropic_text": "anthropic",
    "voyage": "voyageai",
}
"""LiteLLM provider names whose genai-prices id differs; any other name is used as the
id when genai-prices has that provider, else the model is priced by its name alone
(a local server: ``ollama``, ``hosted_vllm`` ... needs ``configure(prices=...)``)."""

_FALLBACKS = "LiteLLM fallbacks (another model may answer)"


@cache
def _genai_ids() -> frozenset[str]:
    from genai_prices.data_snapshot import get_snapshot

    return frozenset(str(provider.id) for provider in get_snapshot().providers)


def genai_provider(litellm_provider: str) -> str | None:
    """The genai-prices provider id of a LiteLLM provider name (None: price by name)."""
    mapped = PROVIDERS.get(litellm_provider)
    if mapped is not None:
        return mapped
    return litellm_provider if litellm_provider in _genai_ids() else None


def _context(provider: str | None, response: object, usage: object) -> PriceContext:
    """The price variant billed: Anthropic's batch / fast mode (on the usage), else the
    OpenAI ``service_tier`` (on the response or chunk)."""
    if provider == "anthropic":
        return anthropic_context(usage)
    return service_tier_context(get(response, "service_tier") or get(usage, "service_tier"))


def litellm_usage(usage: object, path: str = "response.usage", context: PriceContext = ()) -> Usage:
    """A LiteLLM ``Usage``: OpenAI-shaped, with Anthropic's cache writes, their one-hour
    part and web searches. Zero input tokens means the provider reported none (LiteLLM
    fills in zeros): a ``UsageError``, never a free call."""
    base = openai_chat.openai_chat_usage(usage, path, context)
    if base.input_tokens == 0:
        raise UsageError(
            f"{path}.prompt_tokens: 0 - the provider reported no usage (LiteLLM fills in zeros)"
        )
    details = get(usage, "prompt_tokens_details")
    where = f"{path}.prompt_tokens_details"
    writes = base.cache_write_tokens or count(details, "cache_creation_tokens", where)
    writes = writes or count(usage, "cache_creation_input_tokens", path)
    split = get(details, "cache_creation_token_details")
    hour = count(split, "ephemeral_1h_input_tokens", f"{where}.cache_creation_token_details")
    tools = get(usage, "server_tool_use")
    searches = count(tools, "web_search_requests", f"{path}.server_tool_use")
    if writes == base.cache_write_tokens and not hour and not searches:
        return base
    extra = base.details or UsageDetails()
    try:
        return replace(
            base,
            cache_write_tokens=writes,
            cache_write_1h_tokens=hour,
            details=replace(extra, web_searches=searches) if searches else base.details,
        )
    except UsageError as error:
        raise UsageError(f"{path}: inconsistent counts: {error}") from None


def provider_reported_usage(stream: object) -> bool | None:
    """Whether the provider sent a usage in the stream LiteLLM relays (its raw chunks are
    kept on ``CustomStreamWrapper.chunks``); None when that cannot be told."""
    chunks = getattr(stream, "chunks", None)
    if not isinstance(chunks, list):
        return None
    return any(get(chunk, "usage") is not None for chunk in reversed(chunks))


def _strip(model: str | None, prefix: str) -> str | None:
    """A model name as priced: without the LiteLLM prefix, if a response repeats it."""
    if model and prefix and model.startswith(prefix) and len(model) > len(prefix):
        return model[len(prefix) :]
    return model


@dataclass(frozen=True, slots=True)
class LiteLLMCall:
    """The chat-completions adapter for one LiteLLM model string: its provider (the
    genai-prices id), the model as priced, and the prefix LiteLLM routes it by (kept on a
    downgraded model, so the cheaper one goes to the same provider)."""

    litellm_provider: str
    provider: str | None
    model_name: str
    prefix: str

    name = "litellm.completion"
    sdk = "litellm"
    surfaces = ()
    stream_usage_option = True

    @classmethod
    def of(cls, kwargs: Mapping[str, Any], where: str = "litellm.completion") -> LiteLLMCall:
        """Route ``kwargs["model"]`` as LiteLLM will (raises naming the model if it cannot)."""
        model = kwargs.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"{where}: model= must be a model name to budget the call")
        given = kwargs.get("custom_llm_provider")
        base = kwargs.get("api_base") or kwargs.get("base_url")
        try:
            name, provider, _key, _base = litellm.get_llm_provider(
                model=model,
                custom_llm_provider=given if isinstance(given, str) else None,
                api_base=base if isinstance(base, str) else None,
            )
        except Exception as error:
            raise ConfigurationError(
                f"{where}: model={model!r}: LiteLLM cannot tell its provider "
                f"({describe_error(error).splitlines()[0]}); prefix it ('anthropic/...') "
                "or pass custom_llm_provider="
            ) from None
        if model.endswith(name) and model != name:
            prefix = model[: -len(name)]
        else:
            prefix = f"{provider}/" if model.startswith(f"{provider}/") else ""
        return cls(str(provider), genai_provider(str(provider)), str(name), prefix)

    def request(self, kwargs: dict[str, Any]) -> LLMRequest:
        request = openai_chat.ADAPTER.request({**kwargs, "model": self.model_name})
        base = kwargs.get("base_model")  # LiteLLM's name for what a deployment runs
        aliases = request.aliases
        if isinstance(base, str) and base:
            aliases = {self.model_name: base.split("/", 1)[1] if "/" in base else base}
        unbounded = request.unbounded
        if kwargs.get("fallbacks"):
            unbounded = (*unbounded, _FALLBACKS)
        return replace(request, provider=self.provider, aliases=aliases, unbounded=unbounded)

    def cap_output(self, kwargs: dict[str, Any], tokens: int, model: str) -> None:
        openai_chat.ADAPTER.cap_output(kwargs, tokens, model)

    def sent_model(self, model: str) -> str:
        """The model string to send for ``model`` (a downgrade): with this call's prefix."""
        return f"{self.prefix}{model}"

    def recognizes(self, response: object) -> bool:
        return openai_chat.ADAPTER.recognizes(response)

    def model(self, response: object) -> str | None:
        return _strip(model_of(response), self.prefix)

    def usage(self, response: object) -> Usage:
        block = get(response, "usage")
        return litellm_usage(block, "response.usage", _context(self.provider, response, block))

    def tracker(self) -> StreamTracker:
        return LiteLLMStreamTracker(self)

    def charge(self, admission: Admission, response: object) -> Charge:
        """What a complete response costs; its reservation when its usage cannot be read."""
        model = self.model(response)
        try:
            usage = self.usage(response)
        except UsageError as error:
            return unpriced(admission, self.name, model, str(error))
        if (
            model is not None
            and model != admission.model
            and not _priced_as_asked(admission, model)
        ):
            return _served_elsewhere(admission, self.name, usage, model)
        return priced(admission, self.name, usage, model)


def _priced_as_asked(admission: Admission, model: str) -> bool:
    """Whether ``model`` (the response's) has a price under the request's provider."""
    request = admission.request
    name = request.priced_as(model) if request is not None else model
    context = request.price_context if request is not None else ()
    try:
        admission.settings.prices.rates(name, admission.provider, context)
    except (UnknownModel, ConfigurationError):
        return False
    return True


def _served_elsewhere(admission: Admission, where: str, usage: Usage, model: str) -> Charge:
    """A response from a model the request's provider does not price (LiteLLM fallbacks
    answered with another provider's model): priced at that model's own provider as LiteLLM
    routes it, else by its name alone, else its reservation - never the asked model's rates."""
    routes: list[tuple[str, str | None]] = []
    try:
        name, provider, _key, _base = litellm.get_llm_provider(model=model)
        routes.append((str(name), genai_provider(str(provider))))
    except Exception:  # LiteLLM cannot route it: try the name alone
        pass
    routes.append((model, None))
    for name, provider in routes:
        for context in dict.fromkeys((usage.context, ())):
            try:
                rates = admission.settings.prices.rates(name, provider, context)
                return Charge(check_nanos(rates.cost(usage), field="cost"), usage, model)
            except (UnknownModel, ConfigurationError):
                continue
    reason = (
        f"the response's model {model!r} is not the one asked for ({admission.model!r}: "
        "LiteLLM fallbacks?) and has no price"
    )
    return unpriced(admission, where, model, reason)


class LiteLLMStreamTracker(OpenAIChatStreamTracker):
    """LiteLLM's ``ModelResponseStream`` chunks: OpenAI-shaped, usage in a last chunk.

    ``stream``: the ``CustomStreamWrapper`` being followed, asked at the usage chunk
    whether the provider reported it (else LiteLLM counted it: refused as unreadable).
    """

    def __init__(self, call: LiteLLMCall) -> None:
        super().__init__()
        self.call = call
        self.stream: object = None

    def _feed(self, event: object) -> None:
        usage = get(event, "usage")
        if usage is not None and provider_reported_usage(self.stream) is False:
            raise UsageError(
                "chunk.usage: the provider reported no usage; LiteLLM counted this one itself"
            )
        super()._feed(event)
        self.model = _strip(self.model, self.call.prefix)
        if usage is not None:
            self.usage = litellm_usage(
                usage, "chunk.usage", _context(self.call.provider, event, usage)
            )
