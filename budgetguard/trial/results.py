"""A trial's outcome: one row per model, and the pick."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from .._core.money import nanos_to_usd

__all__ = ["ModelRow", "Outcome", "TrialResult", "pick", "summarize"]

_NANO = Decimal("0.000000001")
_TENTH = Decimal("0.1")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One call of the trial: which model and case, what it cost (nano-USD, from its
    ``CallRecord``), its tokens, latency, and whether the check passed."""

    model: str
    case: int
    cost: int
    input_tokens: int
    output_tokens: int
    latency_s: float
    correct: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One model's figures. Money is exact ``Decimal`` dollars (per-call and per-correct
    amounts rounded half-even to the nano-dollar); ``accuracy`` is a percentage of
    the calls made, to 0.1; latencies are seconds (nearest-rank percentiles)."""

    model: str
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: Decimal
    cost_per_call: Decimal | None
    p50_s: float | None
    p95_s: float | None
    correct: int
    accuracy: Decimal | None
    cost_per_correct: Decimal | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class TrialResult:
    """``rows`` in the order the models were given; ``pick`` the cheapest (per call)
    model within ``within`` points of the best accuracy; ``stopped`` says why the
    trial ended early (None: every call was made); ``planned`` / ``made`` count calls."""

    rows: tuple[ModelRow, ...]
    pick: str | None
    within: Decimal
    usd: Decimal | None
    spent: Decimal
    planned: int
    made: int
    stopped: str | None = None
    outcomes: tuple[Outcome, ...] = field(default=(), repr=False)

    def row(self, model: str) -> ModelRow:
        return next(r for r in self.rows if r.model == model)


def _percentile(values: Sequence[float], pct: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-pct * len(ordered) // 100))  # nearest rank
    return round(ordered[rank - 1], 6)


def _per(nanos: int, count: int) -> Decimal | None:
    if count <= 0:
        return None
    return (nanos_to_usd(nanos) / count).quantize(_NANO, ROUND_HALF_EVEN).normalize()


def summarize(model: str, outcomes: Sequence[Outcome]) -> ModelRow:
    mine = [o for o in outcomes if o.model == model]
    cost = sum(o.cost for o in mine)
    correct = sum(o.correct for o in mine)
    calls = len(mine)
    accuracy = None
    if calls:
        accuracy = (Decimal(correct * 100) / calls).quantize(_TENTH, ROUND_HALF_EVEN)
    return ModelRow(
        model=model,
        calls=calls,
        errors=sum(o.error is not None for o in mine),
        input_tokens=sum(o.input_tokens for o in mine),
        output_tokens=sum(o.output_tokens for o in mine),
        cost=nanos_to_usd(cost),
        # Over the calls that answered: one that failed cost nothing and says nothing of
        # the model's price per answer (a model whose calls all failed has none, and is
        # never picked).
        cost_per_call=_per(cost, calls - sum(o.error is not None for o in mine)),
        p50_s=_percentile([o.latency_s for o in mine if o.error is None], 50),
        p95_s=_percentile([o.latency_s for o in mine if o.error is None], 95),
        correct=correct,
        accuracy=accuracy,
        cost_per_correct=_per(cost, correct),
    )


def pick(rows: Sequence[ModelRow], within: Decimal) -> str | None:
    """The cheapest model per call among those within ``within`` points of the best
    accuracy (ties: the more accurate, then the first given)."""
    ran = [r for r in rows if r.accuracy is not None and r.cost_per_call is not None]
    if not ran:
        return None
    best = max(r.accuracy for r in ran if r.accuracy is not None)
    near = [r for r in ran if r.accuracy is not None and r.accuracy >= best - within]
    order = {r.model: n for n, r in enumerate(rows)}
    chosen = min(
        near,
        key=lambda r: (r.cost_per_call, -(r.accuracy or 0), order[r.model]),
    )
    return chosen.model
