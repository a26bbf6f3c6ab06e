"""``budgetguard trial``: the same cases through several models, under one budget.

    budgetguard trial --models gpt-4o,gpt-4o-mini,claude-haiku-4-5 --cases cases.jsonl \\
        [--check exact|contains|json|python:module:func] [--usd 2.00] [--repeat 3] \\
        [--concurrency 4] [--within 2] [--max-tokens 1024] [--json]

One row per model (calls, tokens, cost, p50/p95 latency, accuracy, cost per
correct answer) and the cheapest model within ``--within`` points of the best
accuracy. Calls are written to the ledger (``--ledger``, ``--config``, ...)
when one is configured, with ``feature="trial"``. Bad input (an unknown model,
a malformed case line, a check that cannot load or raises) exits 2.
"""

from __future__ import annotations

import argparse
import json
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

from .._core.errors import ConfigurationError, UnknownModel
from .._core.money import format_usd, usd_to_nanos
from ..observe.ledger import Ledger, open_ledger
from ..trial import TrialResult, trial
from .context import CliError, Context
from .prices import live_prices_of
from .render import Row, emit

__all__ = ["register"]

COLUMNS = [
    ("model", "model"),
    ("calls", "calls"),
    ("input_tokens", "in tokens"),
    ("output_tokens", "out tokens"),
    ("cost_text", "cost"),
    ("per_call_text", "per call"),
    ("p50_text", "p50"),
    ("p95_text", "p95"),
    ("accuracy_text", "accuracy"),
    ("per_correct_text", "per correct"),
]
MACHINE = [
    "model",
    "calls",
    "errors",
    "input_tokens",
    "output_tokens",
    "cost",
    "cost_per_call",
    "p50_s",
    "p95_s",
    "correct",
    "accuracy",
    "cost_per_correct",
]


def register(
    commands: Any, *, common: argparse.ArgumentParser, output: argparse.ArgumentParser
) -> None:
    """Add the ``trial`` command to the CLI's subparsers."""
    parser = commands.add_parser(
        "trial",
        parents=[common, output],
        help="the same cases through several models: cost, latency, accuracy",
        description="Send every case to every model through instrumented clients, under "
        "one budget, and compare cost, latency and accuracy. Keys and base URLs come from "
        "the environment (OPENAI_API_KEY / OPENAI_BASE_URL, ANTHROPIC_API_KEY / "
        "ANTHROPIC_BASE_URL, GEMINI_API_KEY / GOOGLE_GEMINI_BASE_URL).",
    )
    parser.add_argument(
        "--models", required=True, metavar="M1,M2", help="gpt-4o,claude-haiku-4-5,..."
    )
    parser.add_argument(
        "--cases", required=True, metavar="PATH", help='JSONL: {"prompt"|"messages", "expected"}'
    )
    parser.add_argument(
        "--check",
        default="exact",
        metavar="CHECK",
        help="exact (default), contains, json, or python:module:func",
    )
    parser.add_argument("--usd", metavar="X", help="the whole trial's budget (2.00)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="each case N times")
    parser.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="calls at once (default 4)"
    )
    parser.add_argument(
        "--within",
        default="2",
        metavar="POINTS",
        help="pick the cheapest model this close to the best accuracy (default 2)",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=1024, metavar="N", help="output cap per call"
    )
    parser.set_defaults(handler=cmd_trial)


def _ms(seconds: float | None) -> str | None:
    return None if seconds is None else f"{seconds * 1000:.0f} ms"


def _usd(amount: Decimal | None) -> str | None:
    return None if amount is None else f"${amount:f}"


def rows_of(result: TrialResult) -> list[Row]:
    rows = []
    for row in result.rows:
        data = row.as_dict()
        data.update(
            cost_text=_usd(row.cost),
            per_call_text=_usd(row.cost_per_call),
            p50_text=_ms(row.p50_s),
            p95_text=_ms(row.p95_s),
            accuracy_text=None if row.accuracy is None else f"{row.accuracy}%",
            per_correct_text=_usd(row.cost_per_correct),
        )
        rows.append(data)
    return rows


def summary_lines(result: TrialResult) -> list[str]:
    """What the table does not say: the pick, the spend, and why it stopped."""
    lines = []
    if result.pick is not None:
        lines.append(f"cheapest within {result.within} points of the best accuracy: {result.pick}")
    budget = "" if result.usd is None else f" of {format_usd(usd_to_nanos(result.usd))}"
    spent = format_usd(usd_to_nanos(result.spent))
    lines.append(f"spent {spent}{budget} on {result.made} of {result.planned} calls")
    if result.stopped is not None:
        lines.append(result.stopped)
    return lines


def as_json(result: TrialResult) -> dict[str, Any]:
    def value(v: Any) -> Any:
        return f"{v:f}" if isinstance(v, Decimal) else v

    return {
        "models": [{k: value(r.as_dict()[k]) for k in MACHINE} for r in result.rows],
        "pick": result.pick,
        "within": value(result.within),
        "usd": value(result.usd),
        "spent": value(result.spent),
        "planned": result.planned,
        "made": result.made,
        "stopped": result.stopped,
    }


def cmd_trial(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    live_prices_of(ctx)  # prices_refresh in the config file: models only fetched data has
    usd = None
    if args.usd is not None:
        try:
            usd = Decimal(args.usd)
        except InvalidOperation:
            raise CliError(f"--usd: expected dollars (2.00), got {args.usd!r}") from None
    ledger: Ledger | None = ctx.ledger_obj
    own = ledger is None and ctx.ledger_url is not None
    if own and ctx.ledger_url is not None:
        try:  # a writer: created when missing (the read commands refuse that)
            ledger = open_ledger(ctx.ledger_url)
        except ConfigurationError as exc:
            raise CliError(f"{ctx.sources.get('ledger', 'ledger')}: {exc}") from None
    try:
        result = trial(
            args.models,
            args.cases,
            check=args.check,
            usd=usd,
            repeat=args.repeat,
            concurrency=args.concurrency,
            within=args.within,
            max_tokens=args.max_tokens,
            listeners=[] if ledger is None else [ledger],
        )
    except (ConfigurationError, UnknownModel) as exc:
        raise CliError(f"trial: {exc}") from None
    finally:
        if own and ledger is not None:
            ledger.close(timeout=5)
    if args.format == "json":
        out.write(json.dumps(as_json(result), indent=2) + "\n")
        return 0
    emit(rows_of(result), COLUMNS, args.format, out, machine=MACHINE)
    if args.format == "table":
        for line in summary_lines(result):
            out.write(line + "\n")
    return 0
