"""``budgetguard limits``: every limit in force - the code's, each plan's, the store's.

``limits set`` / ``limits rm`` / ``limits plan`` change what the store holds
(``limits_edit.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .._core.errors import StoreUnavailable
from .._core.limitbook import EMPTY_BOOK, LimitBook
from .._core.policy import Policy
from .._engine.limits import ListedLimit, listed
from .context import Context
from .counters import store_book
from .limits_edit import cmd_plan, cmd_rm, cmd_set
from .render import Row, emit, limit_text, printable, show_columns

__all__ = ["cmd_limits", "key_cell", "redact"]

_KEYLESS = ("global", "run", "request")
_COLUMNS = [
    ("scope", "SCOPE"),
    ("key_cell", "KEY"),
    ("window", "WINDOW"),
    ("limit", "LIMIT"),
    ("enforce", "ENFORCE"),
    ("source", "SOURCE"),
    ("note_cell", "NOTE"),
]
_MACHINE = (
    "scope",
    "key",
    "window",
    "usd",
    "tokens",
    "requests",
    "enforce",
    "source",
    "note",
    "on_plan",
)


def cmd_limits(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    action = getattr(args, "limits_command", None)
    if action == "set":
        return cmd_set(ctx, args, out)
    if action == "rm":
        return cmd_rm(ctx, args, out)
    if action == "plan":
        return cmd_plan(ctx, args, out)
    return _cmd_list(ctx, args, out)


def key_cell(scope: str, key: str | None) -> str:
    """``*``: every tenant / user / feature / model; empty for keyless scopes."""
    return key or ("" if scope in _KEYLESS else "*")


def _rows(policy: Policy, items: Sequence[ListedLimit]) -> list[Row]:
    rows = []
    for item in items:
        limit = item.limit
        note = item.note
        if item.source.startswith("plan:"):
            who = ", ".join(item.on_plan) if item.on_plan else "no one"
            note = f"on it: {who}" + (f"; {note}" if note else "")  # for people only
        rows.append(
            {
                "scope": limit.scope,
                "key": limit.key,
                "key_cell": key_cell(limit.scope, limit.key),
                "window": limit.resolved_window,
                "limit": limit_text(limit),
                "usd": limit.usd,
                "tokens": limit.tokens,
                "requests": limit.requests,
                "enforce": "warn" if limit.soft or policy.enforce == "warn" else "refuse",
                "source": item.source,
                "note": item.note,
                "note_cell": note,
                "on_plan": list(item.on_plan),
            }
        )
    return rows


def _assignments(policy: Policy, book: LimitBook) -> list[dict[str, Any]]:
    return [
        {"scope": scope, "key": key, "plan": plan, "known": plan in policy.plans}
        for (scope, key), plan in sorted(book.plans.items())
    ]


def _read_book(ctx: Context) -> tuple[LimitBook, str | None]:
    """The store's limits and plans; when it cannot be read, none and why: the code's
    limits are still worth listing (the store may be what is being debugged)."""
    try:
        return store_book(ctx.store()), None
    except (StoreUnavailable, OSError) as error:
        return EMPTY_BOOK, f"{type(error).__name__}: {error}"
    except Exception as error:
        if type(error).__module__.startswith("redis"):
            return EMPTY_BOOK, f"{type(error).__name__}: {error}"
        raise


def _cmd_list(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    policy = ctx.policy
    book, failure = _read_book(ctx)
    if failure is not None:
        print(f"budgetguard: the store's limits could not be read: {failure}", file=sys.stderr)
    rows = _rows(policy, listed(policy, book))
    assignments = _assignments(policy, book)
    if args.format == "json":
        data = policy.model_dump(mode="json")
        data["limits"] = [{k: _exact(row[k]) for k in _MACHINE} for row in rows]
        data["assignments"] = assignments
        data["store"] = redact(ctx.store_url or "memory://")
        data["store_error"] = failure
        out.write(json.dumps(data, indent=2) + "\n")
        return 0
    if args.format == "csv":
        for row in rows:
            row["on_plan"] = "; ".join(row["on_plan"])
        emit(rows, _COLUMNS, "csv", out, machine=_MACHINE)
        return 0
    defaults = {"enforce": "refuse", "source": "code", "note_cell": ""}
    emit(rows, show_columns(rows, _COLUMNS, defaults), "table", out, machine=_MACHINE)
    if not rows:
        out.write("(no limits configured)\n")
    _trailer(ctx, assignments, out)
    if failure is not None:
        out.write(f"(the store's limits and plans could not be read: {printable(failure)})\n")
    return 0


def _exact(value: Any) -> Any:
    return value if value is None or isinstance(value, int | str | list) else f"{value:f}"


def _trailer(ctx: Context, assignments: list[dict[str, Any]], out: TextIO) -> None:
    policy = ctx.policy
    out.write(f"\non_exceed: {policy.on_exceed}\n")
    if policy.enforce == "warn":
        out.write("enforce: warn (every limit is soft: calls over it pass, recorded)\n")
    for start in policy.downgrade:
        out.write(f"downgrade: {' -> '.join([start, *policy.downgrade_chain(start)])}\n")
    if policy.alerts:
        alerts = ", ".join(
            f"{(t.fraction * 100).normalize():f}%" + (f" ({t.scope})" if t.scope else "")
            for t in policy.alerts
        )
        out.write(f"alerts: {alerts}\n")
    for name in policy.plans:
        on = [f"{a['scope']} {a['key']}" for a in assignments if a["plan"] == name]
        out.write(printable(f"plan {name}: {', '.join(on) if on else 'no one'}") + "\n")
    for a in assignments:
        if not a["known"]:
            out.write(
                printable(
                    f"plan {a['plan']!r} of {a['scope']} {a['key']}: not in the policy, ignored"
                )
                + "\n"
            )
    out.write(
        f"timezone: {policy.timezone}   lease: {policy.lease_s:g}s   "
        f"block_timeout: {policy.block_timeout:g}s\n"
    )
    out.write(f"store: {redact(ctx.store_url or 'memory://')}\n")


_SECRET_PARAMS = ("pass", "pwd", "secret", "token", "key", "auth", "credential")


def redact(url: str) -> str:
    """Hide credentials in a URL before printing it: ``user:***@`` and secret-looking
    query values (``?password=***``)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        creds, _, host = netloc.rpartition("@")
        user = creds.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in creds else netloc
    query = "&".join(
        f"{name}=***" if any(word in name.lower() for word in _SECRET_PARAMS) else f"{name}={v}"
        for name, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
