"""Where an instrumented client's calls go, and so how they are priced.

An OpenAI SDK client may talk to OpenAI, Azure, OpenRouter, Groq, DeepSeek,
xAI, Together, Mistral, Fireworks, Gemini's OpenAI-compatible endpoint or a
local server; an Anthropic SDK client to Anthropic, Bedrock or Vertex. The
provider whose prices apply is, in order: the ``provider=`` given to
``instrument``; the one genai-prices matches to the client's base URL (its
``api_pattern``s); none - then a model is priced by its name alone, and a
model only a local server knows needs a price (``configure(prices=...)``).
``configure(providers={model: id})`` still wins for the models it names.
``models=`` maps the names the API takes (Azure deployments) to the model to
price them as.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from .._core.errors import ConfigurationError
from .._core.records import LLMRequest

__all__ = ["Route", "base_url_of", "provider_for_url", "route_for"]


@dataclass(frozen=True, slots=True)
class Route:
    """One client's pricing: its provider (None: by model name) and model aliases."""

    provider: str | None = None
    models: Mapping[str, str] = field(default_factory=dict)
    base_url: str | None = None
    home: str | None = None
    """The SDK's own provider: tried for a model no name match finds (on an unknown host)."""

    def request(self, request: LLMRequest) -> LLMRequest:
        """``request`` priced under this route (an explicit provider on it wins)."""
        return replace(
            request,
            provider=request.provider or self.provider,
            provider_hint=self.home,
            aliases=self.models or request.aliases,
        )


def base_url_of(client: object) -> str | None:
    """The URL the client sends to: ``base_url`` (OpenAI, Anthropic), or google-genai's
    configured one (``https://generativelanguage.googleapis.com/`` by default)."""
    url = getattr(client, "base_url", None)
    if url is None:
        api = getattr(client, "_api_client", None)
        options = getattr(api, "_http_options", None)
        url = getattr(options, "base_url", None)
    return str(url) if url else None


def provider_for_url(url: str | None) -> str | None:
    """The genai-prices provider whose API lives at ``url``; None for any other host
    (a local server, a private gateway)."""
    if not url:
        return None
    from genai_prices.data_snapshot import get_snapshot

    try:
        return str(get_snapshot().find_provider(None, None, url).id)
    except LookupError:
        return None


def _check(provider: str) -> str:
    from genai_prices.data_snapshot import get_snapshot

    try:
        return str(get_snapshot().find_provider(None, provider, None).id)
    except LookupError:
        raise ConfigurationError(
            f"provider: unknown provider {provider!r}; use a genai-prices provider id "
            "such as 'openai', 'azure', 'openrouter', 'groq', 'google', 'anthropic'"
        ) from None


_HOMES = {"openai": "openai", "anthropic": "anthropic", "google": "google"}
"""The provider each SDK talks to when nothing says otherwise."""


def route_for(client: object, provider: str | None, models: Mapping[str, str] | None) -> Route:
    """The route of ``client``, from what ``instrument`` was told and its base URL."""
    aliases: dict[str, str] = {}
    for name, model in (models or {}).items():
        if not isinstance(name, str) or not name or not isinstance(model, str) or not model:
            raise ConfigurationError(
                f"models: expected {{'deployment': 'model'}} names, got {name!r}: {model!r}"
            )
        aliases[name] = model
    url = base_url_of(client)
    chosen = _check(provider) if provider is not None else provider_for_url(url)
    home = _HOMES.get(type(client).__module__.split(".", 1)[0])
    return Route(chosen, MappingProxyType(aliases), url, home)
