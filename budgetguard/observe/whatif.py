"""What-if repricing: what the ledger's recorded token usage would have cost on other models.

``reprice(ledger, ["gpt-4o-mini", "claude-haiku-4-5"], since="7d")`` answers, per
feature, "where would routing pay": the calls, what they cost, which models
served them and how fast, next to what the same tokens cost on each target.

The ledger does the adding up: one ``GROUP BY feature, model`` query sums the
token counts, cost and latency, so a million rows cost one scan, never a Python
loop. Each group's token totals are then priced on each target with the price
book's integer rates, so every figure is exact nano-USD (``Decimal`` at the edge).

What the totals can and cannot say:

- Tiered (cliff) prices depend on one *call's* input tokens, not on a sum. Rows
  are therefore grouped by the tier band their own input falls in (for every tier
  start of every target), and each band is priced at its own flat rates.
- A re-priced total is rounded up once, where a per-call bill rounds up each call:
  re-pricing a model on itself can come out below the recorded cost by less than
  one nano-dollar per call.
- Token counts are the recorded model's; another model's tokenizer may count the
  same text differently. One-hour cache writes are priced as ordinary cache writes
  (the ledger does not keep them apart), and audio / image details are not kept.
- Calls that carry no usage (``denied``, ``error``, ``unpriced``, or no model) are
  left out and counted in ``WhatIf.excluded``.
- A target's latency is only known where the ledger has calls of that model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from .._core.errors import ConfigurationError, UnknownModel
from .._core.money import nanos_to_usd
from .._core.usage import Usage
from ..pricing.book import PriceBook
from ..pricing.rates import ModelRates, rate_at
from .ledger.base import Ledger, parse_since

__all__ = [
    "INCLUDED_OUTCOMES",
    "Comparison",
    "Excluded",
    "ModelCalls",
    "Repriced",
    "WhatIf",
    "reprice",
    "target_rates",
]

INCLUDED_OUTCOMES: tuple[str, ...] = ("ok", "downgraded", "fitted", "over_soft_limit")
"""Outcomes whose rows carry the usage a provider billed; the others are left out."""

_MS = Decimal("0.001")


def _avg_latency(latency_us: int, calls: int) -> Decimal | None:
    """Average seconds, to the millisecond; None without calls."""
    if calls <= 0:
        return None
    return (Decimal(latency_us) / Decimal(calls) / Decimal(1_000_000)).quantize(_MS)


@dataclass(frozen=True, slots=True)
class ModelCalls:
    """One recorded model's calls within a feature (or the whole period): what they
    used, what they cost and how long they took."""

    model: str
    calls: int
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_nanos: int
    latency_us: int
    """Summed over the calls."""

    @property
    def cost(self) -> Decimal:
        return nanos_to_usd(self.cost_nanos)

    @property
    def avg_latency_s(self) -> Decimal | None:
        return _avg_latency(self.latency_us, self.calls)

    def __add__(self, other: ModelCalls) -> ModelCalls:
        return ModelCalls(
            self.model,
            self.calls + other.calls,
            self.input_tokens + other.input_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
            self.cost_nanos + other.cost_nanos,
            self.latency_us + other.latency_us,
        )


@dataclass(frozen=True, slots=True)
class Repriced:
    """The same calls on a target model: its cost for the recorded tokens, and its
    latency where the ledger has calls of that model (``latency_calls`` of them)."""

    model: str
    cost_nanos: int
    actual_nanos: int
    latency_calls: int = 0
    latency_us: int = 0

    @property
    def cost(self) -> Decimal:
        return nanos_to_usd(self.cost_nanos)

    @property
    def difference_nanos(self) -> int:
        """Target minus actual: below zero, routing there would have saved that much."""
        return self.cost_nanos - self.actual_nanos

    @property
    def difference(self) -> Decimal:
        return nanos_to_usd(self.difference_nanos)

    @property
    def ratio(self) -> Decimal | None:
        """Target / actual, to four places; None when nothing was spent."""
        if self.actual_nanos <= 0:
            return None
        return (Decimal(self.cost_nanos) / Decimal(self.actual_nanos)).quantize(Decimal("0.0001"))

    @property
    def avg_latency_s(self) -> Decimal | None:
        """None when the ledger has no call of this model here: unknown, not zero."""
        return _avg_latency(self.latency_us, self.latency_calls)


@dataclass(frozen=True, slots=True)
class Comparison:
    """One feature (``feature`` None: calls with no feature) or, with ``total``,
    the whole period: the recorded calls next to each target."""

    feature: str | None
    calls: int
    cost_nanos: int
    latency_us: int
    models: tuple[ModelCalls, ...]
    """The recorded models, most expensive first."""
    targets: tuple[Repriced, ...]
    """In the order asked."""
    total: bool = False

    @property
    def cost(self) -> Decimal:
        return nanos_to_usd(self.cost_nanos)

    @property
    def avg_latency_s(self) -> Decimal | None:
        return _avg_latency(self.latency_us, self.calls)


@dataclass(frozen=True, slots=True)
class Excluded:
    """Calls of one outcome left out: no usage to re-price (their cost, if any, is here)."""

    outcome: str
    calls: int
    cost_nanos: int

    @property
    def cost(self) -> Decimal:
        return nanos_to_usd(self.cost_nanos)


@dataclass(frozen=True, slots=True)
class WhatIf:
    """``reprice``'s answer: per feature (most expensive first), the total, what was left out."""

    features: tuple[Comparison, ...]
    total: Comparison
    excluded: tuple[Excluded, ...]
    since: datetime
    until: datetime | None
    targets: tuple[str, ...]


