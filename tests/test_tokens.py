"""Token counting: exact for OpenAI, bounded for everyone else, never a crash offline."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import tiktoken

from budgetguard._core.errors import ConfigurationError
from budgetguard.pricing import tokens as _tokens
from budgetguard.pricing.book import PriceBook
from budgetguard.pricing.tokens import count_message_tokens, count_text_tokens, estimate_tokens

CORPUS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. " * 20,
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n" * 5,
    '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}',
    "Größere Änderungen kosten mehr. Ça coûte cher, n'est-ce pas ? ¿Cuánto cuesta?",
    "预算控制在调用之前进行，以避免意外的账单。日本語のテキストも含みます。",  # noqa: RUF001
    "Бюджет превышен: запрос отклонён. Δοκιμή ελληνικού κειμένου. עברית ערבית العربية",
    "🚀🔥💸 emoji 👩‍👩‍👧‍👦 family 🇺🇸 flags ✅",
    "    \n\n\t\t    indented     whitespace      runs\n\n\n",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "0123456789" * 30,
    "<|endoftext|> special tokens are plain text here <|im_start|>",
]


def cookbook_count(model: str, messages: Sequence[Mapping[str, str]]) -> int:
    """OpenAI cookbook "How to count tokens with tiktoken", for gpt-3.5-turbo-0613 and later."""
    encoding = tiktoken.encoding_for_model(model)
    tokens_per_message, tokens_per_name = 3, 1
    total = 0
    for message in messages:
        total += tokens_per_message
        for key, value in message.items():
            total += len(encoding.encode(value, disallowed_special=()))
            if key == "name":
                total += tokens_per_name
    return total + 3  # every reply is primed with <|start|>assistant<|message|>


COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
        "for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4", "gpt-3.5-turbo"])
@pytest.mark.parametrize(
    "messages",
    [
        COOKBOOK_MESSAGES,
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": text} for text in CORPUS],
    ],
    ids=["cookbook", "hi", "corpus"],
)
def test_openai_chat_counts_follow_the_cookbook_formula(
    model: str, messages: list[dict[str, str]]
) -> None:
    assert count_message_tokens(model, messages) == cookbook_count(model, messages)


@pytest.mark.parametrize(
    ("model", "api_prompt_tokens"),
    [("gpt-4o", 124), ("gpt-4o-mini", 124), ("gpt-4", 129), ("gpt-3.5-turbo", 129)],
)
def test_cookbook_example_matches_the_api_reported_prompt_tokens(
    model: str, api_prompt_tokens: int
) -> None:
    # The cookbook notebook sends COOKBOOK_MESSAGES to the API and prints
    # response.usage.prompt_tokens: 124 for the o200k models, 129 for the cl100k ones.
    assert count_message_tokens(model, COOKBOOK_MESSAGES) >= api_prompt_tokens
    assert count_message_tokens(model, COOKBOOK_MESSAGES) == api_prompt_tokens


def test_message_count_is_raw_content_plus_bounded_overhead() -> None:
    encoding = tiktoken.get_encoding("o200k_base")
    raw = sum(len(encoding.encode(m["content"])) for m in COOKBOOK_MESSAGES)
    counted = count_message_tokens("gpt-4o", COOKBOOK_MESSAGES)
    assert counted >= raw
    # Overhead: 3 per message + 3 for the reply + the role and name strings (+1 per name).
    strings = sum(
        len(encoding.encode(v)) + (1 if k == "name" else 0)
        for m in COOKBOOK_MESSAGES
        for k, v in m.items()
        if k != "content"
    )
    assert counted - raw <= 3 * len(COOKBOOK_MESSAGES) + 3 + strings


def test_text_counts_are_tiktoken_counts_for_openai_models() -> None:
    o200k = tiktoken.get_encoding("o200k_base")
    cl100k = tiktoken.get_encoding("cl100k_base")
    for text in CORPUS:
        expected = len(o200k.encode(text, disallowed_special=()))
        for model in ("gpt-4o", "openai/gpt-4o", "gpt-5", "o3", "gpt-4.1-mini"):
            assert count_text_tokens(model, text) == expected
        assert count_text_tokens("gpt-4", text) == len(cl100k.encode(text, disallowed_special=()))
    assert count_text_tokens("gpt-4o", "") == 0


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-5", "claude-3-5-sonnet-20241022", "gemini-2.5-pro"]
)
def test_non_openai_approximation_is_bounded(model: str) -> None:
    cl100k = tiktoken.get_encoding("cl100k_base")
    o200k = tiktoken.get_encoding("o200k_base")
    for text in CORPUS:
        approx = count_text_tokens(model, text)
        exact_cl = len(cl100k.encode(text, disallowed_special=()))
        size = len(text.encode("utf-8"))
        assert approx <= size, text
        assert approx >= exact_cl, text
        assert approx >= len(o200k.encode(text, disallowed_special=())), text
        # The documented rule: max(ceil(1.4 x cl100k), ceil(chars / 3)), capped at bytes.
        assert approx == min(size, max(math.ceil(exact_cl * 1.4), math.ceil(len(text) / 3)))


def test_anthropic_messages_system_and_tool_blocks() -> None:
    model = "claude-sonnet-4-5"
    tool_input = {"city": "Paris", "units": "metric"}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": tool_input},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C, sunny"}
            ],
        },
    ]
    system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    counted = count_message_tokens(model, messages, system=system)
    pieces = [
        "Weather in Paris?",
        "Let me check.",
        json.dumps(tool_input),
        "18C, sunny",
        "You are terse.",
    ]
    assert counted >= sum(count_text_tokens(model, piece) for piece in pieces)
    # The string system prompt costs the same as the one-block form.
    assert count_message_tokens(model, [], system="You are terse.") == count_message_tokens(
        model, [], system=system
    )


def test_openai_parts_images_tool_calls_and_tools() -> None:
    model = "gpt-4o"
    o200k = tiktoken.get_encoding("o200k_base")
    text_only = [{"role": "user", "content": "Describe this."}]
    with_parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe this."},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64," + "A" * 50_000},
                },
            ],
        }
    ]
    image_cost = count_message_tokens(model, with_parts) - count_message_tokens(model, text_only)
    # Conservative: above gpt-4o's largest high-detail image (85 + 170 x 8 tiles = 1445).
    assert image_cost >= 1445
    # gpt-4o-mini bills images at ~33x the tokens: 2833 + 5667 x 8 tiles.
    mini_cost = count_message_tokens("gpt-4o-mini", with_parts) - count_message_tokens(
        "gpt-4o-mini", text_only
    )
    assert mini_cost >= 2833 + 5667 * 8

    arguments = json.dumps({"query": "budget guard", "limit": 5})
    calls = [
        {"role": "user", "content": "search"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "search", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "3 results"},
    ]
    counted = count_message_tokens(model, calls)
    assert counted >= len(o200k.encode(arguments)) + len(o200k.encode("3 results"))

    tools = [
        {
            "type": "function",
            "function": {
                "name": "search",
                "description": "Search the web.",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
            },
        }
    ]
    with_tools = count_message_tokens(model, text_only, tools=tools)
    without = count_message_tokens(model, text_only)
    assert with_tools - without >= len(o200k.encode(json.dumps(tools[0])))


def test_bad_messages_name_the_index() -> None:
    with pytest.raises(ConfigurationError, match=r"messages\[1\]"):
        count_message_tokens("gpt-4o", [{"role": "user", "content": "x"}, "oops"])  # type: ignore[list-item]


def test_estimate_tokens_output_is_max_tokens_or_the_model_max() -> None:
    book = PriceBook()
    messages = [{"role": "user", "content": "Summarize the plot of Hamlet."}]
    rates = book.rates("gpt-4o")
    counted = count_message_tokens("gpt-4o", messages)
    assert estimate_tokens("gpt-4o", messages=messages, max_tokens=300, rates=rates) == (
        counted,
        300,
    )
    assert estimate_tokens("gpt-4o", messages=messages, max_tokens=None, rates=rates) == (
        counted,
        rates.max_output_tokens,
    )
    claude = book.rates("claude-sonnet-4-5")
    _, out = estimate_tokens("claude-sonnet-4-5", messages=messages, max_tokens=None, rates=claude)
    assert out == claude.max_output_tokens == 64000  # Anthropic's documented limit
    prompt_in, _ = estimate_tokens("gpt-4o", prompt=["a b c", "d e"], max_tokens=1, rates=rates)
    assert prompt_in == count_text_tokens("gpt-4o", "a b c") + count_text_tokens("gpt-4o", "d e")
    with pytest.raises(ConfigurationError, match="max_tokens"):
        estimate_tokens("gpt-4o", messages=messages, max_tokens=-1, rates=rates)


def test_unloadable_encoding_falls_back_to_bytes_with_one_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    o200k = tiktoken.get_encoding("o200k_base")
    asked: list[str] = []

    def refuse(name: str) -> tiktoken.Encoding:
        asked.append(name)
        raise OSError(f"cannot download {name}: no network")

    monkeypatch.setattr(_tokens, "_encodings", {})
    monkeypatch.setattr(tiktoken, "get_encoding", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        counts = [count_text_tokens("gpt-4o", text) for text in CORPUS for _ in range(3)]
        count_message_tokens("gpt-4o-mini", [{"role": "user", "content": "hi"}])
    assert len(caught) == 1 and "o200k_base" in str(caught[0].message)
    assert issubclass(caught[0].category, RuntimeWarning)
    assert asked == ["o200k_base"]  # never retried: a retry could cost a network timeout
    for text, counted in zip(CORPUS, counts[::3], strict=True):
        assert (
            counted == len(text.encode("utf-8")) >= len(o200k.encode(text, disallowed_special=()))
        )


def test_offline_process_warns_once_per_encoding(tmp_path: Path) -> None:
    """A real process with an empty TIKTOKEN_CACHE_DIR and no way out to the network."""
    script = """
