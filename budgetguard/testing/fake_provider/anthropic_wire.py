"""Anthropic's wire format: messages, JSON and SSE."""

from __future__ import annotations

from .replies import Json, Reply
from .server import Handler, Route, new_id

__all__ = ["ROUTES"]

_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error(h: Handler, reply: Reply) -> None:
    kind = _ERRORS.get(reply.status, "api_error")
    body: Json = {"type": "error", "error": {"type": kind, "message": reply.error_message}}
    h.send_json(reply.status, body)


def _anthropic_usage(r: Reply, *, output_tokens: int) -> Json:
    usage: Json = {
        "input_tokens": r.input_tokens - r.cache_read_tokens - r.cache_write_tokens,
        "cache_creation_input_tokens": r.cache_write_tokens,
        "cache_read_input_tokens": r.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": r.cache_write_tokens - r.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": r.cache_write_1h_tokens,
        },
        "output_tokens": output_tokens,
        "service_tier": r.service_tier or "standard",
    }
    if r.web_searches:
        usage["server_tool_use"] = {"web_search_requests": r.web_searches, "web_fetch_requests": 0}
    return usage


def _anthropic_message(r: Reply, model: str, mid: str, *, done: bool) -> Json:
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": r.text}] if done else [],
        "stop_reason": "end_turn" if done else None,
        "stop_sequence": None,
        "usage": (
            r.raw_usage
            if done and r.raw_usage is not None
            else _anthropic_usage(r, output_tokens=r.output_tokens if done else 1)
        ),
    }


def messages(h: Handler, path: str, body: Json, reply: Reply) -> None:
    model = reply.model or str(body.get("model", ""))
    mid = new_id("msg_")
    if not body.get("stream"):
        message = _anthropic_message(reply, model, mid, done=True)
        if not reply.include_usage:
            del message["usage"]
        h.send_json(200, message)
        return
    h.start_stream()
    start = _anthropic_message(reply, model, mid, done=False)
    h.sse({"type": "message_start", "message": start}, "message_start")
    block = {"type": "text", "text": ""}
    h.sse(
        {"type": "content_block_start", "index": 0, "content_block": block},
        "content_block_start",
    )
    h.sse({"type": "ping"}, "ping")
    for piece in h.deltas(reply):
        h.sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
            "content_block_delta",
        )
    h.sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    h.sse(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            # Cumulative counts, input included, as the API now sends them.
            "usage": {
                key: value
                for key, value in _anthropic_usage(reply, output_tokens=reply.output_tokens).items()
                if key != "service_tier"
            },
        },
        "message_delta",
    )
    h.sse({"type": "message_stop"}, "message_stop")
    h.end_stream()


ROUTES = (Route(lambda path: path.endswith("/messages"), messages, error),)
