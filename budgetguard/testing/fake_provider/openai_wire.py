"""OpenAI wire formats: chat completions and Responses, JSON and SSE."""

from __future__ import annotations

import time
from typing import Any

from .replies import Json, Reply
from .server import Handler, Route, new_id

__all__ = ["ROUTES"]

_ERRORS = {400: "invalid_request_error", 401: "invalid_api_key", 429: "rate_limit_exceeded"}


def error(h: Handler, reply: Reply) -> None:
    kind = _ERRORS.get(reply.status, "server_error")
    body = {"error": {"message": reply.error_message, "type": kind, "param": None, "code": None}}
    h.send_json(reply.status, body)


def _chat_usage(r: Reply) -> Json:
    prompt_details: Json = {
        "cached_tokens": r.cache_read_tokens,
        "audio_tokens": r.input_audio_tokens,
    }
    if r.cache_write_tokens:
        prompt_details["cache_write_tokens"] = r.cache_write_tokens
    return {
        "prompt_tokens": r.input_tokens,
        "completion_tokens": r.output_tokens,
        "total_tokens": r.input_tokens + r.output_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": r.reasoning_tokens,
            "audio_tokens": r.output_audio_tokens,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _responses_usage(r: Reply) -> Json:
    return {
        "input_tokens": r.input_tokens,
        "input_tokens_details": {
            "cached_tokens": r.cache_read_tokens,
            "cache_write_tokens": r.cache_write_tokens,
        },
        "output_tokens": r.output_tokens,
        "output_tokens_details": {"reasoning_tokens": r.reasoning_tokens},
        "total_tokens": r.input_tokens + r.output_tokens,
    }


def _tier(r: Reply, body: Json) -> str:
    requested = body.get("service_tier")
    return r.service_tier or (requested if requested not in (None, "auto") else "default")


def _searches(r: Reply) -> list[Json]:
    return [
        {"type": "web_search_call", "id": new_id("ws_"), "status": "completed"}
        for _ in range(r.web_searches)
    ]


def _response_object(
    r: Reply, model: str, rid: str, mid: str, *, done: bool, tier: str = "default"
) -> Json:
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed" if done else "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": model,
        "service_tier": tier,
        "output": (
            [
                *_searches(r),
                {
                    "type": "message",
                    "id": mid,
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": r.text, "annotations": []}],
                },
            ]
            if done
            else []
        ),
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "usage": (r.raw_usage or _responses_usage(r)) if done and r.include_usage else None,
    }


def chat(h: Handler, path: str, body: Json, reply: Reply) -> None:
    model = reply.model or str(body.get("model", ""))
    cid, created = new_id("chatcmpl-"), int(time.time())
    if not body.get("stream"):
        message = {"role": "assistant", "content": reply.text, "refusal": None}
        response: Json = {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            ],
            "service_tier": _tier(reply, body),
            "system_fingerprint": "fp_fake",
        }
        if reply.include_usage:
            response["usage"] = reply.raw_usage or _chat_usage(reply)
        h.send_json(200, response)
        return
    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage")) and reply.include_usage

    def chunk(delta: Json, finish: str | None = None) -> Json:
        data: Json = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": _tier(reply, body),
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            data["usage"] = None
        return data

    h.start_stream()
    h.sse(chunk({"role": "assistant", "content": "", "refusal": None}))
    for piece in h.deltas(reply):
        h.sse(chunk({"content": piece}))
    h.sse(chunk({}, "stop"))
    if include_usage:
        last = chunk({})
        last["choices"] = []
        last["usage"] = reply.raw_usage or _chat_usage(reply)
        h.sse(last)
    h.sse("[DONE]")
    h.end_stream()


def responses(h: Handler, path: str, body: Json, reply: Reply) -> None:
    model = reply.model or str(body.get("model", ""))
    rid, mid = new_id("resp_"), new_id("msg_")
    if not body.get("stream"):
        h.send_json(
            200, _response_object(reply, model, rid, mid, done=True, tier=_tier(reply, body))
        )
        return
    seq = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> None:
        h.sse({"type": kind, "sequence_number": next(seq), **fields}, kind)

    h.start_stream()
    event("response.created", response=_response_object(reply, model, rid, mid, done=False))
    event("response.in_progress", response=_response_object(reply, model, rid, mid, done=False))
    item = {"type": "message", "id": mid, "status": "in_progress", "role": "assistant"}
    event("response.output_item.added", output_index=0, item={**item, "content": []})
    part = {"type": "output_text", "text": "", "annotations": []}
    event("response.content_part.added", item_id=mid, output_index=0, content_index=0, part=part)
    for piece in h.deltas(reply):
        event(
            "response.output_text.delta",
            item_id=mid,
            output_index=0,
            content_index=0,
            delta=piece,
            logprobs=[],
        )
    event(
        "response.output_text.done",
        item_id=mid,
        output_index=0,
        content_index=0,
        text=reply.text,
        logprobs=[],
    )
    done = _response_object(reply, model, rid, mid, done=True, tier=_tier(reply, body))
    event("response.output_item.done", output_index=0, item=done["output"][-1])
    event("response.completed", response=done)
    h.end_stream()


def embeddings(h: Handler, path: str, body: Json, reply: Reply) -> None:
    given = body.get("input")
    count = len(given) if isinstance(given, list) and not isinstance(given[0], int) else 1
    response: Json = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": n, "embedding": [0.1, 0.2, 0.3]} for n in range(count)
        ],
        "model": reply.model or str(body.get("model", "")),
    }
    if reply.include_usage:
        response["usage"] = reply.raw_usage or {
            "prompt_tokens": reply.input_tokens,
            "total_tokens": reply.input_tokens,
        }
    h.send_json(200, response)


ROUTES = (
    Route(lambda path: path.endswith("/chat/completions"), chat, error),
    Route(lambda path: path.endswith("/responses"), responses, error),
    Route(lambda path: path.endswith("/embeddings"), embeddings, error),
)
