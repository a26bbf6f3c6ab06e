"""Token counting: exact for OpenAI, bounded for everyone else, never a crash offline."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from budgetguard._core.errors import ConfigurationError
from budgetguard.pricing import tokens as _tokens
from budgetguard.pricing.book import PriceBook
from budgetguard.pricing.memo import BoundedMemo
from budgetguard.pricing.tokens import (
    InputEstimate,
    count_message_tokens,
    count_text_tokens,
    estimate_input,
    estimate_tokens,
)
from budgetguard.pricing.tool_text import openai_tool_text

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
    "model",
    ["claude-sonnet-4-5", "claude-3-5-sonnet-20241022", "claude-opus-4-7", "gemini-2.5-pro"],
)
def test_non_openai_approximation_is_bounded(model: str) -> None:
    cl100k = tiktoken.get_encoding("cl100k_base")
    o200k = tiktoken.get_encoding("o200k_base")
    for text in CORPUS:
        approx = count_text_tokens(model, text)
        size = len(text.encode("utf-8"))
        assert approx <= size, text
        assert approx >= len(cl100k.encode(text, disallowed_special=())), text
        assert approx >= len(o200k.encode(text, disallowed_special=())), text
        assert approx == bounded(model, text)


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
    # OpenAI reads a function tool as a TypeScript declaration, shorter than its JSON.
    declaration = openai_tool_text(tools[0])
    assert declaration is not None
    added = with_tools - without
    assert len(o200k.encode(declaration)) <= added < len(o200k.encode(json.dumps(tools[0])))


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
    for memo in ["_texts", "_messages", "_objects"]:  # counts remembered need no encoding
        monkeypatch.setattr(_tokens, memo, BoundedMemo(entries=100, chars=10_000))
    monkeypatch.setattr(tiktoken, "get_encoding", counting)
    messages = [{"role": "user", "content": "hello"}]
    for _ in range(50):
        count_message_tokens("gpt-4o", messages)
        count_message_tokens("claude-haiku-4-5", messages)
    assert sorted(loads) == ["cl100k_base", "o200k_base"]


FACTORS = {  # family: (ASCII factor, non-ASCII factor, tokens per char floor, per digit)
    "claude-legacy": (1.3, 2.0, 1 / 4, 0),
    "claude-2026": (2.1, 2.1, 2 / 5, 0),
    "gemini": (1.2, 1.2, 1 / 4, 1),
    "other": (1.4, 1.4, 1 / 3, 1),
}
FAMILY_OF = {
    "claude-sonnet-4-5": "claude-legacy",
    "claude-3-5-sonnet-20241022": "claude-legacy",
    "claude-haiku-4-5": "claude-legacy",
    "anthropic/claude-3.7-sonnet": "claude-legacy",
    "claude-opus-4-6": "claude-legacy",
    "claude-opus-4-7": "claude-2026",
    "anthropic/claude-opus-4.8": "claude-2026",
    "claude-sonnet-5": "claude-2026",
    "claude-fable-5": "claude-2026",
    "claude-next": "claude-2026",  # a version we cannot read: the dearer bound
    "gemini-2.5-pro": "gemini",
    "gemini-3-pro-preview": "gemini",
    "mistral-large-latest": "other",
}


def bounded(model: str, text: str) -> int:
    """The documented bound for non-OpenAI text, from scratch (floats are exact enough here)."""
    ascii_factor, other_factor, floor, per_digit = FACTORS[FAMILY_OF[model]]
    cl100k = len(tiktoken.get_encoding("cl100k_base").encode(text, disallowed_special=()))
    factor = ascii_factor if text.isascii() else other_factor
    scaled = math.ceil(round(cl100k * factor, 6)) + per_digit * sum(c in "0123456789" for c in text)
    return min(len(text.encode("utf-8")), max(scaled, math.ceil(round(len(text) * floor, 6))))


@pytest.mark.parametrize("model", sorted(FAMILY_OF))
@pytest.mark.parametrize("text", [*CORPUS, "user", "é", "日本", "🚀", "a" * 16, "ü" * 17, "x"])
def test_approximation_is_exactly_the_documented_formula(model: str, text: str) -> None:
    for _ in range(2):  # the second time from the memo
        assert count_text_tokens(model, text) == bounded(model, text)


def test_memo_keeps_exact_and_approximate_counts_apart() -> None:
    # gpt-4 is counted exactly with cl100k, Claude and Gemini bounded from cl100k: one
    # encoding, three answers for the same string, in any order.
    cl100k = tiktoken.get_encoding("cl100k_base")
    for text in ["assistant", "hello there 2024", "tool", "x" * 40]:
        for model in ["gpt-4", "claude-haiku-4-5", "gemini-2.5-pro", "gpt-4", "claude-opus-4-7"]:
            expected = (
                len(cl100k.encode(text, disallowed_special=()))
                if model == "gpt-4"
                else bounded(model, text)
            )
            assert count_text_tokens(model, text) == expected, (model, text)


def test_memos_are_bounded_in_entries_and_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    memo: BoundedMemo[int] = BoundedMemo(entries=50, chars=4_000)
    monkeypatch.setattr(_tokens, "_texts", memo)
    o200k = tiktoken.get_encoding("o200k_base")
    for i in range(500):
        text = f"w{i} " * (i % 7 + 1)
        assert count_text_tokens("gpt-4o", text) == len(o200k.encode(text))
        assert len(memo) <= 50 and memo.chars <= 4_000
    huge = "a long text " * 1000  # over a quarter of the budget: counted, never kept
    assert count_text_tokens("gpt-4o", huge) == len(o200k.encode(huge))
    assert memo.get(("o200k_base", huge)) is None


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


# -- the research data points (sources in docs/pricing.md) ---------------------

PANGRAM = "The quick brown fox jumps over the lazy dog every morning at sunrise"
DIGITS = ["1234567890"[:n] for n in range(1, 11)]
TEXT_POINTS = [  # (model, text, real tokens net of the message wrapper)
    ("claude-opus-4-6", PANGRAM, 14),  # count_tokens, Opus 4.6 (muninn.austegard.com)
    ("claude-opus-4-7", PANGRAM, 25),  # the same sentence on Opus 4.7's tokenizer
    *(("claude-opus-4-6", d, (len(d) + 2) // 3) for d in DIGITS),  # digits in threes
    *(("claude-opus-4-7", d, (len(d) + 2) // 3) for d in DIGITS),
    ("gemini-1.5-flash", "Hello World!", 3),  # Vertex AI local tokenizer (L. Picard)
    ("gemini-2.5-flash", "The quick brown fox jumps over the lazy dog near the riverbank.", 14),
    *(("gemini-2.5-flash", d, len(d)) for d in DIGITS),  # Gemma's vocabulary splits digits
]
# Claude 3 Haiku count_tokens of 106 MCP tool definitions sent as one user message
# (wrapper included), beside their cl100k count (chonkometer's validation report).
TOOL_DEFINITIONS = [
    (444, 541),
    (433, 523),
    (371, 458),
    (217, 270),
    (298, 363),
    (321, 392),
    (429, 521),
    (482, 583),
    (488, 592),
    (1183, 1400),
    (257, 317),
    (335, 396),
    (307, 387),
    (282, 337),
    (239, 297),
    (354, 434),
    (233, 284),
    (225, 275),
    (280, 343),
    (278, 342),
    (247, 299),
    (304, 371),
    (221, 272),
    (190, 235),
    (109, 139),
    (182, 223),
    (73, 94),
    (136, 167),
    (156, 195),
    (276, 338),
    (136, 171),
    (71, 93),
    (295, 358),
    (78, 102),
    (74, 96),
    (151, 186),
    (89, 111),
    (30, 42),
    (91, 113),
    (101, 121),
    (100, 122),
    (50, 68),
    (50, 68),
    (49, 68),
    (58, 80),
    (50, 68),
    (50, 68),
    (50, 68),
    (61, 78),
    (64, 84),
    (285, 348),
    (169, 206),
    (176, 218),
    (193, 237),
    (301, 371),
    (217, 270),
    (316, 381),
    (168, 205),
    (198, 242),
    (159, 200),
    (280, 352),
    (262, 327),
    (151, 194),
    (172, 218),
    (260, 317),
    (204, 258),
    (135, 173),
    (162, 204),
    (376, 456),
    (591, 722),
    (261, 325),
    (166, 209),
    (168, 211),
    (201, 250),
    (164, 207),
    (163, 206),
    (184, 219),
    (214, 253),
    (83, 106),
    (108, 136),
    (113, 141),
    (83, 107),
    (82, 104),
    (29, 42),
    (94, 122),
    (163, 206),
    (179, 225),
    (166, 207),
    (221, 269),
    (157, 196),
    (350, 428),
    (117, 145),
    (154, 192),
    (281, 339),
    (136, 171),
    (99, 127),
    (155, 197),
    (199, 241),
    (383, 449),
    (145, 183),
    (319, 396),
    (257, 314),
    (174, 219),
    (232, 284),
    (198, 247),
    (194, 242),
]


@pytest.mark.parametrize(("model", "text", "real"), TEXT_POINTS)
def test_bounds_are_never_under_a_published_count(model: str, text: str, real: int) -> None:
    assert count_text_tokens(model, text) >= real


def test_claude_bound_covers_every_measured_tool_definition() -> None:
    assert len(TOOL_DEFINITIONS) == 106
    envelope = count_message_tokens("claude-3-haiku-20240307", [{"role": "user", "content": ""}])
    for cl100k, real in TOOL_DEFINITIONS:
        assert -(-cl100k * 13 // 10) + envelope >= real, (cl100k, real)
    worst = max((real - 7) / cl100k for cl100k, real in TOOL_DEFINITIONS)
    assert 1.2 < worst < 1.3  # the legacy factor sits just above the worst ratio


def test_message_wrappers_are_never_under_the_measured_ones() -> None:
    # Anthropic's count_tokens example: system "You are a scientist", "Hello, Claude" -> 14.
    hello = [{"role": "user", "content": "Hello, Claude"}]
    for model in ["claude-3-5-sonnet-20241022", "claude-sonnet-4-5", "claude-opus-4-7"]:
        assert count_message_tokens(model, hello, system="You are a scientist") >= 14
    # Opus 4.8's tokenizer: a one-character message counts 7.
    assert count_message_tokens("claude-opus-4-8", [{"role": "user", "content": "x"}]) >= 7


def test_claude_requests_with_tools_pay_the_tool_use_system_prompt() -> None:
    tools = [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
    messages = [{"role": "user", "content": "hi"}]
    for model, prompt in [
        ("claude-3-opus-20240229", 530),
        ("claude-3-haiku-20240307", 340),
        ("claude-sonnet-4-5", 346),
        ("claude-opus-4-7", 346),
    ]:
        extra = count_message_tokens(model, messages, tools=tools) - count_message_tokens(
            model, messages
        )
        assert extra >= prompt + count_text_tokens("gpt-4", json.dumps(tools[0])), model


# -- Anthropic prompt caching: the marked prefix -------------------------------

LONG = "Prompt caching saves money on repeated prefixes. " * 40


def marked(ttl: str | None = None) -> dict[str, str]:
    return {"type": "ephemeral"} if ttl is None else {"type": "ephemeral", "ttl": ttl}


def test_no_marker_no_cache_write() -> None:
    counted = estimate_input(
        "claude-sonnet-4-5", system=LONG, messages=[{"role": "user", "content": LONG}]
    )
    assert counted == InputEstimate(counted.tokens) and counted.tokens > 0


def test_the_prefix_runs_tools_then_system_then_messages() -> None:
    model = "claude-sonnet-4-5"
    tools = [
        {"name": "a", "description": LONG, "input_schema": {"type": "object"}},
        {"name": "b", "description": "B", "input_schema": {}, "cache_control": marked()},
    ]
    system = [
        {"type": "text", "text": LONG, "cache_control": marked()},
        {"type": "text", "text": "tail"},
    ]
    turn = {"role": "user", "content": [{"type": "text", "text": LONG, "cache_control": marked()}]}
    messages = [turn, {"role": "assistant", "content": "ok"}]
    only_tools = estimate_input(model, tools=tools)
    tools_system = estimate_input(model, tools=tools, system=system)
    everything = estimate_input(model, tools=tools, system=system, messages=messages)
    # Each write is its prefix: everything before and including the last marked block.
    assert only_tools.cache_write_tokens == only_tools.tokens - 3  # all but the reply primer
    unmarked_tools = [{k: v for k, v in t.items() if k != "cache_control"} for t in tools]
    assert estimate_input(model, tools=unmarked_tools).tokens == only_tools.tokens
    tail = count_text_tokens(model, "tail")
    assert tools_system.cache_write_tokens == tools_system.tokens - 3 - tail
    up_to_turn = estimate_input(model, tools=tools, system=system, messages=[turn])
    assert everything.cache_write_tokens == up_to_turn.tokens - 3
    assert everything.cache_write_1h_tokens == 0
    assert everything.cache_write_tokens < everything.tokens


def test_one_hour_markers_write_their_prefix_at_the_one_hour_rate() -> None:
    model = "claude-opus-4-7"
    tools = [{"name": "a", "description": LONG, "input_schema": {}, "cache_control": marked("1h")}]
    system = [{"type": "text", "text": LONG, "cache_control": marked("5m")}]
    messages = [{"role": "user", "content": LONG, "cache_control": marked()}]
    counted = estimate_input(model, tools=tools, system=system, messages=messages)
    tools_only = estimate_input(model, tools=tools)
    # Anthropic's mixed-TTL billing with no cache hit: 1h writes up to the last 1h marker,
    # 5m writes from there to the last marker (a message-level marker here).
    assert counted.cache_write_1h_tokens == tools_only.tokens - 3
    assert counted.cache_write_tokens == counted.tokens - 3
    # A single 1h marker on the last message makes the whole prefix a 1h write.
    late = estimate_input(
        model, messages=[{"role": "user", "content": LONG, "cache_control": marked("1h")}]
    )
    assert late.cache_write_tokens == late.cache_write_1h_tokens == late.tokens - 3
    # An unknown TTL is taken as the dearer one.
    odd = estimate_input(
        model, system=[{"type": "text", "text": LONG, "cache_control": marked("2h")}]
    )
    assert odd.cache_write_1h_tokens == odd.cache_write_tokens > 0


def test_markers_in_openai_parts_and_tool_results_and_automatic_caching() -> None:
    model = "anthropic/claude-3.7-sonnet"  # OpenAI-format messages sent through OpenRouter
    parts = [
        {"role": "system", "content": [{"type": "text", "text": LONG, "cache_control": marked()}]},
        {"role": "user", "content": "question?"},
    ]
    counted = estimate_input(model, messages=parts)
    first = estimate_input(model, messages=parts[:1])
    assert counted.cache_write_tokens == first.tokens - 3
    result = {
        "type": "tool_result",
        "tool_use_id": "t",
        "content": [{"type": "text", "text": LONG, "cache_control": marked("1h")}],
    }
    nested = estimate_input(model, messages=[{"role": "user", "content": [result]}])
    assert nested.cache_write_1h_tokens == nested.cache_write_tokens == nested.tokens - 3
    automatic = estimate_input(model, messages=parts, cache_control=marked("1h"))
    assert automatic.cache_write_1h_tokens == automatic.tokens - 3
    assert estimate_input(model, prompt=LONG).cache_write_tokens == 0


# -- memo: keyed by content, safe under mutation and threads -------------------


def history(n: int) -> list[dict[str, Any]]:
    return [
        {"role": "user" if i % 2 else "assistant", "content": f"turn {i}: " + LONG[: 50 + i]}
        for i in range(n)
    ]


def test_mutated_messages_are_counted_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    for model in ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro"]:
        messages = history(20)
        count_message_tokens(model, messages)
        messages[3]["content"] = "now a very different and much longer message " * 20
        messages[5]["content"] = [{"type": "text", "text": "parts now"}]
        messages[7]["name"] = "bob"
        messages[9]["content"] = [{"type": "tool_use", "id": "t", "name": "f", "input": {"n": 1}}]
        count_message_tokens(model, messages)
        messages[9]["content"][0]["input"]["n"] = 1.0  # == 1 in Python, not the same text
        messages.append({"role": "user", "content": "one more"})
        remembered = count_message_tokens(model, messages)
        for memo in ["_texts", "_messages", "_objects"]:  # nothing remembered: a fresh count
            monkeypatch.setattr(_tokens, memo, BoundedMemo(entries=1, chars=0))
        assert remembered == count_message_tokens(model, messages), model
        monkeypatch.undo()


def test_equal_content_is_counted_once_whatever_the_object() -> None:
    model = "claude-opus-4-7"
    first = estimate_input(model, messages=history(30))
    again = estimate_input(model, messages=[dict(m) for m in history(30)])
    assert first == again
    # A message with an int or a bool where a string was: a different key, a different count.
    assert count_message_tokens(model, [{"role": "user", "content": {"n": 1}}]) != (
        count_message_tokens(model, [{"role": "user", "content": {"n": "one thousand"}}])
    )


def test_counts_from_many_threads_agree() -> None:
    models = ["gpt-4o", "claude-sonnet-4-5", "claude-opus-4-7", "gemini-2.5-pro"]
    expected = {m: [count_message_tokens(m, history(n)) for n in range(1, 40)] for m in models}
    for memo in [_tokens._texts, _tokens._messages, _tokens._objects]:
        memo.clear()
    errors: list[str] = []

    def work(offset: int) -> None:
        for round_ in range(3):
            for i, model in enumerate(models):
                for n in range(1, 40):
                    if (n + i + offset + round_) % 3 == 0:
                        got = count_message_tokens(model, history(n))
                        if got != expected[model][n - 1]:
                            errors.append(f"{model} {n}: {got}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


# -- never under: the exact OpenAI path and the bounds, on arbitrary text ------

texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["user", "assistant", "system"]), texts), max_size=6))
def test_openai_counts_equal_the_cookbook_on_arbitrary_chats(turns: list[tuple[str, str]]) -> None:
    messages = [{"role": role, "content": text} for role, text in turns]
    for model in ["gpt-4o", "gpt-4"]:
        assert count_message_tokens(model, messages) == cookbook_count(model, messages)


@settings(max_examples=200, deadline=None)
@given(texts)
def test_bounds_never_fall_under_cl100k_nor_over_bytes(text: str) -> None:
    cl100k = len(tiktoken.get_encoding("cl100k_base").encode(text, disallowed_special=()))
    for model in ["claude-sonnet-4-5", "claude-opus-4-7", "gemini-2.5-pro", "mistral-large"]:
        counted = count_text_tokens(model, text)
        assert min(cl100k, len(text.encode("utf-8"))) <= counted <= len(text.encode("utf-8"))


def test_estimate_tokens_input_is_estimate_input() -> None:
    rates = PriceBook().rates("claude-sonnet-4-5")
    messages = history(5)
    counted = estimate_input("claude-sonnet-4-5", messages=messages, system=LONG, rates=rates)
    assert estimate_tokens(
        "claude-sonnet-4-5", messages=messages, system=LONG, max_tokens=10, rates=rates
    ) == (counted.tokens, 10)


def test_images_in_messages_use_their_size() -> None:
    from tests.test_images import data_url, png

    small = {"type": "image_url", "image_url": {"url": data_url(png(512, 512))}}
    text = {"type": "text", "text": "What is this?"}
    with_image = [{"role": "user", "content": [text, small]}]
    without = [{"role": "user", "content": [text]}]
    assert (
        count_message_tokens("gpt-4o", with_image) - count_message_tokens("gpt-4o", without) == 255
    )
    gemini = [
        {
            "role": "user",
            "parts": [
                {"text": "What?"},
                {"inline_data": {"mime_type": "image/png", "data": png(300, 300)}},
            ],
        }
    ]
    assert (
        count_message_tokens("gemini-2.5-flash", gemini)
        - count_message_tokens("gemini-2.5-flash", [{"role": "user", "parts": [{"text": "What?"}]}])
        == 258
    )
