"""Rebuild the corpus from VCR cassettes / HAR files of public repositories.

    python tests/corpus/build_corpus.py OUT_DIR FOLDER=owner/repo@commit [FOLDER=...]

``FOLDER`` holds a repository's cassette files at their repository
paths (``git show`` of every ``*cassette*/**.yaml|json|har`` blob of the
commit). Needs PyYAML (not a budgetguard dependency: run it with any Python
that has it). See SOURCES.md for what it keeps and drops.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import os
import re
import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
STATS: Counter[str] = Counter()
BLOB_MIN = 32_768
BLOB_PREFIX = "@blob:sha256:"
ABBR = {
    "openai_chat": "oc",
    "openai_responses": "or",
    "anthropic": "an",
    "gemini": "ge",
    "compat": "co",
}
LOCAL_HOSTS = ("localhost", "127.0.0.1")
EXCLUDE = {  # source -> why (found by inspection)
    "Arize-ai/openinference@1fe497f:python/instrumentation/openinference-instrumentation-"
    "litellm/tests/cassettes/TestTokenCounts.test_anthropic.yaml#0": (
        "hand-written usage (100 / 5 / 2) for 'Hello!'"
    ),
}
EXCLUDE_BODY = {  # text in a request body -> why
    "very very long system prompt": (
        "openllmetry's Bedrock prompt-cache cassettes: this short system prompt is billed "
        "18131 cache-write tokens, so the body is not the one that was sent"
    ),
}

Raw = tuple[int, str, Any, Any, Any, Any, Any]
"""(index, uri, request headers, request body, status, response headers, response body)."""


def header(headers: Any, name: str) -> list[Any]:
    if not headers:
        return []
    if isinstance(headers, list):  # HAR
        return [h.get("value") for h in headers if str(h.get("name", "")).lower() == name]
    for key, value in headers.items():
        if str(key).lower() == name:
            return value if isinstance(value, list) else [value]
    return []


def decode(raw: Any, headers: Any) -> Any:
    """A body as text (or as the object a cassette already parsed)."""
    if raw is None or isinstance(raw, dict | list):
        return raw
    if isinstance(raw, bytes) and b":event-type" in raw[:200]:  # AWS event stream (Bedrock)
        events = []
        for match in re.finditer(rb'\{"bytes":"([A-Za-z0-9+/=]+)"', raw):
            try:
                events.append("data: " + base64.b64decode(match.group(1)).decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                continue
        return "\n".join(events)
    if isinstance(raw, bytes):
        encoding = " ".join(str(x) for x in header(headers, "content-encoding"))
        data = raw
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                STATS["bad gzip"] += 1
                return None
        elif "br" in encoding or "zstd" in encoding:
            STATS["brotli/zstd body"] += 1
            return None
        elif "deflate" in encoding:
            with contextlib.suppress(zlib.error):
                data = zlib.decompress(data)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            STATS["undecodable body"] += 1
            return None
    return raw


def as_json(text: Any) -> Any:
    if isinstance(text, dict | list):
        return text
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def sse_events(text: Any) -> list[Any]:
    events: list[Any] = []
    if not isinstance(text, str):
        return events
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("data:"):
            payload = stripped[5:].strip()
            if payload and payload != "[DONE]":
                try:
                    events.append(json.loads(payload))
                except ValueError:
                    continue
    return events


def classify(uri: str) -> tuple[str | None, str, str | None]:
    """(family, host, model named in the URL) of an LLM call; family None for others."""
    parsed = urlparse(uri)
    host, path = parsed.hostname or "", unquote(parsed.path)
    if path.endswith("chat/completions"):
        openai = host == "api.openai.com" or host.endswith(".openai.azure.com")
        deployment = re.search(r"/deployments/([^/]+)/", path)
        return (
            "openai_chat" if openai else "compat",
            host,
            deployment.group(1) if deployment else None,
        )
    if path.endswith("/responses"):
        return "openai_responses", host, None
    if path.endswith("/v1/messages"):
        return "anthropic", host, None
    match = re.search(r"models/([^/:]+):(generateContent|streamGenerateContent)$", path)
    if match:
        return "gemini", host, match.group(1)
    match = re.search(r"publishers/anthropic/models/([^/:]+):(rawPredict|streamRawPredict)$", path)
    if match:
        return "anthropic", host, match.group(1)
    match = re.search(r"/model/([^/]+)/invoke(-with-response-stream)?$", path)
    if match and "anthropic" in match.group(1):
        return "anthropic", host, match.group(1)
    return None, host, None


def _events(body: Any) -> tuple[Any, list[Any]]:
    parsed = as_json(body)
    if parsed is None:
        return None, sse_events(body)
    if isinstance(parsed, list):  # Gemini's JSON-array stream
        return None, parsed
    return parsed, []


def usage_of(family: str, body: Any) -> tuple[dict[str, Any], int, int, Any] | None:
    """(usage, output tokens, billed input tokens, served model), None without usage."""
    obj, events = _events(body)
    if family in ("openai_chat", "compat"):
        return _chat_usage(obj, events)
    if family == "openai_responses":
        return _responses_usage(obj, events)
    if family == "anthropic":
        return _anthropic_usage(obj, events)
    return _gemini_usage(obj, events)


def _chat_usage(obj: Any, events: list[Any]) -> tuple[dict[str, Any], int, int, Any] | None:
    usage, served = None, None
    if isinstance(obj, dict):
        usage, served = obj.get("usage"), obj.get("model")
    for event in events:
        if isinstance(event, dict):
            served = event.get("model") or served
            usage = event.get("usage") or usage
    if not isinstance(usage, dict) or usage.get("prompt_tokens") is None:
        return None
    return usage, usage.get("completion_tokens") or 0, usage["prompt_tokens"], served


def _responses_usage(obj: Any, events: list[Any]) -> tuple[dict[str, Any], int, int, Any] | None:
    response = obj if isinstance(obj, dict) else None
    final = ("response.completed", "response.incomplete", "response.failed")
    for event in events:
        if isinstance(event, dict) and event.get("type") in final:
            response = event.get("response")
    if not isinstance(response, dict) or response.get("status") == "failed":
        return None
    usage = response.get("usage")
    if not isinstance(usage, dict) or usage.get("input_tokens") is None:
        return None
    return usage, usage.get("output_tokens") or 0, usage["input_tokens"], response.get("model")


def _anthropic_usage(obj: Any, events: list[Any]) -> tuple[dict[str, Any], int, int, Any] | None:
    served = None
    if isinstance(obj, dict):
        if obj.get("type") == "error":
            return None
        usage, served = obj.get("usage"), obj.get("model")
    else:
        start = delta = None
        for event in events:
            if not isinstance(event, dict):
                continue
            if event.get("type") == "message_start":
                message = event.get("message") or {}
                start, served = message.get("usage"), message.get("model")
            elif event.get("type") == "message_delta" and event.get("usage"):
                delta = event["usage"]
        if start is None:
            return None
        usage = dict(start)  # message_delta repeats cumulative counts: they win
        usage.update({k: v for k, v in (delta or {}).items() if v is not None})
    if not isinstance(usage, dict) or usage.get("input_tokens") is None:
        return None
    billed = (
        usage["input_tokens"]
        + (usage.get("cache_read_input_tokens") or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
    )
    return usage, usage.get("output_tokens") or 0, billed, served


def _gemini_usage(obj: Any, events: list[Any]) -> tuple[dict[str, Any], int, int, Any] | None:
    usage, served = None, None
    if isinstance(obj, dict):
        usage, served = obj.get("usageMetadata"), obj.get("modelVersion")
    for event in events:
        if isinstance(event, dict):
            served = event.get("modelVersion") or served
            usage = event.get("usageMetadata") or usage
    if not isinstance(usage, dict) or usage.get("promptTokenCount") is None:
        return None
    output = (usage.get("candidatesTokenCount") or 0) + (usage.get("thoughtsTokenCount") or 0)
    billed = usage["promptTokenCount"] + (usage.get("toolUsePromptTokenCount") or 0)
    return usage, output, billed, served


def iter_file(path: str) -> Iterator[Raw]:
    with open(path, "rb") as handle:
        raw = handle.read()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8", errors="replace")
    if path.endswith((".har", ".har.gz")) or (path.endswith(".json") and '"log"' in text[:200]):
        yield from _har(text)
        return
    try:
        doc = yaml.load(text, Loader=LOADER)  # a safe loader
    except yaml.YAMLError:
        STATS["yaml error"] += 1
        return
    if not isinstance(doc, dict):
        return
    for index, interaction in enumerate(doc.get("interactions") or []):
        if not isinstance(interaction, dict):
            continue
        request, response = interaction.get("request") or {}, interaction.get("response") or {}
        body = request.get("parsed_body", request.get("body"))  # pydantic-ai stores parsed_body
        if isinstance(body, dict) and "string" in body and len(body) <= 2:
            body = body["string"]
        answer = response.get("parsed_body")
        if answer is None:
            stored = response.get("body")
            answer = stored.get("string") if isinstance(stored, dict) else stored
        status = response.get("status")
        code = status.get("code") if isinstance(status, dict) else status
        yield (
            index,
            request.get("uri", ""),
            request.get("headers"),
            body,
            code,
            response.get("headers"),
            answer,
        )


def _har(text: str) -> Iterator[Raw]:
    try:
        har = json.loads(text)
    except ValueError:
        return
    for index, entry in enumerate(har.get("log", {}).get("entries", [])):
        request, response = entry.get("request", {}), entry.get("response", {})
        content = response.get("content") or {}
        answer = content.get("text")
        if answer is not None and content.get("encoding") == "base64":
            answer = base64.b64decode(answer)
        yield (
            index,
            request.get("url", ""),
            request.get("headers"),
            (request.get("postData") or {}).get("text"),
            response.get("status"),
            response.get("headers"),
            answer,
        )


def collect(specs: list[str]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    for spec in specs:
        folder, ident = spec.split("=", 1)
        files = sorted(
            os.path.join(base, name)
            for base, _, names in os.walk(folder)
            for name in names
            if name.endswith((".yaml", ".yml", ".yaml.gz", ".yml.gz", ".har", ".json"))
        )
        for path in files:
            relative = os.path.relpath(path, folder)
            try:
                items = list(iter_file(path))
            except (AttributeError, TypeError, ValueError, OSError) as error:
                STATS[f"file error {type(error).__name__}"] += 1
                continue
            for index, uri, request_headers, body, code, response_headers, answer in items:
                row = _row(
                    ident,
                    relative,
                    index,
                    uri,
                    request_headers,
                    body,
                    code,
                    response_headers,
                    answer,
                )
                if row is None:
                    continue
                if row["_key"] in seen:
                    STATS[f"{row['family']} duplicate"] += 1
                    continue
                seen.add(row["_key"])
                rows.append(row)
    return rows


def _row(
    ident: str,
    relative: str,
    index: int,
    uri: str,
    request_headers: Any,
    body: Any,
    code: Any,
    response_headers: Any,
    answer: Any,
) -> dict[str, Any] | None:
    family, host, url_model = classify(uri)
    if family is None:
        return None
    source = f"{ident}:{relative}#{index}"
    if str(code) != "200":
        STATS[f"{family} non-200"] += 1
        return None
    request = as_json(decode(body, request_headers))
    if not isinstance(request, dict):
        STATS[f"{family} non-json request"] += 1
        return None
    got = usage_of(family, decode(answer, response_headers))
    if got is None:
        STATS[f"{family} no usage"] += 1
        return None
    usage, output, billed, served = got
    model = url_model if family == "gemini" else request.get("model") or url_model
    if not isinstance(model, str) or not model:
        STATS[f"{family} no model"] += 1
        return None
    text = json.dumps(request)
    if (
        billed <= 0
        or host in LOCAL_HOSTS
        or source in EXCLUDE
        or any(marker in text for marker in EXCLUDE_BODY)
    ):
        STATS[f"{family} excluded"] += 1
        return None
    canonical = model + "\0" + json.dumps(request, sort_keys=True)
    return {
        "id": "",
        "source": source,
        "family": family,
        "host": host,
        "model": model,
        "response_model": served if isinstance(served, str) else None,
        "request": request,
        "usage": usage,
        "output_tokens": output,
        "billed_input_tokens": billed,
        "_key": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
    }


def externalize(value: Any, media: dict[str, str]) -> Any:
    """Strings of BLOB_MIN chars or more, stored once in media.jsonl.gz."""
    if isinstance(value, str):
        if len(value) < BLOB_MIN:
            return value
        digest = hashlib.sha256(value.encode("utf-8")).hexdigest()
        media[digest] = value
        return BLOB_PREFIX + digest
    if isinstance(value, dict):
        return {key: externalize(item, media) for key, item in value.items()}
    if isinstance(value, list):
        return [externalize(item, media) for item in value]
    return value


def write_gz(path: str, lines: list[str]) -> None:
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0, filename="") as out,
    ):
        for line in lines:
            out.write((line + "\n").encode("utf-8"))


def main() -> None:
    out, specs = sys.argv[1], sys.argv[2:]
    rows = collect(specs)
    media: dict[str, str] = {}
    by_family: dict[str, list[str]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["source"]):
        key = row.pop("_key")
        row["id"] = f"{ABBR[row['family']]}-{key[:10]}"
        row["request"] = externalize(row["request"], media)
        STATS[f"{row['family']} kept"] += 1
        by_family[row["family"]].append(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
    os.makedirs(out, exist_ok=True)
    for family, lines in sorted(by_family.items()):
        write_gz(os.path.join(out, f"{family}.jsonl.gz"), lines)
    blobs = [json.dumps({"sha256": k, "text": v}) for k, v in sorted(media.items())]
    write_gz(os.path.join(out, "media.jsonl.gz"), blobs)
    for name, count in sorted(STATS.items()):
        print(f"{name}: {count}")


if __name__ == "__main__":
    main()
