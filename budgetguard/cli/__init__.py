"""``budgetguard``: where budgets stand, where the money went, and resets.

    budgetguard status  [--scope S] [--key K] [--tenant T]     each limit: spent, held, remaining
    budgetguard report  --by feature --since 7d                spend per group, from the ledger
    budgetguard limits                                         limits in force: code, plans, store
    budgetguard limits set tenant acme --usd 500 --window month   store a limit (Redis)
    budgetguard limits rm tenant acme [--window month]         remove a stored limit
    budgetguard limits plan acme pro                           a tenant (--user U) on a plan
    budgetguard reset   --scope user --key u-42 [--yes]        zero counters in a Redis store
    budgetguard metrics --port 9464 [--once]                   budgets for a Prometheus scrape
    budgetguard compare --to gpt-4o-mini [--since 7d]          re-price recorded usage
    budgetguard dashboard --ledger sqlite:///bg.db             a local web page
    budgetguard prices [MODEL ...] [--diff]                    the rates in use, and where from
    budgetguard trial --models gpt-4o,gpt-4o-mini --cases c.jsonl --usd 2   would it answer as well?

Every command finds the policy, the store and the ledger from ``--config
file.toml|.json``, ``--app module:attr`` (a callable that calls
``bg.configure``), the environment (``BUDGETGUARD_CONFIG``,
``BUDGETGUARD_APP``, ``BUDGETGUARD_STORE``, ``BUDGETGUARD_LEDGER``) and the
``--store`` / ``--ledger`` flags; later ones win. Tables by default,
``--json`` / ``--csv`` for scripts. Exit status: 0 ok, 1 the store or
ledger failed, or there was nothing to remove (``limits rm``, ``limits plan --clear``),
2 a bad option or configuration (the message names it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from .._core.errors import BudgetError, StoreUnavailable
from ..observe.ledger.sql import GROUPS
from . import compare, dashboard, metrics, prices, trial
from .context import CliError, Context, load_context
from .counters import STATUS_SCOPES, UNIT_SUFFIXES, counter_pattern, parse_counter_key
from .limits import cmd_limits
from .report import cmd_report
from .reset import cmd_reset
from .status import cmd_status

__all__ = ["CliError", "Context", "counter_pattern", "load_context", "main", "parse_counter_key"]


# -- argument parsing --------------------------------------------------------------


UNITS = ("usd", *UNIT_SUFFIXES)


def _where(*, nested: bool = False) -> argparse.ArgumentParser:
    """--config / --app / --store / --ledger. ``nested``: for a sub-command of a command
    that has them too (``limits set``), so that leaving them out there does not undo
    what was given before it (``limits --store URL set ...``)."""
    default = argparse.SUPPRESS if nested else None
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where budgets live")
    where.add_argument(
        "--config",
        metavar="PATH",
        default=default,
        help="JSON or TOML file: policy, store, ledger, prefix",
    )
    where.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        default=default,
        help="a callable that calls bg.configure(...)",
    )
    where.add_argument(
        "--store",
        metavar="URL",
        default=default,
        help="redis://host:6379/0 ($BUDGETGUARD_STORE)",
    )
    where.add_argument(
        "--ledger",
        metavar="URL",
        default=default,
        help="sqlite:///budgetguard.db or postgresql://... ($BUDGETGUARD_LEDGER)",
    )
    return common


def _limits_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    output: argparse.ArgumentParser,
) -> None:
    limits = commands.add_parser(
        "limits",
        parents=[common, output],
        help="the limits in force (code, plans, store); set, rm, plan",
        description="Without an action: every limit in force - the code's, each plan's "
        "and the store's. set / rm / plan change what a shared (Redis) store holds.",
    )
    actions = limits.add_subparsers(dest="limits_command", metavar="ACTION")
    nested = _where(nested=True)
    edit = actions.add_parser(
        "set",
        parents=[nested],
        help="store a limit (replaces a stored one of the same scope, key and window)",
    )
    edit.add_argument(
        "scope", metavar="SCOPE", help="global, tenant, user, feature, model, request"
    )
    edit.add_argument(
        "key", nargs="?", metavar="KEY", help="one tenant / user / ... (default: every one)"
    )
    edit.add_argument("--usd", metavar="X", help="dollars per window (500, 0.25)")
    edit.add_argument("--tokens", metavar="N", help="input + output tokens per window")
    edit.add_argument("--requests", metavar="N", help="calls per window")
    edit.add_argument("--window", metavar="W", help="minute, hour, day, week, month, total")
    edit.add_argument(
        "--warn", action="store_true", help="a soft limit: calls over it pass, recorded"
    )
    remove = actions.add_parser("rm", parents=[nested], help="remove a stored limit")
    remove.add_argument("scope", metavar="SCOPE")
    remove.add_argument("key", nargs="?", metavar="KEY")
    remove.add_argument("--window", metavar="W", help="which one, when the key has several")
    plan = actions.add_parser(
        "plan", parents=[nested], help="put a tenant (or --user) on a plan, or take it off"
    )
    plan.add_argument(
        "names", nargs="*", metavar="TENANT PLAN", help="the tenant, then the plan (- or none: off)"
    )
    plan.add_argument("--user", metavar="USER", help="put this user on the plan instead")
    plan.add_argument("--clear", action="store_true", help="take the tenant / user off its plan")


def _parser() -> argparse.ArgumentParser:
    common = _where()
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
    status.add_argument("--unit", choices=UNITS, help="only limits of dollars, tokens or requests")

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

    _limits_parser(commands, common, output)

    reset = commands.add_parser(
        "reset", parents=[common], help="zero the spend of counters in a Redis store"
    )
    reset.add_argument("--scope", choices=STATUS_SCOPES)
    reset.add_argument("--key", help="one tenant / user / feature / model (default: all)")
    reset.add_argument("--tenant", help="only this tenant's users")
    reset.add_argument("--window", help="only counters of this window (day, month, ...)")
    reset.add_argument("--unit", choices=UNITS, help="only counters of dollars, tokens or requests")
    reset.add_argument("--all", action="store_true", help="every counter under the prefix")
    reset.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    # each adds its parser and its handler
    for command in (metrics, compare, dashboard, prices, trial):
        command.register(commands, common=common, output=output)
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
        handler = _COMMANDS.get(args.command) or args.handler
        return int(handler(ctx, args, stdout))
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
