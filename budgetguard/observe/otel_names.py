"""The names budgetguard's OpenTelemetry listener writes, in one place.

GenAI names follow the OpenTelemetry semantic conventions for generative AI
(development status, checked against opentelemetry-semantic-conventions 0.66b2):
spans ``{gen_ai.operation.name} {gen_ai.request.model}`` of kind CLIENT, usage
attributes that count cache reads and writes inside ``input_tokens``. Cost follows
the proposal of semantic-conventions-genai PR 443 (``gen_ai.usage.cost.amount`` as
a double, ``.currency`` ISO 4217, ``.source`` ``provider | local``), not yet
merged: the names may move, and this module is where they would be changed.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ATTRIBUTE_CHOICES",
    "INFERENCE_OPERATIONS",
    "PROVIDER_NAMES",
    "TOKEN_BUCKETS",
    "provider_name",
]

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"
REASONING = "gen_ai.usage.reasoning.output_tokens"
TOKEN_TYPE = "gen_ai.token.type"
COST_AMOUNT = "gen_ai.usage.cost.amount"
COST_CURRENCY = "gen_ai.usage.cost.currency"
COST_SOURCE = "gen_ai.usage.cost.source"
COST_PREFIX = "gen_ai.usage.cost."
ERROR_TYPE = "error.type"

OUTCOME = "budgetguard.outcome"
COST_USD = "budgetguard.cost_usd"
RESERVED_USD = "budgetguard.reserved_usd"
TENANT = "budgetguard.tenant"
USER = "budgetguard.user"
FEATURE = "budgetguard.feature"
OUTPUT_CAP = "budgetguard.output_cap"
REFUSED_SCOPE = "budgetguard.refused_by.scope"
REFUSED_KEY = "budgetguard.refused_by.key"
REFUSED_WINDOW = "budgetguard.refused_by.window"
REFUSED_UNIT = "budgetguard.refused_by.unit"
LIMIT_SCOPE = "budgetguard.limit.scope"
LIMIT_KEY = "budgetguard.limit.key"
LIMIT_WINDOW = "budgetguard.limit.window"
LIMIT_UNIT = "budgetguard.limit.unit"

INFERENCE_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
"""Operations whose span may be enriched: one model call each. An ``invoke_agent`` or
workflow span covers many calls, and PR 443 keeps cost off them (no double counting)."""

PROVIDER_NAMES: Mapping[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gcp.gen_ai",  # the Gemini API or Vertex AI: budgetguard cannot tell which
    "azure": "azure.ai.openai",
    "aws": "aws.bedrock",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "mistral": "mistral_ai",
    "perplexity": "perplexity",
    "x-ai": "x_ai",
}
"""genai-prices provider ids -> the conventions' well-known ``gen_ai.provider.name``."""

ATTRIBUTE_CHOICES: Mapping[str, tuple[str, ...]] = {
    "feature": (FEATURE,),
    "model": (REQUEST_MODEL, RESPONSE_MODEL),
    "outcome": (OUTCOME,),
}
"""What ``attributes=`` may name for the metrics, and the attribute keys each adds
(``gen_ai.operation.name`` and ``gen_ai.provider.name`` are always there)."""

TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
"""The conventions' bucket boundaries for ``gen_ai.client.token.usage``."""


def provider_name(provider: str | None) -> str | None:
    """``gen_ai.provider.name`` for a genai-prices provider id: the well-known value,
    else the id itself (the conventions' "custom value"), None when budgetguard did not
    know the provider (the attribute is then left out, never guessed)."""
    if provider is None:
        return None
    return PROVIDER_NAMES.get(provider, provider)
