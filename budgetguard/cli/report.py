"""``budgetguard report``: spend per group, from the ledger."""

from __future__ import annotations

import argparse
from typing import TextIO

from .._core.errors import ConfigurationError
from .._core.money import format_usd
from ..observe.ledger import parse_since
from ..observe.ledger.sql import Dialect
from .context import CliError, Context
from .render import emit, percent

__all__ = ["cmd_report"]


def cmd_report(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    try:
        since = parse_since(args.since, field="--since")
        until = None if args.until is None else parse_since(args.until, field="--until")
        Dialect("sqlite", "options").group_expr(args.by)  # a bad --by, before any I/O
    except ConfigurationError as exc:
        raise CliError(str(exc).replace("by: ", "--by: ", 1)) from None
    ledger = ctx.ledger()
    ledger.flush(5)  # an --app's live ledger: include its last rows
    report = ledger.report(args.by, since=since, until=until)
    total = sum(r.cost_nanos for r in report)
    shown = report[: args.top] if args.top else report
    rows = [
        {
            "key": r.key,
            "calls": r.calls,
            "ok": r.ok,
            "downgraded": r.downgraded,
            "fitted": r.fitted,
            "unpriced": r.unpriced,
            "overrun_nanos": r.overrun_nanos,
            "over_soft": r.over_soft,
            "denied": r.denied,
            "errors": r.errors,
            "input_tokens": r.input_tokens,
            "cached_tokens": r.cached_tokens,
            "output_tokens": r.output_tokens,
            "reasoning_tokens": r.reasoning_tokens,
            "cost": format_usd(r.cost_nanos),
            "cost_usd": r.cost,
            "cost_nanos": r.cost_nanos,
            "share": percent(r.cost_nanos, total),
        }
        for r in shown
    ]
    columns = [
        ("key", args.by.upper()),
        ("calls", "CALLS"),
        ("denied", "DENIED"),
        ("errors", "ERRORS"),
        ("downgraded", "DOWNGRADED"),
        ("input_tokens", "INPUT TOK"),
        ("output_tokens", "OUTPUT TOK"),
        ("cost", "COST"),
        ("share", "SHARE"),
    ]
    machine = (
        "key",
        "calls",
        "ok",
        "downgraded",
        "fitted",
        "unpriced",
        "overrun_nanos",
        "over_soft",
        "denied",
        "errors",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost_usd",
        "cost_nanos",
    )
    if any(r.over_soft for r in report):
        columns.insert(3, ("over_soft", "OVER SOFT"))
    emit(rows, columns, args.format, out, machine=machine)
    if args.format == "table":
        calls = sum(r.calls for r in report)
        period = f"since {since:%Y-%m-%d %H:%M} UTC"
        if until is not None:
            period += f" until {until:%Y-%m-%d %H:%M} UTC"
        if not report:
            out.write("(no calls recorded)\n")
        out.write(f"\ntotal {format_usd(total)} over {calls} calls, {period}\n")
    return 0
