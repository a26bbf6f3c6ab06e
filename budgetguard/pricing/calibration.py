"""How far above cl100k each provider family's tokens can land: the calibrated text bounds.

There is no local tokenizer for Claude or Gemini, so their text is bounded
from the cl100k count of the same text. Each family's bound is

    tokens <= min(utf8_bytes, max(ceil(cl100k * factor) + per_digit * digits,
                                  ceil(chars * floor)))

with ``factor`` above every published count we could reproduce, by a small
margin (the data points, their sources and the ratios are in
docs/evidence/token-bounds.md). The byte cap holds for byte-level tokenizers:
a token is at least one byte.

- Claude up to 4.6 shares one tokenizer: 106 JSON tool definitions counted
  by Claude 3 Haiku land at 1.18-1.24 x cl100k once the ~7-token message
  wrapper is taken off; English prose at 1.0-1.08. ASCII text gets 1.3.
  Non-ASCII text has no published count; Anthropic says tiktoken
  undercounts it "by much more", so it gets 2.0 (still under the byte cap).
- Claude Opus 4.7 brought a new tokenizer (Opus 4.8, Sonnet 5, Fable 5 and
  Mythos 5 share it): English prose 1.43-1.94 x the 4.6 count, one pangram
  25 tokens where cl100k says 13 (1.92). Every Claude not known to be older
  gets 2.1, and a floor of one token per 2.5 characters.
- Gemini (Gemma's SentencePiece vocabulary) splits every digit into its own
  token, so digits add one token each on top of 1.2 x cl100k (English counts
  land at 1.0-1.08 x cl100k).
- Anything else keeps the old rule, 1.4 x cl100k and one token per 3
  characters, plus one token per digit (Mistral, Qwen and others split them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = [
    "CLAUDE_2026",
    "CLAUDE_FORCED_TOOL_TOKENS",
    "CLAUDE_LEGACY",
    "CLAUDE_THINKING_TOKENS",
    "GEMINI",
    "OTHER",
    "Bound",
    "bound_for",
    "claude_high_resolution",
    "claude_keeps_thinking",
    "family_of",
]


@dataclass(frozen=True, slots=True)
class Bound:
    """A family's text bound, as integer fractions so the result never depends on float rounding.

    ``ascii_factor`` scales the cl100k count of an ASCII string, ``other_factor``
    that of a string with any non-ASCII character; ``floor`` is the least
    number of tokens per character; ``per_digit`` adds tokens per ASCII digit;
    ``tools_prompt`` is what the provider adds to a request that carries tools
    (Anthropic's tool-use system prompt).
    """

    name: str
    ascii_factor: tuple[int, int]
    other_factor: tuple[int, int]
    floor: tuple[int, int]
    per_digit: int = 0
    tools_prompt: int = 20
    request_prompt: int = 0
    """Tokens a host's chat template adds to every request whatever it holds (Llama 3's
    default system header with its dates)."""
    per_tool: int = 0
    """Tokens each tool definition costs above its JSON (Claude renders every tool in a
    wrapper of its own)."""
    per_message: int = 3
    """Tokens each message (and a system prompt) costs above its text and role."""
    reply_primer: int = 3
    """Tokens every request costs above its messages (OpenAI's documented primer)."""


CLAUDE_LEGACY = Bound("claude-legacy", (13, 10), (2, 1), (1, 4), 0, 520, per_tool=20)
"""Claude 2, 3.x and 4.0-4.6. Tool-use system prompt: Anthropic documents 346 tokens for
Claude 4.x and 3.7; recorded calls of Sonnet 4, 4.5, 4.6 and Haiku 4.5 bill up to 152 more.
Each tool: 15 one-line tools on Sonnet 4.5 billed 231 above their JSON and that prompt."""
CLAUDE_2026 = Bound("claude-2026", (21, 10), (21, 10), (2, 5), 0, 730, per_tool=42)
"""Claude Opus 4.7 and later. Tool-use prompt and per-tool wrapper: the legacy figures
scaled by the 2.1 text factor."""
CLAUDE_THINKING_TOKENS = 40
"""Extended thinking adds a few tokens to Claude's prompt: 25 on most recorded calls, on
Anthropic's API and behind gateways (OpenRouter ``reasoning``, Snowflake)."""
CLAUDE_FORCED_TOOL_TOKENS = 80
"""``tool_choice`` any / tool costs more than auto: up to 66 more tokens on recorded calls.
Gateways that give Claude a ``response_format`` force a tool to get it (Databricks,
Snowflake): the tool-use prompt plus this."""
GEMINI = Bound("gemini", (6, 5), (6, 5), (1, 4), 1, 0, per_message=0, reply_primer=0)
"""Gemini bills neither message framing nor a primer (recorded: a one-word prompt billed
1 token), nor a tool prompt above the declarations' JSON (every recorded call with tools
bills 51 or more under it)."""
OTHER = Bound("other", (7, 5), (7, 5), (1, 3), 1, 20, 40)
"""Models behind OpenAI-compatible hosts: 40 tokens of template per request covers the
Llama 3 / MiniMax text-only calls recorded (up to 38 short without it)."""
_OTHER_TOOL_PROMPTS = (  # the tool-calling template of open models, from recorded calls
    ("llama-4", 650),
    ("llama-3", 420),
    ("mistral", 10),  # with the 50-token preamble: 47 the most a recorded call needed
    ("deepseek", 200),
    ("qwen", 200),
)
_OTHER_REQUEST_PROMPTS = (  # the template every request gets, where 40 is not right
    ("deepseek-v4", 80),  # api.deepseek.com's Responses calls: 67-73 above the messages
    ("deepseek", 0),  # DeepSeek chat and R1 (4 hosts): every call under the count
    ("mistral", 0),  # Mistral's own API: every text call under the count
    ("mixtral", 0),
)

_CLAUDE_TOOL_PROMPTS = (  # Anthropic's table, by model prefix (the largest of auto / any)
    ("claude-3-opus", 530),
    ("claude-3-5-haiku", 340),
    ("claude-3-haiku", 340),
    ("claude-3-sonnet", 235),
)
_CLAUDE_VERSION = re.compile(
    r"claude-(?:(?:instant-)?(\d+)(?:-(\d{1,2})(?!\d))?-(?:opus|sonnet|haiku)"
    r"|(?:opus|sonnet|haiku|fable|mythos)-(\d+)(?:-(\d{1,2})(?!\d))?"
    r"|(?:instant-)?(\d+)(?:-(\d{1,2})(?!\d))?)"
)


def _normal(model: str) -> str:
    """``anthropic/claude-opus-4.7`` and ``us.anthropic.claude-3-5-sonnet-v2:0`` -> dashed, bare."""
    return model.rsplit("/", 1)[-1].lower().replace(".", "-")


def family_of(model: str) -> str:
    """``"claude"``, ``"gemini"`` or ``"other"`` (OpenAI models are told by their encoding)."""
    name = _normal(model)
    if "claude" in name:
        return "claude"
    if "gemini" in name or "gemma" in name:
        return "gemini"
    return "other"


def _claude_version(name: str) -> tuple[int, int] | None:
    match = _CLAUDE_VERSION.search(name)
    if match is None:
        return None
    groups = [g for g in match.groups()]
    for major, minor in ((groups[0], groups[1]), (groups[2], groups[3]), (groups[4], groups[5])):
        if major is not None:
            return int(major), int(minor or 0)
    return None  # pragma: no cover - the pattern always fills one pair


def claude_high_resolution(model: str) -> bool:
    """True for Claude Opus 4.7 and later (new tokenizer, 2576 px images), and for any Claude
    whose version cannot be read: the dearer assumption."""
    version = _claude_version(_normal(model))
    return version is None or version >= (4, 7)


def claude_keeps_thinking(model: str) -> bool:
    """Whether earlier turns' thinking blocks stay in the billed context: Claude before
    Opus 4.5 strips them (Anthropic's context-window docs), later ones keep them; a model
    whose version cannot be read keeps them (the dearer assumption)."""
    version = _claude_version(_normal(model))
    return version is None or version >= (4, 5)


def bound_for(model: str) -> Bound:
    """The text bound of a non-OpenAI ``model``."""
    family = family_of(model)
    if family == "gemini":
        return GEMINI
    if family != "claude":
        name = _normal(model)
        bound = OTHER
        for prefix, tokens in _OTHER_TOOL_PROMPTS:
            if prefix in name:
                bound = replace(bound, tools_prompt=tokens)
                break
        for prefix, tokens in _OTHER_REQUEST_PROMPTS:
            if prefix in name:
                bound = replace(bound, request_prompt=tokens)
                break
        return bound
    name = _normal(model)
    if claude_high_resolution(name):
        return CLAUDE_2026
    for prefix, tokens in _CLAUDE_TOOL_PROMPTS:
        if prefix in name:
            return replace(CLAUDE_LEGACY, tools_prompt=tokens)
    return CLAUDE_LEGACY
