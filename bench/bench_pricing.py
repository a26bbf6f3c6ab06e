"""Pricing and estimation speed against the peers, same inputs, same run.

    /tmp/venv/bin/python bench/bench_pricing.py [--quick] [--json] [--profile]

(1) Per-call cost of a usage: ours is ``Admission.price(usage)``, the call the
    engine makes when it settles (``PriceBook.rates(model).cost(usage)``, rates
    cached); beside it our worst case (``rates.worst_case``, what a call
    reserves). Peers: ``genai_prices.calc_price``, ``tokencost`` (one
    ``calculate_cost_by_tokens`` per token kind) and ``litellm.completion_cost``
    of a prebuilt response. Every figure is checked: ours must equal
    ``ceil(genai-prices * 1e9)`` exactly; the others are compared within 0.01%.
(2) Input-token counting of a chat (short, and ~4k tokens): ours
    (``count_message_tokens``, ``estimate_tokens`` and the engine's whole
    worst-case estimate) against raw ``tiktoken`` ``encode`` of the
    concatenated text, ``tokencost.count_message_tokens`` and
    ``litellm.token_counter``.

Every contender runs in every round (15, or 5 with ``--quick``): inputs in a
shuffled order, and for each input all its contenders back to back, also
shuffled. Times are the median over rounds; ratios the median of per-round
ratios, so a noisy moment on a shared machine hits both sides of a ratio.
Inputs are built once, outside the timed loop, for every library alike.
``--profile`` prints a pyinstrument profile of our cost and estimate paths
instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import statistics
import sys
import time
import timeit
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported
_SHARED_TIKTOKEN = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
if _SHARED_TIKTOKEN.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_SHARED_TIKTOKEN))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import genai_prices  # noqa: E402
import tiktoken  # noqa: E402
from _report import header, machine, table  # noqa: E402

from budgetguard._core.attribution import Attribution  # noqa: E402
from budgetguard._core.records import LLMRequest  # noqa: E402
from budgetguard._core.usage import Usage, UsageDetails  # noqa: E402
from budgetguard._engine.admission import Admission  # noqa: E402
from budgetguard._engine.config import Settings  # noqa: E402
from budgetguard._engine.flow import worst_case as _worst_case  # noqa: E402
from budgetguard.pricing.book import PriceBook  # noqa: E402
from budgetguard.pricing.tokens import count_message_tokens, estimate_tokens  # noqa: E402

try:
    import tokencost
except ImportError:  # pragma: no cover - optional peer
    tokencost = None
try:
    import litellm
    from litellm.types.utils import (
        CacheCreationTokenDetails,
        CompletionTokensDetailsWrapper,
        ModelResponse,
        PromptTokensDetailsWrapper,
    )
    from litellm.types.utils import Usage as LiteUsage
except ImportError:  # pragma: no cover - optional peer
    litellm = None

NANOS = 10**9
TOLERANCE = Decimal("0.0001")  # peers in float or Decimal: agree within 0.01%

# -- inputs ---------------------------------------------------------------------

COST_CASES: list[tuple[str, str, Usage]] = [
    ("plain", "gpt-4o", Usage(input_tokens=1_200, output_tokens=300)),
    (
        "cache read",
        "gpt-4o-mini",
        Usage(input_tokens=10_000, output_tokens=500, cache_read_tokens=8_192),
    ),
    (
        "reasoning + cache read",
        "o3",
        Usage(
            input_tokens=2_000, output_tokens=6_000, cache_read_tokens=1_024, reasoning_tokens=5_000
        ),
    ),
    (
        "cache read + write",
        "claude-sonnet-4-5",
        Usage(
            input_tokens=12_000,
            output_tokens=800,
            cache_read_tokens=8_000,
            cache_write_tokens=3_000,
        ),
    ),
    (
        "cache read + 1h write",
        "claude-sonnet-4-5",
        Usage(
            input_tokens=12_000,
            output_tokens=800,
            cache_read_tokens=8_000,
            cache_write_tokens=3_000,
            cache_write_1h_tokens=3_000,
        ),
    ),
    (
        "cache read + write",
        "claude-sonnet-4-20250514",
        Usage(
            input_tokens=12_000,
            output_tokens=800,
            cache_read_tokens=8_000,
            cache_write_tokens=3_000,
        ),
    ),
    (
        "cache read",
        "gemini-2.5-pro",
        Usage(input_tokens=20_000, output_tokens=4_000, cache_read_tokens=10_000),
    ),
    (
        "cache read, >200k tier",
        "gemini-2.5-pro",
        Usage(input_tokens=250_000, output_tokens=4_000, cache_read_tokens=100_000),
    ),
    (
        "Gemini: thoughts + cache read",
        "gemini-2.5-flash",
        Usage(
            input_tokens=6_000, output_tokens=1_500, cache_read_tokens=4_096, reasoning_tokens=900
        ),
    ),
    (
        "Gemini: audio + image + cache (details)",
        "gemini-2.5-flash",
        Usage(
            input_tokens=6_000,
            output_tokens=1_500,
            cache_read_tokens=4_096,
            reasoning_tokens=900,
            details=UsageDetails(
                input_audio_tokens=1_200,
                input_image_tokens=516,
                cache_audio_read_tokens=600,
                web_searches=1,
            ),
        ),
    ),
    (
        "web searches (details)",
        "claude-sonnet-4-5",
        Usage(input_tokens=10_000, output_tokens=1_300, details=UsageDetails(web_searches=3)),
    ),
]

_PROSE = (
    "The quarterly report shows revenue growth of 12% across all regions, driven mostly by "
    "the new subscription tier. Churn fell to 2.1%, while support tickets per customer rose "
    "slightly after the migration. Please summarise the risks, list the three largest cost "
    "drivers, and propose next steps for the platform team, with owners and dates. "
    "def total(items):\n    return sum(item.price * item.qty for item in items)\n"
    '{"region": "EMEA", "revenue": 1830000, "currency": "EUR", "growth": 0.12}\n'
)


def _long_text(tokens: int, salt: int) -> str:
    """Deterministic varied text of about ``tokens`` o200k tokens."""
    rng = random.Random(salt)
    words = _PROSE.split(" ")
    out: list[str] = []
    while len(out) < tokens * 3 // 4:
        out.extend(words[rng.randrange(len(words)) :][:12])
        out.append(str(rng.randrange(10_000)))
    return " ".join(out)


SHORT_CHAT: list[dict[str, str]] = [
    {"role": "system", "content": "You are a helpful assistant that answers briefly."},
    {"role": "user", "content": "What is the capital of France? And why is it famous?"},
    {"role": "assistant", "content": "Paris. It is famous for the Eiffel Tower and the Louvre."},
    {"role": "user", "content": "Tell me more about the Louvre, please."},
]
LONG_CHAT: list[dict[str, str]] = [
    {"role": "system", "content": "You are a careful analyst. " + _long_text(230, 1)},
    {"role": "user", "content": _long_text(1_150, 2)},
    {"role": "assistant", "content": _long_text(540, 3)},
    {"role": "user", "content": _long_text(1_150, 4)},
]
CHATS = [("short", SHORT_CHAT), ("~4k tokens", LONG_CHAT)]
TOKEN_MODELS = ["gpt-4o", "claude-sonnet-4-5"]
MAX_TOKENS = 1_000

# -- timing ----------------------------------------------------------------------


@dataclass
class Bench:
    """One contender on one input: a timeit statement, calibrated, timed every round."""

    name: str
    stmt: str
    namespace: dict[str, Any]
    timer: timeit.Timer = field(init=False)
    number: int = 1
    samples: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.timer = timeit.Timer(self.stmt, globals=self.namespace)

    def calibrate(self, target_s: float) -> None:
        self.timer.timeit(3)  # warm caches (ours: rates resolved; peers: lazy loads)
        number, elapsed = 1, 0.0
        while True:
            elapsed = self.timer.timeit(number)
            if elapsed >= target_s / 10:
                break
            number *= 10
        self.number = max(1, round(number * target_s / max(elapsed, 1e-9)))

    def run(self) -> None:
        self.samples.append(self.timer.timeit(self.number) / self.number * 1e6)

    @property
    def us(self) -> float:
        return statistics.median(self.samples)

    def ratio(self, reference: Bench) -> float:
        """Median over rounds of this / reference, each pair timed back to back."""
        return statistics.median(
            mine / theirs for mine, theirs in zip(self.samples, reference.samples, strict=True)
        )


def run_rounds(groups: Sequence[Sequence[Bench]], rounds: int, target_s: float) -> None:
    """Every round runs every group (one input) in a shuffled order, and within a group
    every contender back to back, also shuffled: ratios pair samples taken moments apart."""
    for group in groups:
        for bench in group:
            bench.calibrate(target_s)
    order = [list(group) for group in groups]
    rng = random.Random(6)
    for _ in range(rounds):
        rng.shuffle(order)
        for group in order:
            rng.shuffle(group)
            for bench in group:
                bench.run()


# -- contenders ------------------------------------------------------------------


def _genai_usage(usage: Usage) -> genai_prices.Usage:
    details = usage.details
    extra = {} if details is None else {f.name: getattr(details, f.name) for f in fields(details)}
    return genai_prices.Usage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        output_tokens=usage.output_tokens,
        output_reasoning_tokens=usage.reasoning_tokens,
        **extra,
    )


def _litellm_response(model: str, usage: Usage) -> Any:
    """A response as litellm builds it from the provider's usage (cached tokens included)."""
    return ModelResponse(
        model=model,
        usage=LiteUsage(
            prompt_tokens=usage.input_tokens,
            completion_tokens=usage.output_tokens,
            total_tokens=usage.input_tokens + usage.output_tokens,
            prompt_tokens_details=PromptTokensDetailsWrapper(
                cached_tokens=usage.cache_read_tokens,
                cache_creation_tokens=usage.cache_write_tokens or None,
                cache_creation_token_details=CacheCreationTokenDetails(
                    ephemeral_5m_input_tokens=usage.cache_write_tokens
                    - usage.cache_write_1h_tokens,
                    ephemeral_1h_input_tokens=usage.cache_write_1h_tokens,
                )
                if usage.cache_write_tokens
                else None,
            ),
            completion_tokens_details=CompletionTokensDetailsWrapper(
                reasoning_tokens=usage.reasoning_tokens
            ),
            cache_read_input_tokens=usage.cache_read_tokens or None,
            cache_creation_input_tokens=usage.cache_write_tokens or None,
        ),
    )