# -- SQL ---------------------------------------------------------------------------


def _band_sql(starts: Sequence[int]) -> str:
    """The tier band of a row's own input tokens: how many tier starts it exceeds."""
    if not starts:
        return "0"
    cases = " ".join(
        f"WHEN input_tokens > {int(start)} THEN {n}"
        for n, start in sorted(enumerate(starts, 1), reverse=True)
    )
    return f"CASE {cases} ELSE 0 END"


def _window(mark: str, until: bool) -> str:
    return f"at_us >= {mark}" + (f" AND at_us < {mark}" if until else "")


def _outcomes() -> str:
    return ", ".join(f"'{outcome}'" for outcome in INCLUDED_OUTCOMES)


def _usage_sql(table: str, mark: str, *, until: bool, feature: bool, starts: Sequence[int]) -> str:
    """One scan: usage per feature, model and tier band; the rows left out grouped
    apart by outcome (``lo`` = '' for the rows re-priced)."""
    only = f" AND feature = {mark}" if feature else ""
    return f"""SELECT feature, model, {_band_sql(starts)} AS band,
    CASE WHEN outcome IN ({_outcomes()}) AND model IS NOT NULL THEN ''
        WHEN outcome IN ({_outcomes()}) THEN 'no model' ELSE outcome END AS lo,
    COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(cached_tokens), 0),
    COALESCE(SUM(cache_write_tokens), 0), COALESCE(SUM(output_tokens), 0),
    COALESCE(SUM(reasoning_tokens), 0), COALESCE(SUM(cost_nanos), 0),
    COALESCE(SUM(latency_us), 0)
FROM {table}
WHERE {_window(mark, until)}{only}
GROUP BY feature, model, band, lo"""


# -- pricing -----------------------------------------------------------------------


