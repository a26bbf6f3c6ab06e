"""A built-in fake chat model, so examples and tests run with no provider and no key.

It behaves like a guarded client: each ``complete`` call is estimated,
reserved, "answered" with deterministic pseudo-random text, and settled with
usage shaped like an OpenAI chat completion (cached prompt tokens included).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._core.records import LLMRequest
from .._core.usage import Usage
from .._engine.config import Settings, current
from .._engine.flow import admit_flow
from ..stores.drive import Flow, arun, run

__all__ = ["FakeChatModel"]

_WORDS = [
    "budget",
    "token",
    "agent",
    "plan",
    "tool",
    "call",
    "result",
    "step",
    "reason",
    "search",
    "answer",
    "cost",
]


@dataclass
class FakeChatModel:
    """``FakeChatModel(seed=1).complete("gpt-4o", messages, max_tokens=500)`` -> a response dict.

    ``fill`` is the share of ``max_tokens`` an answer uses (like a verbose
    model); ``cached_share`` the share of the prompt served from cache.
    """

    seed: int = 0
    fill: tuple[float, float] = (0.3, 0.9)
    cached_share: float = 0.5
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _answer(self, model: str, prompt_tokens: int, max_tokens: int) -> tuple[str, Usage]:
        low, high = self.fill
        out = max(1, int(max_tokens * self._rng.uniform(low, high)))
        text = " ".join(self._rng.choice(_WORDS) for _ in range(out))
        cached = int(prompt_tokens * self.cached_share) // 128 * 128
        return text, Usage(input_tokens=prompt_tokens, output_tokens=out, cache_read_tokens=cached)

    @staticmethod
    def _response(model: str, text: str, usage: Usage) -> dict[str, Any]:
        return {
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.total_tokens,
                "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
            },
        }

    def _complete(
        self, settings: Settings, model: str, messages: Sequence[Mapping[str, Any]], max_tokens: int
    ) -> Flow[dict[str, Any]]:
        request = LLMRequest(model=model, messages=messages, max_tokens=max_tokens)
        admission = yield from admit_flow(settings, request)
        used = admission.model or model
        try:
            prompt_tokens = _prompt_tokens(used, messages)
            text, usage = self._answer(used, prompt_tokens, max_tokens)
        except BaseException:
            yield from admission.release_flow()
            raise
        yield from admission.settle_flow(admission.price(usage, used), model=used, usage=usage)
        return self._response(used, text, usage)

    def complete(
        self, model: str, messages: Sequence[Mapping[str, Any]], *, max_tokens: int = 512
    ) -> dict[str, Any]:
        settings = current()
        return run(self._complete(settings, model, messages, max_tokens), settings.store)

    async def acomplete(
        self, model: str, messages: Sequence[Mapping[str, Any]], *, max_tokens: int = 512
    ) -> dict[str, Any]:
        settings = current()
        return await arun(
            self._complete(settings, model, messages, max_tokens), settings.async_store
        )


def _prompt_tokens(model: str, messages: Sequence[Mapping[str, Any]]) -> int:
    from ..pricing.tokens import count_message_tokens

    return count_message_tokens(model, messages)
