"""``budgetguard dashboard``: a local web page over the ledger (spend) and the store (budgets).

    budgetguard dashboard --ledger sqlite:///budgetguard.db [--store redis://...] [--port 8765]

Read-only: the ledger is opened without creating anything (a path with no
database is an error), the store is only read. Binds 127.0.0.1 unless
``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any, TextIO

from .._core.errors import ConfigurationError
from ..stores.memory import MemoryStore
from .context import CliError, Context
from .counters import status_rows, store_book
from .render import amount_text, exact, percent

__all__ = ["budget_rows", "register"]


def register(
    commands: Any, *, common: argparse.ArgumentParser, output: argparse.ArgumentParser
) -> None:
    """Add the ``dashboard`` command to the CLI's subparsers."""
    parser = commands.add_parser(
        "dashboard",
        parents=[common],
        help="a local web page: spend over time, budgets, models, users, savings, denials",
        description="Serve a read-only dashboard of the ledger (and the store's budgets) "
        "on http://127.0.0.1:PORT/. Every asset ships in the package: it works offline.",
    )
    parser.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0: any)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only)",
    )
    parser.add_argument(
        "--refresh",
        type=int,
        default=30,
        metavar="SECONDS",
        help="how often the page reloads its data (default 30; 0: never)",
    )
    parser.set_defaults(handler=cmd_dashboard)


def budget_rows(ctx: Context) -> list[dict[str, Any]]:
    """Every budget in force (code, plans, store) as JSON rows, like ``status --json``."""
    book = store_book(ctx.store())
    if not (ctx.policy.limits or book.limits or (book.plans and ctx.policy.plans)):
        return []
    statuses, _notes = status_rows(ctx, None, None, None, book=book)
    rows = []
    for raw, owner in statuses:
        counter = raw.counter
        unit = counter.unit
        used = raw.spent + raw.held
        resets = None if raw.resets_at is None else datetime.fromtimestamp(raw.resets_at, UTC)
        near = counter.warn_at if counter.warn_at is not None else counter.limit * 8 // 10
        rows.append(
            {
                "key": f"{counter.scope}:{counter.subject}:{counter.window}:{unit}",
                "scope": counter.scope,
                "subject": "" if counter.scope == "global" else counter.subject,
                "tenant": owner if counter.scope == "user" else None,
                "window": counter.window,
                "unit": unit,
                "limit": str(exact(unit, counter.limit)),
                "spent": str(exact(unit, raw.spent)),
                "held": str(exact(unit, raw.held)),
                "remaining": str(exact(unit, raw.remaining)),
                "limit_text": amount_text(unit, counter.limit),
                "spent_text": amount_text(unit, raw.spent),
                "held_text": amount_text(unit, raw.held),
                "remaining_text": amount_text(unit, raw.remaining),
                "used": percent(used, counter.limit),
                "hot": counter.limit > 0 and used >= near,
                "resets_at": None if resets is None else resets.strftime("%Y-%m-%d %H:%M UTC"),
                "enforce": "warn" if counter.soft else "refuse",
                "source": counter.source,
            }
        )
    return rows


def cmd_dashboard(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    from .._engine.config import current
    from ..observe.dashboard import DashboardServer

    ledger = ctx.ledger()  # a missing SQLite file: a CliError here, nothing created
    ledger.total(since="1m")  # unreadable (not a database, no server): fail now, not per request
    budgets = None
    # An in-process memory store here is a new, empty one (not the app's): only a
    # shared store (Redis) says where budgets stand.
    if not isinstance(ctx.store(), MemoryStore):  # connects once, before the threads share it
        budgets = lambda: budget_rows(ctx)  # noqa: E731
    try:
        server = DashboardServer(
            ledger,
            budgets=budgets,
            prices=current().prices,
            host=args.host,
            port=args.port,
            refresh_s=args.refresh,
        )
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(
            f"--port: cannot listen on {args.host}:{args.port}: {exc.strerror}"
        ) from None
    out.write(f"budgetguard dashboard on {server.url} (read-only; Ctrl-C to stop)\n")
    if not server.loopback:
        out.write(
            f"warning: --host {args.host}: other machines can reach this page; "
            "it has no login, anyone who can reach it sees every figure\n"
        )
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
