"""The ledger's SQL, once per dialect: table layout, inserts and the report query.

One table, one row per guarded call. Money is integer nano-USD (``BIGINT``),
times are integer microseconds since the epoch (UTC), so sums are exact and
the same query runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from ..._core.errors import ConfigurationError

__all__ = ["COLUMNS", "DASHBOARD_INDEXES", "GROUPS", "HOUR_US", "Dialect", "check_identifier"]

COLUMNS: Final = (
    "at_us",
    "outcome",
    "environment",
    "tenant",
    "user_id",
    "feature",
    "tags",
    "requested_model",
    "model",
    "input_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "estimate_nanos",
    "cost_nanos",
    "latency_us",
    "reservation_id",
    "error",
)
"""Insert order of a row (``LedgerRow.values()``)."""

GROUPS: Final = (
    "feature",
    "user",
    "tenant",
    "model",
    "requested_model",
    "environment",
    "outcome",
    "day",
)
"""What ``report(by=...)`` groups by, besides ``tag:<name>``."""

HOUR_US: Final = 3_600_000_000
"""An hour in microseconds: the dashboard's time buckets are ``at_us / HOUR_US``."""

DASHBOARD_INDEXES: Final = (
    ("feature_hour", f"feature, (at_us / {HOUR_US}), at_us, cost_nanos, outcome"),
    (
        "model_pair",
        "model, requested_model, at_us, cost_nanos, outcome, input_tokens, cached_tokens, "
        "cache_write_tokens, output_tokens, reasoning_tokens",
    ),
    ("user_at", "user_id, at_us, cost_nanos, outcome"),
    ("tenant_at", "tenant, at_us, cost_nanos, outcome"),
    ("outcome_at", "outcome, at_us"),
)
"""(name suffix, columns) of the indexes ``Dialect.dashboard_indexes`` creates."""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TAG_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")


def check_identifier(value: str, field: str) -> str:
    """Table and schema names go into SQL text: letters, digits and ``_`` only."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ConfigurationError(
            f"{field}: expected a SQL identifier (letters, digits, _), got {value!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Dialect:
    """SQL text for one backend; ``table`` is already validated and qualified."""

    name: Literal["sqlite", "postgres"]
    table: str

    @property
    def mark(self) -> str:
        return "?" if self.name == "sqlite" else "%s"

    def create(self) -> list[str]:
        key = (
            "id INTEGER PRIMARY KEY AUTOINCREMENT"
            if self.name == "sqlite"
            else "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
        )
        index = self.table.replace(".", "_") + "_at"
        return [
            f"""CREATE TABLE IF NOT EXISTS {self.table} (
    {key},
    at_us BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    environment TEXT,
    tenant TEXT,
    user_id TEXT,
    feature TEXT,
    tags TEXT NOT NULL DEFAULT '{{}}',
    requested_model TEXT,
    model TEXT,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens BIGINT NOT NULL DEFAULT 0,
    estimate_nanos BIGINT NOT NULL DEFAULT 0,
    cost_nanos BIGINT NOT NULL DEFAULT 0,
    latency_us BIGINT NOT NULL DEFAULT 0,
    reservation_id TEXT,
    error TEXT
)""",
            f"CREATE INDEX IF NOT EXISTS {index.split('.')[-1]} ON {self.table} (at_us)",
            *self.dashboard_indexes(),
        ]

    def dashboard_indexes(self) -> list[str]:
        """Covering indexes for the dashboard's aggregations (issue 16): each query
        reads one index, in group order, never the table and never a sort. The
        feature index groups by hour through an expression (day = 24 hours)."""
        base = self.table.replace(".", "_")
        return [
            f"CREATE INDEX IF NOT EXISTS {base}_{name} ON {self.table} ({columns})"
            for name, columns in DASHBOARD_INDEXES
        ]

    def insert(self) -> str:
        marks = ", ".join([self.mark] * len(COLUMNS))
        return f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES ({marks})"

    def group_expr(self, by: str) -> tuple[str, list[str]]:
        """The SQL expression to group by, and its parameters."""
        if by.startswith("tag:"):
            name = by[4:]
            if not _TAG_NAME.match(name):
                raise ConfigurationError(
                    f"by: tag name must be letters, digits, '_', '.', '-'; got {name!r}"
                )
            if self.name == "sqlite":
                return f"json_extract(tags, {self.mark})", [f'$."{name}"']
            return f"(tags::jsonb ->> {self.mark})", [name]
        if by == "day":
            if self.name == "sqlite":
                return "strftime('%Y-%m-%d', at_us / 1000000, 'unixepoch')", []
            return "to_char(to_timestamp(at_us / 1000000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')", []
        if by not in GROUPS:
            raise ConfigurationError(
                f"by: expected one of {', '.join(GROUPS)} or tag:<name>, got {by!r}"
            )
        return ("user_id" if by == "user" else by), []

    def report(self, by: str, *, until: bool) -> tuple[str, list[str]]:
        expr, params = self.group_expr(by)
        m = self.mark
        window = f"at_us >= {m}" + (f" AND at_us < {m}" if until else "")

        def count(outcome: str) -> str:
            return f"SUM(CASE WHEN outcome = '{outcome}' THEN 1 ELSE 0 END)"

        sql = f"""SELECT {expr} AS k,
    COUNT(*),
    {count("ok")}, {count("downgraded")}, {count("denied")}, {count("error")},
    COALESCE(SUM(input_tokens), 0), COALESCE(SUM(cached_tokens), 0),
    COALESCE(SUM(output_tokens), 0), COALESCE(SUM(reasoning_tokens), 0),
    COALESCE(SUM(cost_nanos), 0),
    {count("fitted")}, {count("unpriced")},
    COALESCE(SUM(CASE WHEN outcome <> 'denied' AND cost_nanos > estimate_nanos
        THEN cost_nanos - estimate_nanos ELSE 0 END), 0),
    {count("over_soft_limit")}
FROM {self.table}
WHERE {window}
GROUP BY k
ORDER BY 11 DESC, 2 DESC"""
        return sql, params

    def total(self, *, until: bool) -> str:
        m = self.mark
        window = f"at_us >= {m}" + (f" AND at_us < {m}" if until else "")
        return f"SELECT COALESCE(SUM(cost_nanos), 0), COUNT(*) FROM {self.table} WHERE {window}"

    def rows(self, *, until: bool, limit: int) -> str:
        m = self.mark
        window = f"at_us >= {m}" + (f" AND at_us < {m}" if until else "")
        return (
            f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE {window} "
            f"ORDER BY at_us, id LIMIT {int(limit)}"
        )