def _flat(rates: ModelRates, input_tokens: int, calls: int) -> ModelRates:
    """``rates`` at the tier band of a call with ``input_tokens`` input, with the
    per-request fee charged ``calls`` times (``cost`` adds it once)."""
    return replace(
        rates,
        input_rate=rate_at(rates.input_rate, input_tokens),
        output_rate=rate_at(rates.output_rate, input_tokens),
        cache_read_rate=None
        if rates.cache_read_rate is None
        else rate_at(rates.cache_read_rate, input_tokens),
        cache_write_rate=None
        if rates.cache_write_rate is None
        else rate_at(rates.cache_write_rate, input_tokens),
        reasoning_rate=None
        if rates.reasoning_rate is None
        else rate_at(rates.reasoning_rate, input_tokens),
        cache_write_1h_rate=None
        if rates.cache_write_1h_rate is None
        else rate_at(rates.cache_write_1h_rate, input_tokens),
        request_rate=rates.request_rate * calls,
        detail_rates=(),
    )


def _band_sample(starts: Sequence[int], band: int) -> int:
    """An input-token count inside ``band``: tier rates apply once input exceeds a start."""
    return 0 if band == 0 else int(starts[band - 1]) + 1


def _price(rates: ModelRates, calls: ModelCalls, sample: int) -> int:
    usage = Usage(
        input_tokens=calls.input_tokens,
        output_tokens=calls.output_tokens,
        cache_read_tokens=calls.cached_tokens,
        cache_write_tokens=calls.cache_write_tokens,
        reasoning_tokens=calls.reasoning_tokens,
    )
    return _flat(rates, sample, calls.calls).cost(usage)


def _tier_starts(rates: ModelRates) -> set[int]:
    found: set[int] = set()
    for rate in (
        rates.input_rate,
        rates.output_rate,
        rates.cache_read_rate,
        rates.cache_write_rate,
        rates.reasoning_rate,
        rates.cache_write_1h_rate,
    ):
        tiers = getattr(rate, "tiers", ())
        found.update(int(start) for start, _ in tiers)
    return found


def target_rates(to: Sequence[str], prices: PriceBook | None = None) -> dict[str, ModelRates]:
    """Each target's rates, checked before any query: an unknown one raises
    ``UnknownModel`` naming it; an empty list raises ``ConfigurationError``."""
    book = prices if prices is not None else _current_book()
    names = list(dict.fromkeys(name.strip() for name in to if name.strip()))
    if not names:
        raise ConfigurationError("to: name at least one model to re-price on")
    return {name: book.rates(name) for name in names}


def _current_book() -> PriceBook:
    from .._engine import config

    return config.current().prices


def _canonical(book: PriceBook, model: str) -> tuple[str, str] | None:
    try:
        rates = book.rates(model)
    except (UnknownModel, ConfigurationError):
        return None
    return rates.provider, rates.model


# -- the query ---------------------------------------------------------------------


_Row = tuple[str | None, str, int, ModelCalls]


