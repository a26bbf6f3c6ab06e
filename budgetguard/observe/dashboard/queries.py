"""What the dashboard shows, aggregated in SQL: validated filters in, exact JSON out.

Every figure is summed by the database in integer nano-USD over a covering index
(``ledger/sql.py`` ``DASHBOARD_INDEXES``), then turned into ``Decimal`` strings
here: the browser only formats them, so what the page shows is what the ledger
holds. Time buckets are UTC hours from SQL (``at_us / HOUR_US``); a day is the sum
of its 24 hours, so both views read the same index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ..._core.errors import BudgetError, ConfigurationError
from ..._core.money import nanos_to_usd
from ..._core.usage import Usage
from ...pricing.book import PriceBook
from ..ledger.base import Ledger, parse_since
from ..ledger.sql import HOUR_US

__all__ = ["DIMENSIONS", "BadParameter", "Query", "Reader", "parse_query"]

DIMENSIONS: Mapping[str, str] = {
    "feature": "feature",
    "model": "model",
    "user": "user_id",
    "tenant": "tenant",
    "environment": "environment",
}
"""Filter and group names -> ledger columns."""

NONE = "(none)"
"""How a missing value (a call with no feature, tenant, ...) is shown, and filtered on."""

OTHER = "(other)"
BUCKETS = ("hour", "day")
NOTABLE = ("denied", "over_soft_limit", "error")
"""Outcomes listed under "recent denials and alerts"."""

_MAX_HOUR_BUCKETS = 24 * 31
_MAX_DAY_BUCKETS = 3660
_MAX_VALUE = 200


class BadParameter(ValueError):
    """A query parameter the dashboard refuses: answered as 400, naming it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


@dataclass(frozen=True, slots=True)
class Query:
    """One validated request: a period, a bucket size, a grouping and filters."""

    since_us: int
    until_us: int | None
    bucket: str
    by: str
    top: int
    limit: int
    filters: tuple[tuple[str, str], ...]


_COMMON = ("since", "until", *DIMENSIONS)


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadParameter(name, "given more than once")
    return values[0]


def _int(text: str | None, name: str, default: int, high: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= high:
        raise BadParameter(name, f"expected a whole number from 1 to {high}, got {text!r}")
    return int(text)


def _moment(text: str, name: str) -> int:
    try:
        return int(parse_since(text, field=name).timestamp() * 1_000_000)
    except (ConfigurationError, ValueError, OverflowError) as exc:
        message = str(exc).removeprefix(f"{name}: ")
        raise BadParameter(name, message) from None


def parse_query(
    params: Mapping[str, Sequence[str]],
    allowed: Sequence[str] = (),
    *,
    now_us: int | None = None,
) -> Query:
    """Validate ``params`` (a parsed query string): the common ones (since, until and
    one filter per dimension) plus ``allowed``; anything else is a ``BadParameter``."""
    known = (*_COMMON, *allowed)
    for name in params:
        if name not in known:
            raise BadParameter(name, f"unknown parameter; expected one of {', '.join(known)}")
    now = now_us if now_us is not None else int(datetime.now(UTC).timestamp() * 1_000_000)
    since = _moment(_one(params, "since") or "7d", "since")
    until_text = _one(params, "until")
    until = None if until_text is None else _moment(until_text, "until")
    if since >= (until if until is not None else now):
        raise BadParameter("since", "must be before until (or now)")
    span_h = ((until if until is not None else now) - since) // HOUR_US + 1
    bucket = _one(params, "bucket") or ("hour" if span_h <= 72 else "day")
    if bucket not in BUCKETS:
        raise BadParameter("bucket", f"expected hour or day, got {bucket!r}")
    if bucket == "hour" and span_h > _MAX_HOUR_BUCKETS:
        raise BadParameter("bucket", "hour buckets need a period of 31 days or less; use day")
    if bucket == "day" and span_h > _MAX_DAY_BUCKETS * 24:
        raise BadParameter("since", "a period of at most 3660 days")
    by = _one(params, "by") or "feature"
    if by not in DIMENSIONS:
        raise BadParameter("by", f"expected one of {', '.join(DIMENSIONS)}, got {by!r}")
    filters = []
    for name, column in DIMENSIONS.items():
        value = _one(params, name)
        if value is None:
            continue
        if not value or len(value) > _MAX_VALUE or not value.isprintable():
            raise BadParameter(name, f"expected 1 to {_MAX_VALUE} printable characters")
        filters.append((column, value))
    return Query(
        since_us=since,
        until_us=until,
        bucket=bucket,
        by=by,
        top=_int(_one(params, "top"), "top", 8, 100),
        limit=_int(_one(params, "limit"), "limit", 50, 500),
        filters=tuple(filters),
    )


def usd(nanos: int) -> str:
    """Exact dollars as a string (JSON has no decimals; floats would drift)."""
    return str(nanos_to_usd(nanos))


def _per_call(cost: int, calls: int) -> str | None:
    if not calls:
        return None
    return str((Decimal(cost) / calls / 1_000_000_000).quantize(Decimal("1e-9")))


def _usage(inp: int, cached: int, write: int, out: int, reason: int) -> Usage:
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=min(cached, inp),
        cache_write_tokens=write,
        reasoning_tokens=reason,
    )


