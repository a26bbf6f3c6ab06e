"""One call's request, read before admission and adjusted after it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._core.records import LLMRequest
from .._engine.admission import Admission
from .._engine.config import Settings
from .._engine.flow import admit_flow
from ..stores.drive import Flow
from .base import Adapter
from .routes import Route

__all__ = ["RAW_HEADER", "PreparedCall", "raw_mode"]

RAW_HEADER = "x-stainless-raw-response"
"""Set by the OpenAI and Anthropic SDKs on calls made through ``with_raw_response``
(``true`` / ``raw``) and ``with_streaming_response`` (``stream``)."""


def raw_mode(kwargs: Mapping[str, Any]) -> str | None:
    headers = kwargs.get("extra_headers")
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if isinstance(name, str) and name.lower() == RAW_HEADER:
                return str(value)
    return None


def _as_sent(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The body the SDK sends: ``extra_body`` merged over the named arguments (the SDKs
    merge it last, so its fields win), for fields the SDK does not name yet."""
    extra = kwargs.get("extra_body")
    if not isinstance(extra, Mapping) or not extra:
        return kwargs
    return {**kwargs, **extra}


def _write_back(kwargs: dict[str, Any], sent: dict[str, Any], before: Mapping[str, Any]) -> None:
    """What the adapter changed in the merged body, put where the SDK will send it from:
    a field of ``extra_body`` is changed there (it would win over the named argument)."""
    extra = kwargs.get("extra_body")
    extra = dict(extra) if isinstance(extra, Mapping) else {}
    moved = False
    for key in {*before, *sent}:
        if key in sent and key in before and sent[key] is before[key]:
            continue
        if key in extra:
            moved = True
            if key in sent:
                extra[key] = sent[key]
            else:
                del extra[key]
        elif key in sent:
            kwargs[key] = sent[key]
        else:
            kwargs.pop(key, None)
    if moved:
        kwargs["extra_body"] = extra


@dataclass(slots=True)
class PreparedCall:
    """One call's request, read before admission and adjusted after it."""

    adapter: Adapter
    request: LLMRequest
    streaming: bool
    raw: str | None = None
    hide_usage_chunk: bool = False

    @classmethod
    def prepare(
        cls, adapter: Adapter, kwargs: dict[str, Any], route: Route, *, stream: bool
    ) -> PreparedCall:
        sent = _as_sent(kwargs)
        before = dict(sent)
        call = cls(adapter, route.request(adapter.request(sent)), stream, raw_mode(kwargs))
        if sent is not kwargs:  # a one-shot iterable read into a list goes on as the list
            _write_back(kwargs, sent, before)
        if stream and adapter.stream_usage_option:
            options = kwargs.get("stream_options")
            options = dict(options) if isinstance(options, Mapping) else {}
            if "include_usage" not in options:
                # The caller did not ask for the usage chunk: request it, and hide it
                # again so code reading chunk.choices[0] sees the stream it expects.
                options["include_usage"] = True
                kwargs["stream_options"] = options
                call.hide_usage_chunk = True
        return call

    def admitted(self, admission: Admission, kwargs: dict[str, Any]) -> None:
        """Send the model and output cap the policy chose: a downgrade rewrites
        ``model``, ``max_output_tokens`` or a fitted cap the SDK's output-cap field."""
        sent = _as_sent(kwargs)
        before = dict(sent)
        if admission.model is not None and admission.model != self.request.model:
            sent["model"] = admission.model
        if admission.output_cap is not None:
            model = admission.model or self.request.model
            self.adapter.cap_output(sent, admission.output_cap, self.request.priced_as(model))
        if sent is not kwargs:
            _write_back(kwargs, sent, before)

    def admit(self, settings: Settings) -> Flow[Admission]:
        return admit_flow(settings, self.request)
