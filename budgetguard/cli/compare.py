"""``budgetguard compare``: the ledger's recorded usage re-priced on other models.

    budgetguard compare --to gpt-4o-mini,claude-haiku-4-5 [--feature F] [--since 7d]

Per feature: the calls, what they cost on the models that served them and how
fast those were, then what the same tokens would have cost on each ``--to``
model (and its latency, where the ledger has calls of it). The sums are done
by the ledger (``observe.whatif.reprice``); amounts are exact.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, TextIO

from .._core.errors import ConfigurationError, UnknownModel
from .._core.money import format_usd
from ..observe.ledger import parse_since
from ..observe.whatif import Comparison, WhatIf, reprice, target_rates
from .context import CliError, Context
from .render import Row, emit, percent

__all__ = ["cmd_compare", "register"]


def register(
    commands: Any, *, common: argparse.ArgumentParser, output: argparse.ArgumentParser
) -> None:
    """Add the ``compare`` command to the CLI's subparsers."""
    parser = commands.add_parser(
        "compare",
        parents=[common, output],
        help="what the ledger's calls would have cost on other models",
        description="Re-price the ledger's recorded token usage on other models, per "
        "feature: cost and average latency side by side, where routing would pay. "
        "Denied, failed and unpriced calls carry no usage and are left out (counted).",
    )
    parser.add_argument(
        "--to",
        required=True,
        metavar="MODELS",
        help="comma-separated models to re-price on (gpt-4o-mini,claude-haiku-4-5)",
    )
    parser.add_argument("--feature", metavar="F", help="only this feature's calls")
    parser.add_argument("--since", default="7d", help="7d, 24h, 30m, or an ISO date (default: 7d)")
    parser.add_argument("--until", help="end of the period (default: now)")
    parser.set_defaults(handler=cmd_compare)


def cmd_compare(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    """Everything the user typed is checked before the ledger is opened."""
    try:
        since = parse_since(args.since, field="--since")
        until = None if args.until is None else parse_since(args.until, field="--until")
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    from .._engine import config  # the book an --app configured (price overrides)

    book = config.current().prices
    models = args.to.split(",")
    try:
        target_rates(models, book)
    except UnknownModel as exc:
        raise CliError(f"--to: {exc}") from None
    except ConfigurationError as exc:
        raise CliError(f"--to: {str(exc).removeprefix('to: ')}") from None
    ledger = ctx.ledger()
    ledger.flush(5)  # an --app's live ledger: include its last rows
    result = reprice(ledger, models, feature=args.feature, since=since, until=until, prices=book)
    if args.format == "table":
        emit(_table_rows(result), _COLUMNS, "table", out, machine=())
        _footer(result, out)
    else:
        emit(_machine_rows(result), (), args.format, out, machine=_MACHINE)
    return 0


_COLUMNS = [
    ("feature", "FEATURE"),
    ("model", "MODEL"),
    ("calls", "CALLS"),
    ("cost", "COST"),
    ("difference", "VS ACTUAL"),
    ("share", "OF ACTUAL"),
    ("latency", "AVG LATENCY (s)"),
]

_MACHINE = (
    "feature",
    "total",
    "kind",
    "model",
    "outcome",
    "calls",
    "cost_usd",
    "cost_nanos",
    "difference_usd",
    "difference_nanos",
    "ratio",
    "avg_latency_s",
    "latency_calls",
)


def _feature_name(comparison: Comparison) -> str:
    if comparison.total:
        return "TOTAL"
    return comparison.feature if comparison.feature is not None else "(no feature)"


def _block(comparison: Comparison) -> list[Row]:
    """One feature's rows: each recorded model, the actual total, each target."""
    rows: list[Row] = []
    base = {"feature": comparison.feature, "total": comparison.total}
    for m in comparison.models:
        rows.append(
            {
                **base,
                "kind": "recorded",
                "model": m.model,
                "calls": m.calls,
                "cost_nanos": m.cost_nanos,
                "cost_usd": m.cost,
                "avg_latency_s": m.avg_latency_s,
                "latency_calls": m.calls,
            }
        )
    rows.append(
        {
            **base,
            "kind": "actual",
            "model": None,
            "calls": comparison.calls,
            "cost_nanos": comparison.cost_nanos,
            "cost_usd": comparison.cost,
            "avg_latency_s": comparison.avg_latency_s,
            "latency_calls": comparison.calls,
        }
    )
    for t in comparison.targets:
        rows.append(
            {
                **base,
                "kind": "repriced",
                "model": t.model,
                "calls": comparison.calls,
                "cost_nanos": t.cost_nanos,
                "cost_usd": t.cost,
                "difference_nanos": t.difference_nanos,
                "difference_usd": t.difference,
                "ratio": t.ratio,
                "avg_latency_s": t.avg_latency_s,
                "latency_calls": t.latency_calls,
            }
        )
    return rows


def _machine_rows(result: WhatIf) -> list[Row]:
    """Flat rows for JSON / CSV: ``kind`` recorded | actual | repriced | excluded;
    ``total`` true for the period's total; amounts as exact decimal strings."""
    rows = [row for c in (*result.features, result.total) for row in _block(c)]
    rows.extend(
        {
            "feature": None,
            "total": True,
            "kind": "excluded",
            "outcome": e.outcome,
            "calls": e.calls,
            "cost_nanos": e.cost_nanos,
            "cost_usd": e.cost,
        }
        for e in result.excluded
    )
    return rows


def _table_rows(result: WhatIf) -> list[Row]:
    rows: list[Row] = []
    for comparison in (*result.features, result.total):
        if not comparison.calls and not comparison.total:
            continue
        name = _feature_name(comparison)
        for n, row in enumerate(_block(comparison)):
            kind = row["kind"]
            if kind == "actual" and len(comparison.models) == 1:
                continue  # the one recorded model's row says it all
            model = row["model"]
            shown: Row = {
                "feature": name if n == 0 else "",
                "model": {"recorded": model, "actual": "= actual", "repriced": f"-> {model}"}[kind],
                "calls": row["calls"],
                "cost": format_usd(row["cost_nanos"]),
                "latency": row["avg_latency_s"],
                "difference": "",
                "share": "",
            }
            if kind == "repriced":
                difference = row["difference_nanos"]
                shown["difference"] = ("+" if difference > 0 else "") + format_usd(difference)
                shown["share"] = percent(row["cost_nanos"], comparison.cost_nanos)
            rows.append(shown)
    return rows


def _footer(result: WhatIf, out: TextIO) -> None:
    period = f"since {result.since:%Y-%m-%d %H:%M} UTC"
    if result.until is not None:
        period += f" until {result.until:%Y-%m-%d %H:%M} UTC"
    if not result.features:
        out.write("(no calls with usage recorded)\n")
    out.write(
        f"\n{result.total.calls} calls {period}, re-priced on their recorded token counts\n"
        "(another model's tokenizer may count the same text differently).\n"
        "AVG LATENCY of a '->' model: its recorded calls here; '-' = none in the ledger.\n"
    )
    if result.excluded:
        out.write(f"left out (no usage to re-price): {_excluded_text(result.excluded)}\n")


def _excluded_text(excluded: Sequence[Any]) -> str:
    parts = []
    for e in excluded:
        cost = f", {format_usd(e.cost_nanos)}" if e.cost_nanos else ""
        parts.append(f"{e.calls} {e.outcome}{cost}")
    return "; ".join(parts)