def _label(bucket: int, size: str) -> str:
    moment = datetime.fromtimestamp(bucket * (3600 if size == "hour" else 86_400), UTC)
    return moment.strftime("%Y-%m-%d %H:00" if size == "hour" else "%Y-%m-%d")


class Reader:
    """The dashboard's queries on one ledger; ``prices`` re-prices downgraded calls."""

    def __init__(self, ledger: Ledger, prices: PriceBook | None = None) -> None:
        self.ledger = ledger
        self.prices = prices if prices is not None else PriceBook()

    def _where(self, q: Query, extra: str = "") -> tuple[str, list[Any]]:
        m = self.ledger.dialect.mark
        parts: list[str] = [f"at_us >= {m}"]
        params: list[Any] = [q.since_us]
        if q.until_us is not None:
            parts.append(f"at_us < {m}")
            params.append(q.until_us)
        for column, value in q.filters:
            if value == NONE:
                parts.append(f"{column} IS NULL")
            else:
                parts.append(f"{column} = {m}")
                params.append(value)
        if extra:
            parts.append(extra)
        return " AND ".join(parts), params

    def spend(self, q: Query) -> dict[str, Any]:
        """Spend per bucket stacked by ``q.by`` (the top ``q.top``, the rest as one),
        the cost per call of each, and the period's totals."""
        column = DIMENSIONS[q.by]
        where, params = self._where(q)
        hour = f"(at_us / {HOUR_US})"
        sql = f"""SELECT {column}, {hour}, COALESCE(SUM(cost_nanos), 0), COUNT(*),
    SUM(CASE WHEN outcome = 'denied' THEN 1 ELSE 0 END)
FROM {self.ledger.dialect.table} WHERE {where} GROUP BY {column}, {hour}"""
        per = 1 if q.bucket == "hour" else 24
        cells: dict[tuple[str, int], list[int]] = {}
        totals: dict[str, int] = {}
        cost_all = calls_all = denied_all = 0
        for key, hour_n, cost, calls, denied in self.ledger.select(sql, params):
            name = NONE if key is None else str(key)
            cell = cells.setdefault((name, int(hour_n) // per), [0, 0, 0])
            cell[0] += int(cost)
            cell[1] += int(calls)
            cell[2] += int(denied or 0)
            totals[name] = totals.get(name, 0) + int(cost)
            cost_all, calls_all = cost_all + int(cost), calls_all + int(calls)
            denied_all += int(denied or 0)
        unit_us = HOUR_US * per
        end = q.until_us - 1 if q.until_us is not None else None
        first = q.since_us // unit_us
        last = max([first, *(b for _, b in cells)] + ([end // unit_us] if end else []))
        buckets = list(range(first, last + 1))
        ranked = sorted(totals, key=lambda k: (-totals[k], k))
        shown = ranked[: q.top]
        series: dict[str, dict[int, list[int]]] = {k: {} for k in shown}
        if len(ranked) > q.top:
            series[OTHER] = {}
        for (name, b), (cost, calls, denied) in cells.items():
            row = series[name if name in shown else OTHER].setdefault(b, [0, 0, 0])
            row[0] += cost
            row[1] += calls
            row[2] += denied
        out = []
        for name, per_bucket in series.items():
            values = [per_bucket.get(b, [0, 0, 0]) for b in buckets]
            cost = sum(v[0] for v in values)
            calls = sum(v[1] for v in values)
            out.append(
                {
                    "key": name,
                    "usd": [usd(v[0]) for v in values],
                    "calls": [v[1] for v in values],
                    "cost_per_call_usd": [_per_call(v[0], v[1] - v[2]) for v in values],
                    "total_usd": usd(cost),
                    "total_calls": calls,
                }
            )
        return {
            "by": q.by,
            "bucket": q.bucket,
            "labels": [_label(b, q.bucket) for b in buckets],
            "series": out,
            "total": {
                "usd": usd(cost_all),
                "nanos": cost_all,
                "calls": calls_all,
                "denied": denied_all,
                "cost_per_call_usd": _per_call(cost_all, calls_all - denied_all),
            },
        }

    def breakdown(self, q: Query) -> dict[str, Any]:
        """Spend per ``q.by`` (model distribution, top users, top tenants), largest first."""
        column = DIMENSIONS[q.by]
        where, params = self._where(q)
        sql = f"""SELECT {column}, COALESCE(SUM(cost_nanos), 0), COUNT(*),
    SUM(CASE WHEN outcome = 'denied' THEN 1 ELSE 0 END)
FROM {self.ledger.dialect.table} WHERE {where} GROUP BY {column}"""
        found = [
            (NONE if k is None else str(k), int(c), int(n), int(d or 0))
            for k, c, n, d in self.ledger.select(sql, params)
        ]
        found.sort(key=lambda r: (-r[1], -r[2], r[0]))
        total = sum(r[1] for r in found)
        rows = found[: q.top]
        rest = found[q.top :]
        if rest:
            rows.append(
                (
                    f"(other: {len(rest)})",
                    sum(r[1] for r in rest),
                    sum(r[2] for r in rest),
                    sum(r[3] for r in rest),
                )
            )
        return {
            "by": q.by,
            "total_usd": usd(total),
            "groups": len(found),
            "rows": [
                {
                    "key": key,
                    "usd": usd(cost),
                    "calls": calls,
                    "denied": denied,
                    "share": None if not total else f"{cost * 100 / total:.1f}%",
                }
                for key, cost, calls, denied in rows
            ],
        }

    def savings(self, q: Query) -> dict[str, Any]:
        """Downgraded calls: what the asked model would have cost for the same usage,
        minus what was paid. Tokens are summed per (asked, used) pair in SQL, then
        the pair is priced once on the asked model (see ``_asked``)."""
        where, params = self._where(
            q,
            "outcome <> 'denied' AND requested_model IS NOT NULL AND model IS NOT NULL "
            "AND requested_model <> model",
        )
        sql = f"""SELECT requested_model, model, COUNT(*), COALESCE(SUM(input_tokens), 0),
    COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(cache_write_tokens), 0),
    COALESCE(SUM(output_tokens), 0), COALESCE(SUM(reasoning_tokens), 0),
    COALESCE(SUM(cost_nanos), 0)
FROM {self.ledger.dialect.table} WHERE {where} GROUP BY model, requested_model"""
        rows, saved_all, paid_all, asked_all = [], 0, 0, 0
        unpriced = []
        for asked_model, used, calls, inp, cached, write, out, reason, cost in self.ledger.select(
            sql, params
        ):
            tokens = (int(inp), int(cached), int(write), int(out), int(reason))
            try:
                asked: int | None = self._asked(str(asked_model), str(used), tokens, q)
            except (BudgetError, ValueError):
                asked = None
                unpriced.append(str(asked_model))
            paid = int(cost)
            saved = None if asked is None else asked - paid
            if asked is not None and saved is not None:
                asked_all += asked
                paid_all += paid
                saved_all += saved
            rows.append(
                {
                    "requested_model": str(asked_model),
                    "model": str(used),
                    "calls": int(calls),
                    "input_tokens": int(inp),
                    "output_tokens": int(out),
                    "paid_usd": usd(paid),
                    "asked_usd": None if asked is None else usd(asked),
                    "saved_usd": None if saved is None else usd(saved),
                }
            )
        rows.sort(key=lambda r: -Decimal(str(r["saved_usd"] or 0)))
        return {
            "rows": rows,
            "paid_usd": usd(paid_all),
            "asked_usd": usd(asked_all),
            "saved_usd": usd(saved_all),
            "unpriced": sorted(set(unpriced)),
        }

    def _asked(
        self, asked_model: str, used: str, tokens: tuple[int, int, int, int, int], q: Query
    ) -> int:
        """What ``asked_model`` would have charged. Flat per-token rates: the summed
        usage, priced once. Rates with long-context tiers or a per-request fee depend
        on each call: the pair's calls are then priced per distinct usage."""
        rates = self.prices.rates(asked_model)
        if rates.request_rate == 0 and rates.tier_for(2**62) is None:
            return rates.cost(_usage(*tokens))
        m = self.ledger.dialect.mark
        pair = f"outcome <> 'denied' AND requested_model = {m} AND model = {m}"
        where, params = self._where(q, pair)
        sql = f"""SELECT input_tokens, cached_tokens, cache_write_tokens, output_tokens,
    reasoning_tokens, COUNT(*)
FROM {self.ledger.dialect.table} WHERE {where}
GROUP BY input_tokens, cached_tokens, cache_write_tokens, output_tokens, reasoning_tokens"""
        total = 0
        for *each, calls in self.ledger.select(sql, [*params, asked_model, used]):
            total += rates.cost(_usage(*(int(n) for n in each))) * int(calls)
        return total

    def events(self, q: Query) -> dict[str, Any]:
        """The latest denials, soft-limit crossings and errors, newest first."""
        outcomes = ", ".join(f"'{o}'" for o in NOTABLE)
        where, params = self._where(q, f"outcome IN ({outcomes})")
        sql = f"""SELECT at_us, outcome, tenant, user_id, feature, requested_model, model,
    estimate_nanos, cost_nanos, error
FROM {self.ledger.dialect.table} WHERE {where} ORDER BY at_us DESC LIMIT {int(q.limit)}"""
        rows = []
        for at, outcome, tenant, user, feature, asked, model, est, cost, err in self.ledger.select(
            sql, params
        ):
            moment = datetime.fromtimestamp(int(at) / 1_000_000, UTC)
            rows.append(
                {
                    "at": moment.isoformat(timespec="seconds").replace("+00:00", "Z"),
                    "outcome": outcome,
                    "tenant": tenant,
                    "user": user,
                    "feature": feature,
                    "requested_model": asked,
                    "model": model,
                    "estimate_usd": usd(int(est)),
                    "cost_usd": usd(int(cost)),
                    "error": err,
                }
            )
        return {"rows": rows}
