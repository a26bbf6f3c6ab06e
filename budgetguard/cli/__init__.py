"""``budgetguard``: where budgets stand, where the money went, and resets.

    budgetguard status  [--scope S] [--key K] [--tenant T]     each limit: spent, held, remaining
    budgetguard report  --by feature --since 7d                spend per group, from the ledger
    budgetguard limits                                         the configured policy
    budgetguard reset   --scope user --key u-42 [--yes]        zero counters in a Redis store

Every command finds the policy, the store and the ledger from ``--config
file.toml|.json``, ``--app module:attr`` (a callable that calls
``bg.configure``), the environment (``BUDGETGUARD_CONFIG``,
``BUDGETGUARD_APP``, ``BUDGETGUARD_STORE``, ``BUDGETGUARD_LEDGER``) and the
``--store`` / ``--ledger`` flags; later ones win. Tables by default,
``--json`` / ``--csv`` for scripts. Exit status: 0 ok, 1 the store or
ledger failed, 2 a bad option or configuration (the message names it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from .._core.errors import BudgetError, StoreUnavailable
from ..observe.ledger.sql import GROUPS
from .context import CliError, Context, load_context
from .counters import STATUS_SCOPES, counter_pattern, parse_counter_key
from .limits import cmd_limits
from .report import cmd_report
from .reset import cmd_reset
from .status import cmd_status

__all__ = ["CliError", "Context", "counter_pattern", "load_context", "main", "parse_counter_key"]


# -- argument parsing --------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where budgets live")
    where.add_argument(
        "--config", metavar="PATH", help="JSON or TOML file: policy, store, ledger, prefix"
    )
    where.add_argument(
        "--app", metavar="MODULE:ATTR", help="a callable that calls bg.configure(...)"
    )
    where.add_argument("--store", metavar="URL", help="redis://host:6379/0 ($BUDGETGUARD_STORE)")
    where.add_argument(
        "--ledger",
        metavar="URL",
        help="sqlite:///budgetguard.db or postgresql://... ($BUDGETGUARD_LEDGER)",
    )
    output = argparse.ArgumentParser(add_help=False)
    fmt = output.add_mutually_exclusive_group()
    fmt.add_argument(
        "--json", dest="format", action="store_const", const="json", help="JSON, exact amounts"
    )
    fmt.add_argument(
        "--csv", dest="format", action="store_const", const="csv", help="CSV, exact amounts"
    )
    output.set_defaults(format="table")

    parser = argparse.ArgumentParser(
        prog="budgetguard",
        description="Budgets in front of LLM calls: status, spend reports, limits, resets.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = commands.add_parser(
        "status", parents=[common, output], help="each limit: spent, held, remaining, reset time"
    )
    status.add_argument("--scope", choices=STATUS_SCOPES)
    status.add_argument("--key", help="one tenant / user / feature / model")
    status.add_argument("--tenant", help="the tenant of --key (users are counted per tenant)")

    report = commands.add_parser(
        "report", parents=[common, output], help="spend per group, from the ledger"
    )
    report.add_argument(
        "--by",
        default="feature",
        metavar="GROUP",
        help=f"{', '.join(GROUPS)} or tag:NAME (default: feature)",
    )
    report.add_argument("--since", default="7d", help="7d, 24h, 30m, or an ISO date (default: 7d)")
    report.add_argument("--until", help="end of the period (default: now)")
    report.add_argument("--top", type=int, default=0, metavar="N", help="only the N largest")

    commands.add_parser("limits", parents=[common, output], help="show the configured policy")

    reset = commands.add_parser(
        "reset", parents=[common], help="zero the spend of counters in a Redis store"
    )
    reset.add_argument("--scope", choices=STATUS_SCOPES)
    reset.add_argument("--key", help="one tenant / user / feature / model (default: all)")
    reset.add_argument("--tenant", help="only this tenant's users")
    reset.add_argument("--window", help="only counters of this window (day, month, ...)")
    reset.add_argument("--all", action="store_true", help="every counter under the prefix")
    reset.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    return parser


_COMMANDS: dict[str, Callable[[Context, argparse.Namespace, TextIO], int]] = {
    "status": cmd_status,
    "report": cmd_report,
    "limits": cmd_limits,
    "reset": cmd_reset,
}


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failure, 2 bad option or configuration)."""
    stdout = out if out is not None else sys.stdout
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    ctx: Context | None = None
    try:
        ctx = load_context(config=args.config, app=args.app, store=args.store, ledger=args.ledger)
        return _COMMANDS[args.command](ctx, args, stdout)
    except CliError as exc:
        print(f"budgetguard: error: {exc}", file=sys.stderr)
        return 2
    except (StoreUnavailable, BudgetError, OSError) as exc:
        print(f"budgetguard: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if type(exc).__module__.startswith(("redis", "psycopg", "sqlite3")):
            print(f"budgetguard: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        raise
    finally:
        if ctx is not None:
            ctx.close()


if __name__ == "__main__":
    sys.exit(main())