import json, warnings
warnings.simplefilter("always")
from budgetguard.pricing.tokens import count_message_tokens, count_text_tokens
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    texts = json.loads(input())
    gpt = [count_text_tokens("gpt-4o", t) for t in texts]
    gpt += [count_text_tokens("gpt-4o", t) for t in texts]
    claude = [count_text_tokens("claude-sonnet-4-5", t) for t in texts]
    chat = count_message_tokens("gpt-4o", [{"role": "user", "content": t} for t in texts])
print(json.dumps({"gpt": gpt, "claude": claude, "chat": chat,
                  "warnings": [str(w.message) for w in caught]}))
"""
    env = dict(os.environ)
    env.update(
        TIKTOKEN_CACHE_DIR=str(tmp_path),
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        http_proxy="http://127.0.0.1:9",
    )
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(CORPUS),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout)
    assert len(report["warnings"]) == 2, report["warnings"]
    assert sum("o200k_base" in w for w in report["warnings"]) == 1
    assert sum("cl100k_base" in w for w in report["warnings"]) == 1
    o200k = tiktoken.get_encoding("o200k_base")
    cl100k = tiktoken.get_encoding("cl100k_base")
    for index, text in enumerate(CORPUS):
        assert report["gpt"][index] >= len(o200k.encode(text, disallowed_special=()))
        assert report["claude"][index] >= len(cl100k.encode(text, disallowed_special=()))
    assert report["chat"] >= count_message_tokens(
        "gpt-4o", [{"role": "user", "content": t} for t in CORPUS]
    )


def test_encodings_load_once(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []
    real = tiktoken.get_encoding

    def counting(name: str) -> tiktoken.Encoding:
        loads.append(name)
        return real(name)

    monkeypatch.setattr(_tokens, "_encodings", {})
    monkeypatch.setattr(tiktoken, "get_encoding", counting)
    messages = [{"role": "user", "content": "hello"}]
    for _ in range(50):
        count_message_tokens("gpt-4o", messages)
        count_message_tokens("claude-haiku-4-5", messages)
    assert sorted(loads) == ["cl100k_base", "o200k_base"]


def _approximation(text: str) -> int:
    """The documented formula for non-OpenAI text, from scratch."""
    cl100k = tiktoken.get_encoding("cl100k_base")
    size = len(text.encode("utf-8"))
    scaled = math.ceil(len(cl100k.encode(text, disallowed_special=())) * 7 / 5)
    return min(size, max(scaled, math.ceil(len(text) / 3)))


@pytest.mark.parametrize("text", [*CORPUS, "user", "é", "日本", "🚀", "a" * 16, "ü" * 17])
def test_approximation_is_exactly_the_documented_formula(text: str) -> None:
    for _ in range(2):  # the second time short texts come from the memo
        assert count_text_tokens("claude-sonnet-4-5", text) == _approximation(text)


def test_short_text_memo_keeps_exact_and_approximate_counts_apart() -> None:
    # gpt-4 is counted exactly with cl100k, Claude approximated from cl100k: one encoding,
    # two different answers for the same short string, in either order.
    cl100k = tiktoken.get_encoding("cl100k_base")
    for text in ["assistant", "hello there", "tool", "x" * _tokens._MEMO_CHARS]:
        for model in ["gpt-4", "claude-haiku-4-5", "gpt-4", "claude-haiku-4-5"]:
            expected = (
                len(cl100k.encode(text, disallowed_special=()))
                if model == "gpt-4"
                else _approximation(text)
            )
            assert count_text_tokens(model, text) == expected, (model, text)


def test_short_text_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tokens, "_memo", {})
    o200k = tiktoken.get_encoding("o200k_base")
    for i in range(_tokens._MEMO_SIZE + 100):
        text = f"w{i}"
        assert count_text_tokens("gpt-4o", text) == len(o200k.encode(text))
    assert 0 < len(_tokens._memo) <= _tokens._MEMO_SIZE
    long = "a long text that is never remembered"
    count_text_tokens("gpt-4o", long)
    assert all(key[2] != long for key in _tokens._memo)


def test_messages_of_any_mapping_type_count_like_dicts() -> None:
    from types import MappingProxyType

    as_dicts: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "Describe this."}]},
        {"role": "assistant", "content": "A cat.", "name": "bot"},
    ]
    as_proxies = [
        MappingProxyType({**message, "content": message["content"]}) for message in as_dicts
    ]
    for model in ["gpt-4o", "claude-sonnet-4-5"]:
        assert count_message_tokens(model, as_proxies) == count_message_tokens(model, as_dicts)
