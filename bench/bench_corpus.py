"""Input estimates against what providers billed, on real recorded API calls.

    .venv/bin/python bench/bench_corpus.py [--json] [--family F] [--worst N]

Every interaction in tests/corpus (request bodies and billed usage taken from
public VCR cassettes, see tests/corpus/SOURCES.md) is turned into the
``LLMRequest`` an instrumented client would build: the JSON body is the SDK's
kwargs for OpenAI chat / compatible hosts, Responses and Anthropic; a Gemini
REST body (camelCase ``contents``, ``systemInstruction``, ``tools``,
``generationConfig``) becomes google-genai's ``model`` / ``contents`` /
``config`` kwargs. The request is routed as ``instrument`` would route a client
on that host, and ``estimate_of`` gives the input tokens the guard holds
("held": the counted prompt plus what it holds for hidden input - a seen
``previous_response_id``, server tools, unbounded input). Models genai-prices
cannot price are counted with ``estimate_input`` directly plus the same hidden
allowance. "counted" is ``estimate_input`` alone: the prompt as the estimator
reads it, before any allowance.

A call is short when held < billed input (cache reads and writes included).
Per family: n, short, and estimate / billed at the median, p10, p90 and min;
then the worst shortfalls with a guess at the cause, and the shortfalls by
cause. Causes are tested where that is cheap: the Gemini system instruction
given to the adapter as a list of parts instead of a Content; the structured
output schema (``response_format``, ``text.format``, ``output_format``,
``responseSchema``) counted as text on top.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import re
import statistics
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_SHARED_TIKTOKEN = ROOT.parent / "shared" / "tiktoken"
if _SHARED_TIKTOKEN.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_SHARED_TIKTOKEN))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import header, machine, table  # noqa: E402

import budgetguard as bg  # noqa: E402
from budgetguard._core.errors import UnknownModel  # noqa: E402
from budgetguard._core.records import LLMRequest  # noqa: E402
from budgetguard._engine.estimate import estimate_of, input_bound  # noqa: E402
from budgetguard.pricing.media import unbounded_reason  # noqa: E402
from budgetguard.pricing.tokens import count_text_tokens, estimate_input  # noqa: E402
from budgetguard.providers.anthropic import ADAPTER as ANTHROPIC  # noqa: E402
from budgetguard.providers.gemini import GENERATE  # noqa: E402
from budgetguard.providers.openai_chat import ADAPTER as CHAT  # noqa: E402
from budgetguard.providers.openai_responses import ADAPTER as RESPONSES  # noqa: E402
from budgetguard.providers.routes import Route, provider_for_url  # noqa: E402

FAMILIES = ("openai_chat", "openai_responses", "anthropic", "gemini", "compat")
HOME = {
    "openai_chat": "openai",
    "compat": "openai",
    "openai_responses": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
}


@functools.cache
def _load() -> Any:
    spec = importlib.util.spec_from_file_location(
        "budgetguard_corpus_load", ROOT / "tests" / "corpus" / "load.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _corpus() -> Callable[[str | None], Iterator[dict[str, Any]]]:
    loader: Callable[[str | None], Iterator[dict[str, Any]]] = _load().interactions
    return loader


def set_aside() -> dict[str, str]:
    """Recordings whose bill contradicts their request (tests/corpus/load.py says why)."""
    found: dict[str, str] = _load().SET_ASIDE
    return found


# --- Gemini: REST body -> google-genai kwargs ---------------------------------------

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


def gemini_kwargs(
    body: Mapping[str, Any], model: str, *, system_as_parts: bool = False
) -> dict[str, Any]:
    """``models.generate_content`` kwargs for a ``:generateContent`` REST body.

    ``contents`` and ``tools`` keep their REST shape (the SDK takes dicts);
    ``systemInstruction`` (a Content) becomes ``config.system_instruction``, as
    pydantic-ai and others pass it; ``generationConfig`` fields become config
    fields. ``system_as_parts`` passes the instruction's parts as a list instead.
    """
    config: dict[str, Any] = {}
    for key, value in (body.get("generationConfig") or {}).items():
        config[_snake(key)] = value
    system = body.get("systemInstruction")
    if system is not None:
        if system_as_parts and isinstance(system, Mapping):
            config["system_instruction"] = list(system.get("parts") or ())
        else:
            config["system_instruction"] = system
    for key in ("tools", "toolConfig", "safetySettings", "cachedContent", "labels"):
        if key in body:
            config[_snake(key)] = body[key]
    kwargs: dict[str, Any] = {"model": model, "contents": body.get("contents")}
    if config:
        kwargs["config"] = config
    return kwargs


# --- building the request ----------------------------------------------------------


def build(item: Mapping[str, Any], *, system_as_parts: bool = False) -> LLMRequest:
    family, body, model = item["family"], item["request"], item["model"]
    if family == "gemini":
        request = GENERATE.request(gemini_kwargs(body, model, system_as_parts=system_as_parts))
    elif family == "anthropic":
        kwargs = dict(body)
        kwargs.setdefault("model", model)  # Bedrock / Vertex name the model in the URL
        request = ANTHROPIC.request(kwargs)
    elif family == "openai_responses":
        request = RESPONSES.request(dict(body))
    else:
        kwargs = dict(body)
        kwargs.setdefault("model", model)  # Azure names the deployment in the URL
        request = CHAT.request(kwargs)
    url = f"https://{item['host']}/"
    route = Route(provider_for_url(url), {}, url, HOME[family])
    return route.request(request)


def held(settings: bg.Settings, request: LLMRequest) -> tuple[int, int, bool]:
    """(held input, counted input, priced): what the guard holds, and the prompt alone."""
    counted = estimate_input(
        request.model,
        messages=request.messages,
        prompt=request.prompt,
        system=request.system,
        tools=request.tools,
    ).tokens
    try:
        estimate = estimate_of(settings, request, request.model)
    except UnknownModel:
        return input_bound(settings, request, request.model).tokens, counted, False
    return estimate.input_tokens, counted, True


def unsized(value: object) -> str | None:
    """Why a document, audio or video part of the request has no size the request shows
    (one by URL or file id, held at the context window), else None."""
    if isinstance(value, Mapping):
        reason = unbounded_reason(value)
        if reason is not None:
            return reason
        return next((r for item in value.values() if (r := unsized(item)) is not None), None)
    if isinstance(value, list | tuple):
        return next((r for item in value if (r := unsized(item)) is not None), None)
    return None


# --- causes ------------------------------------------------------------------------

_GEMINI_SERVER_TOOLS = (
    "googleSearch",
    "google_search",
    "urlContext",
    "url_context",
    "codeExecution",
    "code_execution",
    "fileSearch",
    "file_search",
    "googleSearchRetrieval",
    "googleMaps",
    "google_maps",
    "computerUse",
    "enterpriseWebSearch",
)


def schema_of(item: Mapping[str, Any]) -> Any:
    """The structured-output schema a request sends, if any."""
    body, family = item["request"], item["family"]
    if family in ("openai_chat", "compat"):
        return body.get("response_format")
    if family == "openai_responses":
        text = body.get("text")
        return text.get("format") if isinstance(text, Mapping) else None
    if family == "anthropic":
        config = body.get("output_config")
        found = body.get("output_format")
        if found is None and isinstance(config, Mapping):
            found = config.get("format")
        return found
    config = body.get("generationConfig") or {}
    for key in ("responseSchema", "responseJsonSchema", "_responseJsonSchema"):
        if key in config:
            return config[key]
    return None


def features(item: Mapping[str, Any]) -> list[str]:
    """What a request carries that the estimate may read wrong, most specific first."""
    body, family = item["request"], item["family"]
    text = json.dumps(body)
    found: list[str] = []
    if body.get("previous_response_id") or body.get("conversation"):
        found.append("previous_response_id")
    tools = body.get("tools") or []
    kinds = [str(t.get("type", "")) for t in tools if isinstance(t, Mapping)]
    server = any(k not in ("", "function", "custom") for k in kinds)
    if family == "gemini":
        server = any(
            key in _GEMINI_SERVER_TOOLS for t in tools if isinstance(t, Mapping) for key in t
        )
    agentic = str(body.get("model", "")).rsplit("/", 1)[-1].startswith("compound")
    if (
        server
        or agentic
        or body.get("mcp_servers")
        or body.get("web_search_options")
        or body.get("plugins")
        or body.get("search_settings")
    ):
        found.append("server tools")
    if (
        "application/pdf" in text
        or '"type": "document"' in text
        or '"type": "input_file"' in text
        or '"type": "file"' in text
    ):
        found.append("PDF/document")
    if '"input_audio"' in text or re.search(r'"(audio|video)/', text):
        found.append("audio/video")
    if (
        '"image_url"' in text
        or '"type": "image"' in text
        or '"input_image"' in text
        or re.search(r'"image/', text)
    ):
        found.append("images")
    if schema_of(item) is not None:
        found.append("structured output")
    if tools:
        found.append("tools")
    if (
        body.get("thinking")
        or body.get("reasoning")
        or body.get("reasoning_effort")
        or "thinkingConfig" in (body.get("generationConfig") or {})
        or '"type": "reasoning"' in text
        or '"type": "thinking"' in text
    ):
        found.append("thinking")
    if family == "gemini" and body.get("systemInstruction"):
        found.append("systemInstruction")
    return found or ["text only"]


# --- the run -----------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = q * (len(ordered) - 1)
    low = int(index)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def run(families: tuple[str, ...]) -> dict[str, Any]:
    settings = bg.current()
    interactions = _corpus()
    aside = set_aside()
    rows: list[dict[str, Any]] = []
    crashes: list[dict[str, str]] = []
    started = time.perf_counter()
    for family in families:
        for item in interactions(family):
            billed = int(item["billed_input_tokens"])
            try:
                request = build(item)
                tokens, counted, priced = held(settings, request)
            except Exception as error:  # a crash on a real body is itself a finding
                crashes.append(
                    {
                        "id": item["id"],
                        "family": family,
                        "model": item["model"],
                        "error": f"{type(error).__name__}: {error}"[:300],
                        "where": traceback.format_exc().strip().splitlines()[-3].strip()[:200],
                    }
                )
                continue
            row: dict[str, Any] = {
                "id": item["id"],
                "family": family,
                "model": item["model"],
                "host": item["host"],
                "billed": billed,
                "held": tokens,
                "counted": counted,
                "priced": priced,
                "ratio": tokens / billed,
                "features": features(item),
                "unbounded": list(request.unbounded),
                "unsized": unsized(request.messages),
                "cap": request.max_tokens,
                "output": int(item.get("output_tokens") or 0),
            }
            if tokens < billed:
                row["cause"] = cause(item, row, settings)
            if item["id"] in aside:
                row["set_aside"] = aside[item["id"]]
            rows.append(row)
    return {
        "rows": rows,
        "crashes": crashes,
        "seconds": time.perf_counter() - started,
    }


def cause(item: Mapping[str, Any], row: Mapping[str, Any], settings: bg.Settings) -> str:
    """A guess at why a call is short: hidden input the request names first, then the
    first cheap counterfactual that closes the gap, then what the request carries."""
    family, body, model = item["family"], item["request"], item["model"]
    billed, tokens = row["billed"], row["held"]
    carries = row["features"]
    if "previous_response_id" in carries:
        return "previous_response_id / conversation (hidden input)"
    if family == "gemini" and body.get("cachedContent"):
        return "gemini cachedContent (hidden input)"
    if "server tools" in carries:
        return "server / built-in tools"
    served = item.get("response_model")
    if body.get("models") or (
        isinstance(served, str) and _family_name(served) != _family_name(model)
    ):
        return "routed to another model (served model differs)"
    if family == "gemini" and body.get("systemInstruction"):
        fixed, _, _ = held(settings, build(item, system_as_parts=True))
        if fixed >= billed:
            return "gemini systemInstruction (adapter reads a Content as its keys)"
    schema = schema_of(item)
    if schema is not None:
        extra = count_text_tokens(model, json.dumps(schema))
        if tokens + extra >= billed:
            return "structured-output schema not counted"
    if family in ("openai_chat", "compat") and body.get("functions"):
        extra = 20 + count_text_tokens(model, json.dumps(body["functions"]))
        if tokens + extra >= billed:
            return "legacy functions= not counted"
    if family == "openai_responses" and isinstance(body.get("input"), str):
        wrapped = estimate_input(model, messages=[{"role": "user", "content": body["input"]}])
        if tokens - row["counted"] + wrapped.tokens >= billed:
            return "Responses string input: no message wrapper counted"
    if "gpt-oss" in model:
        return "gpt-oss (harmony system header)"
    for name in ("PDF/document", "audio/video", "images"):
        if name in carries:
            return name
    if schema is not None:
        return "structured output (beyond the schema text)"
    if "thinking" in carries:
        return "thinking / reasoning"
    if "tools" in carries:
        return "tools"
    if billed - tokens <= 5:
        return "text only, off by <= 5"
    return "text only"


def _family_name(model: str) -> str:
    name = model.rsplit("/", 1)[-1].lower()
    for known in ("claude", "gemini", "gpt", "grok", "llama", "mistral", "deepseek", "qwen"):
        if known in name:
            return known
    return name.split("-", 1)[0]


def summarize(result: dict[str, Any], worst: int) -> dict[str, Any]:
    apart_rows = [r for r in result["rows"] if "set_aside" in r]
    rows = [r for r in result["rows"] if "set_aside" not in r]
    by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_family[row["family"]].append(row)
    families = []
    for family in FAMILIES:
        group = by_family.get(family)
        if not group:
            continue
        # Calls whose input the request cannot bound (server tools without limits, an
        # unseen previous response...) are counted apart: their hold is an allowance.
        bounded = [r for r in group if not r["unbounded"] and not r["unsized"]] or group
        apart = [r for r in group if r["unbounded"]]
        unsized_rows = [r for r in group if r["unsized"] and not r["unbounded"]]
        ratios = [r["ratio"] for r in bounded]
        short = [r for r in bounded if r["held"] < r["billed"]]
        families.append(
            {
                "family": family,
                "n": len(group),
                "short": len(short),
                "unbounded": len(apart),
                "unbounded_short": sum(1 for r in apart if r["held"] < r["billed"]),
                "unsized": len(unsized_rows),
                "unsized_short": sum(1 for r in unsized_rows if r["held"] < r["billed"]),
                "short_counted": sum(1 for r in group if r["counted"] < r["billed"]),
                "unpriced": sum(1 for r in group if not r["priced"]),
                "median": statistics.median(ratios),
                "total": sum(r["held"] for r in bounded) / sum(r["billed"] for r in bounded),
                "p10": quantile(ratios, 0.1),
                "p90": quantile(ratios, 0.9),
                "min": min(ratios),
                "output_over_cap": sum(
                    1 for r in group if r["cap"] is not None and r["output"] > r["cap"]
                ),
            }
        )
    shortfalls = sorted(
        (r for r in rows if r["held"] < r["billed"] and not r["unbounded"] and not r["unsized"]),
        key=lambda r: (r["ratio"], -r["billed"]),
    )
    causes: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in shortfalls:
        causes[(row["family"], row["cause"])].append(row)
    by_cause = sorted(
        (
            {
                "family": family,
                "cause": reason,
                "short": len(group),
                "median_deficit": statistics.median(r["billed"] - r["held"] for r in group),
                "max_deficit": max(r["billed"] - r["held"] for r in group),
                "median_ratio": statistics.median(r["ratio"] for r in group),
            }
            for (family, reason), group in causes.items()
        ),
        key=lambda c: (-c["short"], c["family"]),
    )
    feature_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        for name in row["features"]:
            feature_counts[row["family"]][name] += 1
    return {
        "families": families,
        "worst": shortfalls[:worst],
        "by_cause": by_cause,
        "crashes": result["crashes"],
        "features": {family: dict(counts) for family, counts in feature_counts.items()},
        "set_aside": [
            {k: r[k] for k in ("id", "family", "model", "held", "billed", "set_aside")}
            for r in apart_rows
        ],
        "seconds": result["seconds"],
    }


def markdown(summary: dict[str, Any]) -> str:
    total = sum(f["n"] for f in summary["families"])
    out = [
        header(
            "Input estimates against billed input: recorded API calls",
            [f"{total} interactions", f"{summary['seconds']:.1f} s"],
        ),
        "",
        "held = the input the guard holds (estimate_of: prompt + hidden/server-tool allowance); "
        "counted = estimate_input alone. short and the ratios (held / billed) are over the "
        "calls whose input the request bounds; unbounded = the others (server tools without "
        "limits, an unseen previous response, cached content...), held at an allowance, "
        "with how many of them the allowance did not cover; unsized media = documents, "
        "audio or video by URL or file id, held at the model's context window. all tokens = "
        "the tokens held over the tokens billed, summed over the bounded calls: the money "
        "figure, where the many tiny test prompts weigh what they cost.",
        "",
        table(
            [
                "family",
                "n",
                "short",
                "unbounded (short)",
                "unsized media (short)",
                "short (counted)",
                "unpriced",
                "median",
                "p10",
                "p90",
                "min",
                "all tokens",
                "output > cap",
            ],
            [
                [
                    f["family"],
                    f["n"],
                    f["short"],
                    f"{f['unbounded']} ({f['unbounded_short']})",
                    f"{f['unsized']} ({f['unsized_short']})",
                    f["short_counted"],
                    f["unpriced"],
                    f"{f['median']:.2f}",
                    f"{f['p10']:.2f}",
                    f"{f['p90']:.2f}",
                    f"{f['min']:.3f}",
                    f"{f['total']:.2f}",
                    f["output_over_cap"],
                ]
                for f in summary["families"]
            ],
        ),
    ]
    if not summary["worst"]:
        out += ["", "No call whose input the request bounds is held below its bill."]
    else:
        out += [
            "",
            "### Shortfalls by cause",
            "",
            table(
                ["family", "cause", "short", "median deficit", "max deficit", "median ratio"],
                [
                    [
                        c["family"],
                        c["cause"],
                        c["short"],
                        c["median_deficit"],
                        c["max_deficit"],
                        f"{c['median_ratio']:.2f}",
                    ]
                    for c in summary["by_cause"]
                ],
            ),
            "",
            f"### The {len(summary['worst'])} worst shortfalls (lowest held / billed)",
            "",
            table(
                ["id", "family", "model", "held", "billed", "ratio", "cause", "carries"],
                [
                    [
                        r["id"],
                        r["family"],
                        r["model"],
                        r["held"],
                        r["billed"],
                        f"{r['ratio']:.3f}",
                        r["cause"],
                        ", ".join(r["features"]),
                    ]
                    for r in summary["worst"]
                ],
            ),
        ]
    if summary["set_aside"]:
        out += [
            "",
            f"### Set aside: recordings whose bill contradicts their request "
            f"({len(summary['set_aside'])}, not in the figures above)",
            "",
            table(
                ["id", "family", "model", "held", "billed", "why"],
                [
                    [r["id"], r["family"], r["model"], r["held"], r["billed"], r["set_aside"]]
                    for r in summary["set_aside"]
                ],
            ),
        ]
    if summary["crashes"]:
        out += [
            "",
            f"### Adapter / estimator errors on real bodies ({len(summary['crashes'])})",
            "",
            table(
                ["id", "family", "model", "error"],
                [[c["id"], c["family"], c["model"], c["error"]] for c in summary["crashes"]],
            ),
        ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    parser.add_argument("--family", choices=FAMILIES, action="append", help="only these")
    parser.add_argument("--worst", type=int, default=15, help="shortfalls listed (15)")
    parser.add_argument("--rows", action="store_true", help="with --json: every row too")
    args = parser.parse_args()
    result = run(tuple(args.family) if args.family else FAMILIES)
    summary = summarize(result, args.worst)
    if args.json:
        if args.rows:
            summary["rows"] = result["rows"]
        print(json.dumps({"machine": machine(), **summary}, indent=2, default=str))
    else:
        print(markdown(summary))


if __name__ == "__main__":
    main()