def _tokencost_cost(model: str, usage: Usage) -> Decimal:
    """tokencost has input, cached (read) and output token types: cache writes go in as input."""
    assert tokencost is not None
    by_tokens = tokencost.calculate_cost_by_tokens
    cost = by_tokens(usage.input_tokens - usage.cache_read_tokens, model, "input")
    if usage.cache_read_tokens:
        cost += by_tokens(usage.cache_read_tokens, model, "cached")
    return cost + by_tokens(usage.output_tokens, model, "output")


@dataclass
class Peer:
    """A peer's figure for one input: a bench when it can compute it, else why not."""

    bench: Bench | None
    value: Decimal | int | None
    note: str = ""


def _peer(name: str, stmt: str, namespace: dict[str, Any], compute: Callable[[], Any]) -> Peer:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = compute()
    except KeyError:
        return Peer(None, None, "unknown model (KeyError)")
    except Exception as error:
        return Peer(None, None, f"{type(error).__name__}: {str(error).splitlines()[0][:60]}")
    return Peer(Bench(name, stmt, namespace), value)


@dataclass
class CostRow:
    label: str
    model: str
    usage: Usage
    ours: Bench
    worst: Bench
    ours_nanos: int
    peers: dict[str, Peer]


def cost_rows() -> list[CostRow]:
    book = PriceBook()
    settings = Settings(prices=book)
    rows: list[CostRow] = []
    for label, model, usage in COST_CASES:
        admission = Admission(
            requested_model=model,
            model=model,
            estimate=0,
            reservation=None,
            frames=(),
            attribution=Attribution(),
            settings=settings,
        )
        ns: dict[str, Any] = {
            "admission": admission,
            "book": book,
            "model": model,
            "usage": usage,
            "n_in": usage.input_tokens,
            "n_out": usage.output_tokens,
        }
        ours = Bench("ours", "admission.price(usage)", ns)
        worst = Bench("worst_case", "book.rates(model).worst_case(n_in, n_out)", ns)
        peers: dict[str, Peer] = {}
        gusage = _genai_usage(usage)
        gns = {"calc_price": genai_prices.calc_price, "gusage": gusage, "model": model}
        peers["genai-prices"] = _peer(
            "genai-prices",
            "calc_price(gusage, model)",
            gns,
            lambda gusage=gusage, model=model: (
                genai_prices.calc_price(gusage, model).total_price * NANOS
            ),
        )
        if tokencost is not None:
            tns = {"cost": _tokencost_cost, "model": model, "usage": usage}
            peers["tokencost"] = _peer(
                "tokencost",
                "cost(model, usage)",
                tns,
                lambda model=model, usage=usage: _tokencost_cost(model, usage) * NANOS,
            )
        else:
            peers["tokencost"] = Peer(None, None, "not installed")
        if litellm is not None:
            response = _litellm_response(model, usage)
            lns = {"completion_cost": litellm.completion_cost, "response": response}
            peers["litellm"] = _peer(
                "litellm",
                "completion_cost(completion_response=response)",
                lns,
                lambda response=response: (
                    Decimal(repr(litellm.completion_cost(completion_response=response))) * NANOS
                ),
            )
        else:
            peers["litellm"] = Peer(None, None, "not installed")
        rows.append(CostRow(label, model, usage, ours, worst, admission.price(usage), peers))
    return rows


