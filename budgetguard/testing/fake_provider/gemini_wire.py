"""Gemini's wire format (the Developer API, as google-genai calls it): JSON and SSE.

It answers ``POST /v1/models/{model}:generateContent`` (``/v1beta`` too),
``:streamGenerateContent`` (``alt=sse``: one ``GenerateContentResponse`` per
text piece, each with a running ``usageMetadata``, the last one with the finish
reason, the final usage and any grounding; no ``[DONE]``),
``:batchEmbedContents`` and ``:countTokens``, routed on the method after the
last ``:``. ``modelVersion`` is ``Reply.model``, else the model in the path.

Usage is translated from budgetguard's convention: ``promptTokenCount`` counts
cached tokens but not ``toolUsePromptTokenCount``; ``candidatesTokenCount``
does not count ``thoughtsTokenCount`` (reasoning). Responses carry no service
tier (the SDK has no field for one), so ``Reply.service_tier`` is ignored.
"""

from __future__ import annotations

from collections.abc import Callable

from .replies import Json, Reply
from .server import Cut, Handler, Route, new_id, pieces

__all__ = ["ROUTES"]

_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error(h: Handler, reply: Reply) -> None:
    default = "INTERNAL" if reply.status >= 500 else "INVALID_ARGUMENT"
    status = _STATUSES.get(reply.status, default)
    body = {"error": {"code": reply.status, "message": reply.error_message, "status": status}}
    h.send_json(reply.status, body)


def _method(path: str) -> str:
    """``generateContent`` for ``/v1/models/gemini-2.5-flash:generateContent``."""
    last = path.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else ""


def _model(path: str) -> str:
    return path.rsplit("/", 1)[-1].rsplit(":", 1)[0]


def _modalities(total: int, *, audio: int = 0, image: int = 0) -> list[Json]:
    """``[{"modality": "TEXT", "tokenCount": n}, ...]``: text is what audio and images leave."""
    counts = {"TEXT": total - audio - image, "AUDIO": audio, "IMAGE": image}
    return [{"modality": name, "tokenCount": n} for name, n in counts.items() if n > 0]


def _usage(r: Reply, candidates: int | None = None) -> Json:
    """``usageMetadata``; ``candidates`` (visible output so far) for a stream's running total."""
    prompt = r.input_tokens - r.tool_use_prompt_tokens
    visible = r.output_tokens - r.reasoning_tokens if candidates is None else candidates
    usage: Json = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": visible,
        "totalTokenCount": prompt + r.tool_use_prompt_tokens + visible + r.reasoning_tokens,
    }
    optional: Json = {
        "cachedContentTokenCount": r.cache_read_tokens,
        "toolUsePromptTokenCount": r.tool_use_prompt_tokens,
        "thoughtsTokenCount": r.reasoning_tokens,
        "promptTokensDetails": _modalities(
            prompt, audio=r.input_audio_tokens, image=r.input_image_tokens
        ),
        "cacheTokensDetails": _modalities(r.cache_read_tokens, audio=r.cache_audio_read_tokens),
        "candidatesTokensDetails": _modalities(visible, audio=min(r.output_audio_tokens, visible)),
        "toolUsePromptTokensDetails": _modalities(r.tool_use_prompt_tokens),
    }
    usage.update((key, value) for key, value in optional.items() if value)
    return usage


def _final_usage(r: Reply) -> Json:
    return r.raw_usage if r.raw_usage is not None else _usage(r)


def _response(r: Reply, model: str, rid: str, text: str, usage: Json, *, done: bool) -> Json:
    """One ``GenerateContentResponse``: the whole answer, or one chunk of a stream."""
    part: Json = {"text": text}
    if r.tool_call is not None:  # drives google-genai's automatic function calling
        part = {"functionCall": {"name": r.tool_call, "args": {}}}
    candidate: Json = {"content": {"role": "model", "parts": [part]}}
    if done:
        candidate["finishReason"] = "STOP"
        if r.web_searches > 0:
            queries = [f"q{n}" for n in range(1, r.web_searches + 1)]
            candidate["groundingMetadata"] = {"webSearchQueries": queries}
    candidate["index"] = 0
    response: Json = {"candidates": [candidate], "modelVersion": model, "responseId": rid}
    if r.include_usage:
        response["usageMetadata"] = usage
    return response


def generate_content(h: Handler, path: str, body: Json, reply: Reply) -> None:
    model, usage = reply.model or _model(path), _final_usage(reply)
    h.send_json(200, _response(reply, model, new_id(""), reply.text, usage, done=True))


def stream_generate_content(h: Handler, path: str, body: Json, reply: Reply) -> None:
    model, rid = reply.model or _model(path), new_id("")
    visible = reply.output_tokens - reply.reasoning_tokens
    total = len(pieces(reply.text))
    sent = 0

    def send(piece: str, *, done: bool) -> None:
        nonlocal sent
        sent += 1
        usage = _final_usage(reply) if done else _usage(reply, visible * sent // total)
        h.sse(_response(reply, model, rid, piece, usage, done=done))

    h.start_stream()
    texts = h.deltas(reply)
    held = next(texts)  # a piece is held back until we know whether it is the last
    try:
        for piece in texts:
            send(held, done=False)
            held = piece
    except Cut:  # the held piece was delivered before the cut: send it, unfinished
        send(held, done=False)
        raise
    send(held, done=True)
    h.end_stream()


def batch_embed_contents(h: Handler, path: str, body: Json, reply: Reply) -> None:
    requests = body.get("requests")
    count = len(requests) if isinstance(requests, list) else 1
    response: Json = {"embeddings": [{"values": [0.1, 0.2, 0.3]} for _ in range(count)]}
    if reply.include_usage:
        usage = {"promptTokenCount": reply.input_tokens, "totalTokenCount": reply.input_tokens}
        response["usageMetadata"] = reply.raw_usage if reply.raw_usage is not None else usage
    h.send_json(200, response)


def count_tokens(h: Handler, path: str, body: Json, reply: Reply) -> None:
    h.send_json(200, {"totalTokens": reply.input_tokens})


def _on(method: str) -> Callable[[str], bool]:
    return lambda path: _method(path) == method


ROUTES = (
    Route(_on("generateContent"), generate_content, error),
    Route(_on("streamGenerateContent"), stream_generate_content, error),
    Route(_on("batchEmbedContents"), batch_embed_contents, error),
    Route(_on("countTokens"), count_tokens, error),
)