def reprice(
    ledger: Ledger,
    to: Sequence[str],
    *,
    feature: str | None = None,
    since: datetime | timedelta | str | None = "7d",
    until: datetime | timedelta | str | None = None,
    prices: PriceBook | None = None,
) -> WhatIf:
    """What the period's calls (one ``feature``, or all) would have cost on each model
    of ``to``, per feature, beside what they cost and how fast they were.

    ``prices``: the price book (default: the configured one, overrides included).
    Raises ``UnknownModel`` for a target nobody can price and ``ConfigurationError``
    for a bad ``since`` / ``until``, before reading anything. Rows not yet flushed
    are not included.
    """
    book = prices if prices is not None else _current_book()
    targets = target_rates(to, book)
    start = parse_since(since if since is not None else datetime(1970, 1, 1, tzinfo=UTC))
    end = None if until is None else parse_since(until, field="until")
    starts = sorted(set().union(*(_tier_starts(r) for r in targets.values())))
    params: list[object] = [int(start.timestamp() * 1_000_000)]
    if end is not None:
        params.append(int(end.timestamp() * 1_000_000))
    if feature is not None:
        params.append(feature)
    dialect = ledger.dialect
    has_end, has_feature = end is not None, feature is not None
    found = ledger._query(
        _usage_sql(dialect.table, dialect.mark, until=has_end, feature=has_feature, starts=starts),
        params,
    )
    rows: list[_Row] = [
        (
            None if r[0] is None else str(r[0]),
            str(r[1]),
            int(r[2]),
            ModelCalls(str(r[1]), *(int(n) for n in r[4:12])),
        )
        for r in found
        if r[3] == ""
    ]
    left_out: dict[str, tuple[int, int]] = {}
    for r in found:
        if r[3] != "":
            calls, cost = left_out.get(str(r[3]), (0, 0))
            left_out[str(r[3])] = (calls + int(r[4]), cost + int(r[10]))
    excluded = tuple(
        Excluded(outcome, calls, cost)
        for outcome, (calls, cost) in sorted(left_out.items(), key=lambda e: (-e[1][0], e[0]))
    )
    features = sorted({r[0] for r in rows}, key=lambda f: (f is None, f or ""))
    compared = [
        _compare(f, [r for r in rows if r[0] == f], targets, starts, book) for f in features
    ]
    compared.sort(key=lambda c: -c.cost_nanos)
    return WhatIf(
        features=tuple(compared),
        total=_total(compared, rows, targets, book),
        excluded=excluded,
        since=start,
        until=end,
        targets=tuple(targets),
    )


def _by_model(rows: Sequence[_Row]) -> tuple[ModelCalls, ...]:
    merged: dict[str, ModelCalls] = {}
    for _, model, _, calls in rows:
        merged[model] = merged[model] + calls if model in merged else calls
    return tuple(sorted(merged.values(), key=lambda m: (-m.cost_nanos, m.model)))


def _latency(
    models: Sequence[ModelCalls], target: str, rates: ModelRates, book: PriceBook
) -> tuple[int, int]:
    """Calls and summed latency of the recorded models that are ``target`` (the same
    name, or the same model to the price book: ``gpt-4o-mini-2024-07-18``)."""
    same = (rates.provider, rates.model)
    matching = [m for m in models if m.model == target or _canonical(book, m.model) == same]
    return sum(m.calls for m in matching), sum(m.latency_us for m in matching)


def _compare(
    feature: str | None,
    rows: Sequence[_Row],
    targets: dict[str, ModelRates],
    starts: Sequence[int],
    book: PriceBook,
) -> Comparison:
    models = _by_model(rows)
    actual = sum(m.cost_nanos for m in models)
    bands: dict[int, ModelCalls] = {}
    for _, _, band, calls in rows:
        bands[band] = bands[band] + calls if band in bands else calls
    repriced = []
    for name, rates in targets.items():
        cost = sum(
            _price(rates, calls, _band_sample(starts, band)) for band, calls in bands.items()
        )
        n, latency = _latency(models, name, rates, book)
        repriced.append(Repriced(name, cost, actual, n, latency))
    return Comparison(
        feature=feature,
        calls=sum(m.calls for m in models),
        cost_nanos=actual,
        latency_us=sum(m.latency_us for m in models),
        models=models,
        targets=tuple(repriced),
    )


def _total(
    compared: Sequence[Comparison],
    rows: Sequence[_Row],
    targets: dict[str, ModelRates],
    book: PriceBook,
) -> Comparison:
    """The sum of the features (so the table adds up), latency over every call."""
    models = _by_model(rows)
    actual = sum(c.cost_nanos for c in compared)
    repriced = []
    for n, (name, rates) in enumerate(targets.items()):
        calls, latency = _latency(models, name, rates, book)
        cost = sum(c.targets[n].cost_nanos for c in compared)
        repriced.append(Repriced(name, cost, actual, calls, latency))
    return Comparison(
        feature=None,
        calls=sum(c.calls for c in compared),
        cost_nanos=actual,
        latency_us=sum(c.latency_us for c in compared),
        models=models,
        targets=tuple(repriced),
        total=True,
    )
