"""Which SDK client asks each model, built the SDK's usual way, and one call through it.

By name: ``gpt-*``, ``o1``/``o3``/``o4``/``chatgpt-*`` -> ``openai.OpenAI()``;
``claude-*`` -> ``anthropic.Anthropic()``; ``gemini-*`` -> ``google.genai.Client()``;
``openrouter/vendor/model`` -> an OpenAI client on OpenRouter (``OPENROUTER_API_KEY``,
``OPENROUTER_BASE_URL``), priced under OpenRouter's name. Keys and base URLs come
from the environment, as each SDK reads them (``OPENAI_API_KEY`` /
``OPENAI_BASE_URL``, ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``,
``GEMINI_API_KEY`` / ``GOOGLE_GEMINI_BASE_URL``), so a trial runs against a
gateway or a local server with no code. Anything else: pass ``clients=``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._engine.config import current
from ..providers.instrument import instrument
from .cases import Case, TrialError, system_and_turns

__all__ = ["Target", "close", "targets"]

_OPENAI_PREFIXES = ("gpt-", "o1", "o3", "o4", "chatgpt-", "ft:gpt-")


@dataclass(frozen=True, slots=True)
class Target:
    """One model of the trial: its display name, the name the API takes, the SDK kind
    (``openai``, ``anthropic``, ``google``), the price-list provider, and the client."""

    name: str
    api_model: str
    kind: str
    provider: str | None
    client: Any
    owned: bool = False
    """Built here (closed when the trial ends), not given by the caller."""

    def ask(self, case: Case, max_tokens: int) -> str:
        """Send ``case``; the answer's text."""
        return _ASK[self.kind](self, case, max_tokens)


def _kind_of(model: str) -> tuple[str, str, str | None]:
    """(SDK kind, the model name sent, the price-list provider) of a model name."""
    if model.startswith("openrouter/"):
        return "openrouter", model.removeprefix("openrouter/"), "openrouter"
    if model.startswith(_OPENAI_PREFIXES):
        return "openai", model, "openai"
    if model.startswith("claude-"):
        return "anthropic", model, "anthropic"
    if model.startswith("gemini-"):
        return "google", model, "google"
    raise TrialError(
        f"models: cannot tell which client asks {model!r}; use gpt-*, claude-*, gemini-*, "
        "openrouter/vendor/model, or pass clients={model: instrumented_client}"
    )


def _build(kind: str) -> Any:
    """A new client of ``kind``, configured from the environment as the SDK does."""
    if kind == "openai":
        import openai

        return openai.OpenAI()
    if kind == "openrouter":
        import openai

        return openai.OpenAI(
            api_key=os.environ.get("OPENROUTER_API_KEY"),
            base_url=os.environ.get("OPENROUTER_BASE_URL", "https://openrouter.ai/api/v1"),
        )
    if kind == "anthropic":
        import anthropic

        return anthropic.Anthropic()
    from google import genai

    return genai.Client()


def _kind_of_client(client: Any) -> str:
    top = type(client).__module__.split(".", 1)[0]
    if top not in ("openai", "anthropic", "google"):
        raise TrialError(f"clients: unsupported client {type(client).__name__}")
    return top


def targets(models: list[str], clients: Mapping[str, Any] | None = None) -> list[Target]:
    """Every model's target, each priced before anything is sent: a model with no
    price raises ``UnknownModel`` here, not after half the trial has run."""
    if not models:
        raise TrialError("models: give at least one model")
    if len(set(models)) != len(models):
        raise TrialError(f"models: a model is named twice in {models}")
    given = dict(clients or {})
    made: dict[str, Any] = {}
    found: list[Target] = []
    book = current().prices
    for model in models:  # every price first: no client is built for a trial refused
        if model not in given:
            _kind, api_model, provider = _kind_of(model)
            book.rates(api_model, provider)  # UnknownModel: before anything is built
    try:
        _collect(models, given, made, found, book)
    except BaseException:
        for client in made.values():  # what was built before the failure (found by review)
            closer = getattr(client, "close", None)
            if callable(closer):
                closer()
        raise
    return found


def _collect(
    models: list[str],
    given: Mapping[str, Any],
    made: dict[str, Any],
    found: list[Target],
    book: Any,
) -> None:
    for model in models:
        if model in given:
            client = instrument(given[model])
            kind = _kind_of_client(client)
            api_model, provider = model, None
        else:
            kind, api_model, provider = _kind_of(model)
        book.rates(api_model, provider)  # UnknownModel: before anything is sent
        if model not in given:
            if kind not in made:
                try:
                    made[kind] = instrument(_build(kind), provider=provider)
                except ImportError as exc:
                    raise TrialError(f"models: {model!r} needs the {kind} SDK: {exc}") from None
                except Exception as exc:  # the SDK refuses to build (no API key, ...)
                    raise TrialError(
                        f"models: cannot build a client for {model!r}: {exc}"
                    ) from None
            client = made[kind]
        found.append(
            Target(
                model,
                api_model,
                "openai" if kind == "openrouter" else kind,
                provider,
                client,
                owned=model not in given,
            )
        )


def close(found: list[Target]) -> None:
    """Close the clients the trial built (their connection pools), each once."""
    seen: set[int] = set()
    for target in found:
        if target.owned and id(target.client) not in seen:
            seen.add(id(target.client))
            closer = getattr(target.client, "close", None)
            if callable(closer):
                closer()


def _ask_openai(target: Target, case: Case, max_tokens: int) -> str:
    cap = "max_tokens" if target.provider == "openrouter" else "max_completion_tokens"
    response = target.client.chat.completions.create(
        model=target.api_model, messages=list(case.messages), **{cap: max_tokens}
    )
    return str(response.choices[0].message.content or "")


def _ask_anthropic(target: Target, case: Case, max_tokens: int) -> str:
    system, turns = system_and_turns(case.messages)
    extra = {"system": system} if system else {}
    response = target.client.messages.create(
        model=target.api_model, messages=turns, max_tokens=max_tokens, **extra
    )
    return "".join(getattr(block, "text", "") for block in response.content)


def _ask_google(target: Target, case: Case, max_tokens: int) -> str:
    system, turns = system_and_turns(case.messages)
    contents = [
        {"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
        for m in turns
    ]
    config: dict[str, Any] = {"max_output_tokens": max_tokens}
    if system:
        config["system_instruction"] = system
    response = target.client.models.generate_content(
        model=target.api_model, contents=contents, config=config
    )
    return str(response.text or "")


_ASK: Mapping[str, Callable[[Target, Case, int], str]] = {
    "openai": _ask_openai,
    "anthropic": _ask_anthropic,
    "google": _ask_google,
}
