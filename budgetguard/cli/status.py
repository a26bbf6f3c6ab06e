"""``budgetguard status``: each limit's spent, held, remaining and reset time."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TextIO

from .._core.money import format_usd, nanos_to_usd
from .context import CliError, Context
from .counters import status_rows
from .render import emit, percent

__all__ = ["cmd_status"]


def cmd_status(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    if not ctx.policy.limits:
        raise CliError("status: no limits configured; pass --config or --app")
    statuses, notes = status_rows(ctx, args.scope, args.key, args.tenant)
    rows = []
    for raw, owner in statuses:
        counter = raw.counter
        resets = None if raw.resets_at is None else datetime.fromtimestamp(raw.resets_at, UTC)
        rows.append(
            {
                "scope": counter.scope,
                "key": "" if counter.scope == "global" else counter.subject,
                "tenant": owner if counter.scope == "user" else None,
                "window": counter.window,
                "limit": format_usd(counter.limit),
                "spent": format_usd(raw.spent),
                "held": format_usd(raw.held),
                "remaining": format_usd(raw.remaining),
                "used": percent(raw.spent + raw.held, counter.limit),
                "resets_at": resets,
                "limit_usd": nanos_to_usd(counter.limit),
                "spent_usd": nanos_to_usd(raw.spent),
                "held_usd": nanos_to_usd(raw.held),
                "remaining_usd": nanos_to_usd(raw.remaining),
                "spent_nanos": raw.spent,
                "held_nanos": raw.held,
            }
        )
    columns = [
        ("scope", "SCOPE"),
        ("key", "KEY"),
        ("tenant", "TENANT"),
        ("window", "WINDOW"),
        ("limit", "LIMIT"),
        ("spent", "SPENT"),
        ("held", "HELD"),
        ("remaining", "REMAINING"),
        ("used", "USED"),
        ("resets_at", "RESETS"),
    ]
    if not any(r["tenant"] for r in rows):
        columns.remove(("tenant", "TENANT"))
    machine = (
        "scope",
        "key",
        "tenant",
        "window",
        "limit_usd",
        "spent_usd",
        "held_usd",
        "remaining_usd",
        "spent_nanos",
        "held_nanos",
        "resets_at",
    )
    emit(rows, columns, args.format, out, machine=machine)
    if args.format == "table":
        for note in notes:
            out.write(f"({note})\n")
    return 0