def _agreement(name: str, ours: int, peer: Peer) -> str:
    if peer.value is None:
        return f"{name}: n/a"
    theirs = Decimal(peer.value)
    if name == "genai-prices":
        same = math.ceil(theirs) == ours
        return f"{name} =" if same else f"{name} ✗ ({math.ceil(theirs)} vs {ours} nano$)"
    if theirs == ours:
        return f"{name} ="
    if ours == 0 or theirs == 0:
        return f"{name} ✗ ${theirs / NANOS:.6f}" if theirs else f"{name} ✗ $0"
    deviation = (theirs - ours) / ours
    if abs(deviation) <= TOLERANCE:
        return f"{name} ≈"
    return f"{name} ✗ {deviation:+.1%}"


@dataclass
class TokenRow:
    model: str
    chat: str
    raw: Bench
    raw_tokens: int
    ours: dict[str, Bench]
    ours_tokens: int
    peers: dict[str, Peer]


def token_rows() -> list[TokenRow]:
    book = PriceBook()
    settings = Settings(prices=book)
    rows: list[TokenRow] = []
    for model in TOKEN_MODELS:
        enc_name = "o200k_base" if model.startswith("gpt") else "cl100k_base"
        encoding = tiktoken.get_encoding(enc_name)
        rates = book.rates(model)
        for chat_name, chat in CHATS:
            text = "".join(message["content"] for message in chat)
            request = LLMRequest(model=model, messages=chat, max_tokens=MAX_TOKENS)
            ns: dict[str, Any] = {
                "encoding": encoding,
                "text": text,
                "model": model,
                "messages": chat,
                "count_message_tokens": count_message_tokens,
                "estimate_tokens": estimate_tokens,
                "rates": rates,
                "max_tokens": MAX_TOKENS,
                "worst_case": _worst_case,
                "settings": settings,
                "request": request,
            }
            raw = Bench(f"raw tiktoken {enc_name}", "encoding.encode(text)", ns)
            ours = {
                "count_message_tokens": Bench("count", "count_message_tokens(model, messages)", ns),
                "estimate_tokens": Bench(
                    "estimate",
                    "estimate_tokens(model, messages=messages, max_tokens=max_tokens, rates=rates)",
                    ns,
                ),
                "engine worst case": Bench("engine", "worst_case(settings, request, model)", ns),
            }
            peers: dict[str, Peer] = {}
            if tokencost is not None:
                tns = {"count": tokencost.count_message_tokens, "messages": chat, "model": model}
                if model.startswith("claude"):
                    # tokencost counts Claude through Anthropic's API: key and network.
                    peers["tokencost"] = Peer(None, None, "calls Anthropic's API")
                else:
                    peers["tokencost"] = _peer(
                        "tokencost",
                        "count(messages, model)",
                        tns,
                        lambda chat=chat, model=model: tokencost.count_message_tokens(chat, model),
                    )
            else:
                peers["tokencost"] = Peer(None, None, "not installed")
            if litellm is not None:
                lns = {"counter": litellm.token_counter, "messages": chat, "model": model}
                peers["litellm"] = _peer(
                    "litellm",
                    "counter(model=model, messages=messages)",
                    lns,
                    lambda chat=chat, model=model: litellm.token_counter(
                        model=model, messages=chat
                    ),
                )
            else:
                peers["litellm"] = Peer(None, None, "not installed")
            rows.append(
                TokenRow(
                    model,
                    chat_name,
                    raw,
                    len(encoding.encode(text)),
                    ours,
                    count_message_tokens(model, chat),
                    peers,
                )
            )
    return rows


