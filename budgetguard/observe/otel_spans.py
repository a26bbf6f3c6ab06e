"""What a guarded call's span says: its attributes, and whether a span is the call's own.

Pure functions of a ``CallRecord`` (no OpenTelemetry import), so they cost what they
look like and can be tested without an SDK.
"""

from __future__ import annotations

import re
from typing import Any

from .._core.records import CallRecord
from . import otel_names as n

__all__ = ["ERRORED", "enrichable", "error_type", "span_attributes", "usd_text"]

ERRORED = frozenset({"error", "denied"})
"""Outcomes whose span gets status ERROR and an ``error.type``."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def usd_text(nanos: int) -> str:
    """nano-USD as exact plain decimal text: ``f"{nanos_to_usd(nanos):f}"`` (``"0.00012345"``,
    ``"10"``, ``"0.000000001"``, never ``"1E-9"``), without a ``Decimal`` on the request path."""
    whole, frac = divmod(nanos, 1_000_000_000)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:09d}".rstrip("0")


def error_type(record: CallRecord) -> str:
    if record.outcome == "denied":
        return "budgetguard.BudgetExceeded"
    head = (record.error or "").split(":", 1)[0]
    return head if _IDENTIFIER.fullmatch(head) else "_OTHER"


def span_attributes(
    record: CallRecord, operation: str, *, include_tenant: bool, include_user: bool
) -> dict[str, Any]:
    """Every attribute the span of ``record``'s call carries."""
    attrs: dict[str, Any] = {
        n.OPERATION: operation,
        n.OUTCOME: record.outcome,
        n.COST_AMOUNT: record.cost / 1e9,
        n.COST_CURRENCY: "USD",
        n.COST_SOURCE: "local",
        n.COST_USD: usd_text(record.cost),
        n.RESERVED_USD: usd_text(record.estimate),
    }
    provider = n.provider_name(record.provider)
    if provider is not None:
        attrs[n.PROVIDER] = provider
    requested = record.requested_model or record.model
    if requested is not None:
        attrs[n.REQUEST_MODEL] = requested
    if record.model is not None and record.outcome != "denied":
        attrs[n.RESPONSE_MODEL] = record.model
    usage = record.usage
    if usage is not None:
        attrs[n.INPUT_TOKENS] = usage.input_tokens
        attrs[n.OUTPUT_TOKENS] = usage.output_tokens
        attrs[n.CACHE_READ] = usage.cache_read_tokens
        attrs[n.CACHE_WRITE] = usage.cache_write_tokens
        if usage.reasoning_tokens:
            attrs[n.REASONING] = usage.reasoning_tokens
    if record.feature is not None:
        attrs[n.FEATURE] = record.feature
    if include_tenant and record.tenant is not None:
        attrs[n.TENANT] = record.tenant
    if include_user and record.user is not None:
        attrs[n.USER] = record.user
    if record.output_cap is not None:
        attrs[n.OUTPUT_CAP] = record.output_cap
    if record.outcome in ERRORED:
        attrs[n.ERROR_TYPE] = error_type(record)
    if record.outcome == "denied":
        attrs.update(_refused(record, include_tenant=include_tenant, include_user=include_user))
    return attrs


def _refused(record: CallRecord, *, include_tenant: bool, include_user: bool) -> dict[str, str]:
    """Which limit refused: scope, window, unit, and its key unless that names a tenant
    or user the listener was not allowed to show."""
    counter = record.refused_by
    if counter is None:  # the per-request cap
        return {n.REFUSED_SCOPE: "request", n.REFUSED_WINDOW: "request"}
    attrs = {
        n.REFUSED_SCOPE: counter.scope,
        n.REFUSED_WINDOW: counter.window,
        n.REFUSED_UNIT: counter.unit,
    }
    shown = {"tenant": include_tenant, "user": include_user}.get(counter.scope, True)
    if shown and counter.subject:
        attrs[n.REFUSED_KEY] = counter.subject
    return attrs


def enrichable(span: Any, record: CallRecord, operation: str) -> bool:
    """Whether the current span is this call's own GenAI inference span.

    The rule: it is recording; its ``gen_ai.operation.name`` is an inference operation
    (chat, text_completion, generate_content, embeddings) or, with no such attribute,
    its name starts with ``"<operation> "``; its ``gen_ai.request.model``, when set,
    is the call's requested or sent model; and no guarded call enriched it already
    (no ``budgetguard.outcome``: a second call inside it gets a span of its own). A
    span whose attributes cannot be read (an API-only span from another SDK) is
    matched by name alone.
    """
    attributes = getattr(span, "attributes", None) or {}
    if n.OUTCOME in attributes:
        return False
    op = attributes.get(n.OPERATION)
    if op is None:
        name = getattr(span, "name", None)
        if not isinstance(name, str) or not name.startswith(operation + " "):
            return False
    elif op not in n.INFERENCE_OPERATIONS:
        return False
    model = attributes.get(n.REQUEST_MODEL)
    return model is None or model in (record.requested_model, record.model)
