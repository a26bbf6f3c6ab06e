"""The dashboard's "What if" view: ``budgetguard compare`` (``observe.whatif.reprice``)
as JSON - the period's recorded usage re-priced on other models, per feature."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..._core.errors import BudgetError
from ...pricing.book import PriceBook
from ..ledger.base import Ledger
from ..whatif import Comparison, reprice
from .queries import NONE, BadParameter, Query, usd

__all__ = ["MAX_TARGETS", "parse_targets", "what_if"]

MAX_TARGETS = 5


def parse_targets(params: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """``to=gpt-4o-mini,claude-haiku-4-5``: one to five model names."""
    values = params.get("to") or []
    if len(values) != 1:
        raise BadParameter(
            "to", "expected one list of models, e.g. to=gpt-4o-mini,claude-haiku-4-5"
        )
    names = tuple(dict.fromkeys(n.strip() for n in values[0].split(",") if n.strip()))
    if not 1 <= len(names) <= MAX_TARGETS or any(len(n) > 200 for n in names):
        raise BadParameter("to", f"expected 1 to {MAX_TARGETS} model names, comma-separated")
    return names


def _seconds(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _row(comparison: Comparison) -> dict[str, Any]:
    feature = comparison.feature
    return {
        "key": "(total)" if comparison.total else (NONE if feature is None else feature),
        "calls": comparison.calls,
        "usd": usd(comparison.cost_nanos),
        "avg_latency_s": _seconds(comparison.avg_latency_s),
        "models": [m.model for m in comparison.models],
        "targets": [
            {
                "model": t.model,
                "usd": usd(t.cost_nanos),
                "difference_usd": usd(t.difference_nanos),
                "ratio": None if t.ratio is None else str(t.ratio),
                "avg_latency_s": _seconds(t.avg_latency_s),
            }
            for t in comparison.targets
        ],
    }


def what_if(ledger: Ledger, prices: PriceBook, q: Query, to: Sequence[str]) -> dict[str, Any]:
    """Per feature and in total: what was paid, and what each model of ``to`` would
    have cost for the same tokens (a feature filter only: re-pricing reads by feature)."""
    feature = None
    for column, value in q.filters:
        if column != "feature":
            name = "user" if column == "user_id" else column
            raise BadParameter(name, "the what-if comparison filters by feature only")
        if value == NONE:
            raise BadParameter("feature", "the what-if comparison needs a named feature")
        feature = value
    since = datetime.fromtimestamp(q.since_us / 1_000_000, UTC)
    until = None if q.until_us is None else datetime.fromtimestamp(q.until_us / 1_000_000, UTC)
    try:
        found = reprice(ledger, to, feature=feature, since=since, until=until, prices=prices)
    except BudgetError as exc:  # a model nobody can price, named
        raise BadParameter("to", str(exc)) from None
    return {
        "targets": list(found.targets),
        "rows": [_row(c) for c in found.features],
        "total": _row(found.total),
        "excluded": [
            {"outcome": e.outcome, "calls": e.calls, "usd": usd(e.cost_nanos)}
            for e in found.excluded
        ],
    }