# -- output ----------------------------------------------------------------------


def _us(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _cell(bench: Bench, reference: Bench) -> str:
    ratio = bench.ratio(reference)
    return f"{_us(bench.us)} ({ratio:.0f}x)" if ratio >= 10 else f"{_us(bench.us)} ({ratio:.1f}x)"


def _peer_cell(peer: Peer, reference: Bench) -> str:
    return peer.note if peer.bench is None else _cell(peer.bench, reference)


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for name in ("budgetguard", "genai-prices", "tiktoken", "tokencost", "litellm"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def markdown(cost: list[CostRow], tokens: list[TokenRow], rounds: int) -> str:
    peer_names = ["genai-prices", "tokencost", "litellm"]
    cost_table = table(
        [
            "model · usage",
            "ours µs",
            "worst_case µs",
            *(f"{name} µs (x ours)" for name in peer_names),
            "agrees?",
        ],
        [
            [
                f"{row.model} · {row.label}",
                _us(row.ours.us),
                _us(row.worst.us),
                *(_peer_cell(row.peers[name], row.ours) for name in peer_names),
                ", ".join(_agreement(name, row.ours_nanos, row.peers[name]) for name in peer_names),
            ]
            for row in cost
        ],
    )
    figures = table(
        ["model · usage", "in / cached / written / out / reasoning", "ours $", *peer_names],
        [
            [
                f"{row.model} · {row.label}",
                f"{row.usage.input_tokens} / {row.usage.cache_read_tokens} / "
                f"{row.usage.cache_write_tokens} / {row.usage.output_tokens} / "
                f"{row.usage.reasoning_tokens}",
                f"{Decimal(row.ours_nanos) / NANOS:.6f}",
                *(
                    "n/a"
                    if row.peers[name].value is None
                    else f"{Decimal(row.peers[name].value or 0) / NANOS:.6f}"
                    for name in peer_names
                ),
            ]
            for row in cost
        ],
    )
    token_peers = ["tokencost", "litellm"]
    token_table = table(
        [
            "model · chat",
            "raw tiktoken µs",
            "count_message_tokens µs (x raw)",
            "estimate_tokens µs (x raw)",
            "engine worst case µs (x raw)",
            *(f"{name} µs (x raw)" for name in token_peers),
            "tokens: raw / ours / " + " / ".join(token_peers),
        ],
        [
            [
                f"{row.model} · {row.chat}",
                _us(row.raw.us),
                *(_cell(bench, row.raw) for bench in row.ours.values()),
                *(_peer_cell(row.peers[name], row.raw) for name in token_peers),
                " / ".join(
                    [
                        str(row.raw_tokens),
                        str(row.ours_tokens),
                        *(
                            "n/a" if row.peers[name].value is None else str(row.peers[name].value)
                            for name in token_peers
                        ),
                    ]
                ),
            ]
            for row in tokens
        ],
    )
    return "\n\n".join(
        [
            header(
                "Pricing and estimation speed",
                [
                    *(f"{name} {version}" for name, version in versions().items()),
                    f"{rounds} rounds",
                ],
            ),
            "### Per-call cost (median µs per call; peers' ratio to ours)\n\n"
            "ours = `Admission.price(usage)` (rates cached), worst_case = "
            "`rates(model).worst_case(in, out)`; agrees: `=` exact to the nano-dollar, "
            "`≈` within 0.01%, `✗` the peer's deviation from ours.",
            cost_table,
            "### The figures compared (USD)",
            figures,
            "### Input-token counting (median µs per call; ratio to raw tiktoken `encode` "
            "of the concatenated text)\n\n"
            f"engine worst case = rates lookup + `estimate_tokens` + `worst_case` "
            f"(max_tokens={MAX_TOKENS}); Claude text is approximated from cl100k, so "
            "its raw column is cl100k.",
            token_table,
        ]
    )


def as_json(cost: list[CostRow], tokens: list[TokenRow], rounds: int) -> str:
    def peer(p: Peer, reference: Bench) -> dict[str, object]:
        return {
            "us": None if p.bench is None else p.bench.us,
            "ratio": None if p.bench is None else p.bench.ratio(reference),
            "value": None if p.value is None else str(p.value),
            "note": p.note,
        }

    return json.dumps(
        {
            "machine": machine(),
            "versions": versions(),
            "rounds": rounds,
            "cost": [
                {
                    "model": row.model,
                    "case": row.label,
                    "usage": {
                        "input": row.usage.input_tokens,
                        "cache_read": row.usage.cache_read_tokens,
                        "cache_write": row.usage.cache_write_tokens,
                        "output": row.usage.output_tokens,
                        "reasoning": row.usage.reasoning_tokens,
                    },
                    "ours_us": row.ours.us,
                    "worst_case_us": row.worst.us,
                    "ours_nanos": row.ours_nanos,
                    "peers": {name: peer(p, row.ours) for name, p in row.peers.items()},
                }
                for row in cost
            ],
            "tokens": [
                {
                    "model": row.model,
                    "chat": row.chat,
                    "raw_tiktoken_us": row.raw.us,
                    "raw_tokens": row.raw_tokens,
                    "ours_tokens": row.ours_tokens,
                    "ours_us": {name: bench.us for name, bench in row.ours.items()},
                    "ours_ratio": {name: bench.ratio(row.raw) for name, bench in row.ours.items()},
                    "peers": {name: peer(p, row.raw) for name, p in row.peers.items()},
                }
                for row in tokens
            ],
        },
        indent=2,
        default=str,
    )


def profile(seconds: float) -> None:
    """pyinstrument over our cost, worst-case and estimate paths (one loop each)."""
    from pyinstrument import Profiler

    rows = {(row.model, row.label): row for row in cost_rows()}
    claude = rows[("claude-sonnet-4-5", "cache read + write")]
    settings = Settings(prices=PriceBook())
    loops: list[tuple[str, Callable[[], object]]] = [
        ("Admission.price, claude-sonnet-4-5", lambda: claude.ours.timer.timeit(1000)),
        ("worst_case, claude-sonnet-4-5", lambda: claude.worst.timer.timeit(1000)),
        (
            "engine worst case, gpt-4o short chat",
            lambda: _worst_case(settings, LLMRequest("gpt-4o", SHORT_CHAT, max_tokens=1), "gpt-4o"),
        ),
        (
            "engine worst case, claude short chat",
            lambda: _worst_case(
                settings,
                LLMRequest("claude-sonnet-4-5", SHORT_CHAT, max_tokens=1),
                "claude-sonnet-4-5",
            ),
        ),
    ]
    for title, loop in loops:
        loop()
        profiler = Profiler(interval=0.0001)
        profiler.start()
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            loop()
        profiler.stop()
        print(f"### {title}\n")
        print(profiler.output_text(unicode=True, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument("--profile", action="store_true", help="pyinstrument our hot paths")
    parser.add_argument("--rounds", type=int, help="rounds (default 15, quick 5)")
    args = parser.parse_args()
    logging.getLogger("tokencost").setLevel(logging.ERROR)
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    if litellm is not None:
        litellm.suppress_debug_info = True
    if args.profile:
        profile(0.5 if args.quick else 2.0)
        return
    rounds = args.rounds or (5 if args.quick else 15)
    target = 0.002 if args.quick else 0.004
    cost = cost_rows()
    tokens = token_rows()
    groups: list[list[Bench]] = []
    for row in cost:
        peers = [p.bench for p in row.peers.values() if p.bench is not None]
        groups.append([row.ours, row.worst, *peers])
    for token_row in tokens:
        peers = [p.bench for p in token_row.peers.values() if p.bench is not None]
        groups.append([token_row.raw, *token_row.ours.values(), *peers])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_rounds(groups, rounds, target)
    print(as_json(cost, tokens, rounds) if args.json else markdown(cost, tokens, rounds))


if __name__ == "__main__":
    main()
