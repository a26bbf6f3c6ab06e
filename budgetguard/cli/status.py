"""``budgetguard status``: each limit's spent, held, remaining and reset time.

Every limit in force counts: the code's (``Policy.limits``), the store's
(``bg.set_limit``) and the plans tenants and users are on (``bg.set_plan``), in
dollars, tokens or requests, hard or soft.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TextIO

from .._core.money import nanos_to_usd
from .context import CliError, Context
from .counters import status_rows, store_book
from .render import amount_text, emit, exact, percent, show_columns

__all__ = ["cmd_status"]

_COLUMNS = [
    ("scope", "SCOPE"),
    ("key", "KEY"),
    ("tenant", "TENANT"),
    ("window", "WINDOW"),
    ("limit_cell", "LIMIT"),
    ("spent_cell", "SPENT"),
    ("held_cell", "HELD"),
    ("remaining_cell", "REMAINING"),
    ("used", "USED"),
    ("resets_at", "RESETS"),
    ("enforce", "ENFORCE"),
    ("source", "SOURCE"),
]
_MACHINE = (
    "scope",
    "key",
    "tenant",
    "window",
    "unit",
    "limit",
    "spent",
    "held",
    "remaining",
    "overrun",
    "enforce",
    "source",
    "resets_at",
    # dollar rows only (None for tokens / requests), as before token limits:
    "limit_usd",
    "spent_usd",
    "held_usd",
    "remaining_usd",
    "spent_nanos",
    "held_nanos",
)


def cmd_status(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    book = store_book(ctx.store())
    if not (ctx.policy.limits or book.limits or (book.plans and ctx.policy.plans)):
        raise CliError(
            "status: no limits configured (in the policy, its plans or the store); "
            "pass --config or --app"
        )
    statuses, notes = status_rows(
        ctx, args.scope, args.key, args.tenant, book=book, unit=getattr(args, "unit", None)
    )
    rows = []
    for raw, owner in statuses:
        counter = raw.counter
        unit = counter.unit
        dollars = unit == "usd"
        resets = None if raw.resets_at is None else datetime.fromtimestamp(raw.resets_at, UTC)
        rows.append(
            {
                "scope": counter.scope,
                "key": "" if counter.scope == "global" else counter.subject,
                "tenant": owner if counter.scope == "user" else None,
                "window": counter.window,
                "unit": unit,
                "limit_cell": amount_text(unit, counter.limit),
                "spent_cell": amount_text(unit, raw.spent),
                "held_cell": amount_text(unit, raw.held),
                "remaining_cell": amount_text(unit, raw.remaining),
                "used": percent(raw.spent + raw.held, counter.limit),
                "resets_at": resets,
                "enforce": "warn" if counter.soft else "refuse",
                "source": counter.source,
                "limit": exact(unit, counter.limit),
                "spent": exact(unit, raw.spent),
                "held": exact(unit, raw.held),
                "remaining": exact(unit, raw.remaining),
                "overrun": exact(unit, raw.overrun),
                "limit_usd": nanos_to_usd(counter.limit) if dollars else None,
                "spent_usd": nanos_to_usd(raw.spent) if dollars else None,
                "held_usd": nanos_to_usd(raw.held) if dollars else None,
                "remaining_usd": nanos_to_usd(raw.remaining) if dollars else None,
                "spent_nanos": raw.spent if dollars else None,
                "held_nanos": raw.held if dollars else None,
            }
        )
    columns = show_columns(rows, _COLUMNS, {"tenant": None, "enforce": "refuse", "source": "code"})
    emit(rows, columns, args.format, out, machine=_MACHINE)
    if args.format == "table":
        for note in notes:
            out.write(f"({note})\n")
    return 0
