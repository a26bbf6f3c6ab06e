"""``budgetguard metrics``: serve the store's budgets (and a ledger's spend) for a scrape.

    budgetguard metrics --port 9464 [--bind 127.0.0.1] [--store URL] [--ledger URL]
    budgetguard metrics --once          the exposition text on stdout, for scripts
                                        (exit status 1 when the store or ledger failed)

A process of its own cannot see the counts another process's ``Prometheus``
listener keeps: what it serves is what every process shares. From the store,
spent / held / limit of every limit in force (the code's, the store's, the plans'),
read on each scrape - the fleet-wide truth. From a ledger (``--ledger``), the
spend and calls of the last ``--since`` per feature and per model, as gauges. A
store or ledger that fails a read gives ``budgetguard_store_up 0`` /
``budgetguard_ledger_up 0``; the scrape still answers.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from typing import Any, TextIO

from .._core.counters import CounterStatus
from ..observe.ledger.base import parse_since
from ..observe.prometheus import OVERFLOW, require_client
from ..observe.prometheus_budgets import budget_families
from .context import CliError, Context
from .counters import STATUS_SCOPES, status_rows, store_book

__all__ = ["StoreCollector", "cmd_metrics", "register"]

LEDGER_SERIES = 500
"""Features (or models) exported one by one from the ledger; the rest are summed under
``_overflow_`` (a label per feature ever used would grow without bound)."""

log = logging.getLogger("budgetguard.cli")


def register(
    commands: Any, *, common: argparse.ArgumentParser, output: argparse.ArgumentParser
) -> None:
    """Add the ``metrics`` command to the CLI's subparsers."""
    parser = commands.add_parser(
        "metrics",
        parents=[common],
        help="serve budgets (and a ledger's spend) for a Prometheus scrape",
        description="Serve spent / held / limit of every limit in force, read from the "
        "store on each scrape (and, with --ledger, the spend of the last --since per "
        "feature and model) at http://BIND:PORT/metrics until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=9464, help="port to listen on (default: 9464)")
    parser.add_argument(
        "--bind", default="127.0.0.1", metavar="ADDR", help="address (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--once", action="store_true", help="print the exposition text once and exit"
    )
    parser.add_argument(
        "--include-tenant", action="store_true", help="gauges of tenant limits, one per tenant"
    )
    parser.add_argument(
        "--include-user", action="store_true", help="gauges of user limits, one per user"
    )
    parser.add_argument(
        "--since", default="24h", help="the ledger period of the spend gauges (default: 24h)"
    )
    parser.add_argument(
        "--max-budgets",
        type=int,
        default=1000,
        metavar="N",
        help="at most N budget series (default: 1000)",
    )
    parser.add_argument(
        "--namespace", default="budgetguard", help="metric name prefix (default: budgetguard)"
    )
    parser.set_defaults(handler=cmd_metrics)


class StoreCollector:
    """A Prometheus collector reading the context's store (and ledger) on each scrape."""

    def __init__(
        self,
        ctx: Context,
        *,
        namespace: str = "budgetguard",
        include_tenant: bool = False,
        include_user: bool = False,
        since: str = "24h",
        max_budgets: int = 1000,
    ) -> None:
        self.core = require_client()
        self.ctx = ctx
        self.namespace = namespace
        self.scopes = [
            s
            for s in STATUS_SCOPES
            if (s != "tenant" or include_tenant) and (s != "user" or include_user)
        ]
        self.since = since
        self.max_budgets = max_budgets
        self.store_errors = 0
        self.ledger_errors = 0

    def collect(self) -> Iterator[Any]:
        core, ns = self.core, self.namespace
        up = core.GaugeMetricFamily(
            f"{ns}_store_up", "1 if this scrape read the budgets from the store, else 0"
        )
        omitted = core.GaugeMetricFamily(
            f"{ns}_budgets_omitted", "Budget series left out past --max-budgets"
        )
        try:
            statuses = self._statuses()
        except Exception as exc:  # the scrape answers whatever the store does
            self.store_errors += 1
            log.warning("budgetguard metrics: cannot read the store: %r", exc)
            statuses = None
        up.add_metric([], 0.0 if statuses is None else 1.0)
        kept = (statuses or [])[: self.max_budgets]
        omitted.add_metric([], float(len(statuses or []) - len(kept)))
        errors = core.CounterMetricFamily(f"{ns}_store_errors", "Scrapes the store failed")
        errors.add_metric([], self.store_errors)
        yield from (up, errors, omitted)
        yield from budget_families(core, ns, kept)
        if self.ctx.ledger_url is not None or self.ctx.ledger_obj is not None:
            yield from self._ledger_families()

    def _statuses(self) -> list[CounterStatus]:
        book = store_book(self.ctx.store())
        found: list[CounterStatus] = []
        for scope in self.scopes:
            rows, _notes = status_rows(self.ctx, scope, None, None, book=book)
            found.extend(raw for raw, _owner in rows)
        return found

    def _ledger_families(self) -> Iterator[Any]:
        core, ns = self.core, self.namespace
        up = core.GaugeMetricFamily(f"{ns}_ledger_up", "1 if this scrape read the ledger, else 0")
        families = []
        try:
            ledger = self.ctx.ledger()
            for by in ("feature", "model"):
                cost = core.GaugeMetricFamily(
                    f"{ns}_ledger_{by}_cost_usd",
                    f"Dollars spent per {by} over the last {self.since}, from the ledger",
                    labels=[by],
                )
                calls = core.GaugeMetricFamily(
                    f"{ns}_ledger_{by}_calls",
                    f"Calls per {by} over the last {self.since}, from the ledger",
                    labels=[by],
                )
                rows = ledger.report(by, since=self.since)  # most expensive first
                rest_cost = sum(row.cost_nanos for row in rows[LEDGER_SERIES:])
                rest_calls = sum(row.calls for row in rows[LEDGER_SERIES:])
                for row in rows[:LEDGER_SERIES]:
                    cost.add_metric([row.key or ""], row.cost_nanos / 1_000_000_000)
                    calls.add_metric([row.key or ""], row.calls)
                if len(rows) > LEDGER_SERIES:  # bounded series: the rest in one
                    cost.add_metric([OVERFLOW], rest_cost / 1_000_000_000)
                    calls.add_metric([OVERFLOW], rest_calls)
                families += [cost, calls]
        except Exception as exc:
            self.ledger_errors += 1
            log.warning("budgetguard metrics: cannot read the ledger: %r", exc)
            families = []
        up.add_metric([], 1.0 if families else 0.0)
        yield up
        yield from families


def cmd_metrics(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    try:
        parse_since(args.since, field="--since")
    except Exception as exc:
        raise CliError(str(exc)) from None
    if args.max_budgets < 0:
        raise CliError(f"--max-budgets: must be >= 0, got {args.max_budgets}")
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port: expected 0-65535, got {args.port}")
    try:
        from prometheus_client import CollectorRegistry, generate_latest, start_http_server
    except ImportError:  # pragma: no cover - the extra is installed in the tests
        raise CliError(
            "metrics needs prometheus-client: pip install 'budgetguard[prometheus]'"
        ) from None
    registry = CollectorRegistry()
    collector = StoreCollector(
        ctx,
        namespace=args.namespace,
        include_tenant=args.include_tenant,
        include_user=args.include_user,
        since=args.since,
        max_budgets=args.max_budgets,
    )
    registry.register(collector)
    if args.once:
        out.write(generate_latest(registry).decode())
        return 1 if collector.store_errors or collector.ledger_errors else 0
    server, thread = start_http_server(args.port, addr=args.bind, registry=registry)
    host = f"[{args.bind}]" if ":" in args.bind else args.bind
    out.write(f"budgetguard metrics: http://{host}:{server.server_port}/metrics (Ctrl-C to stop)\n")
    out.flush()
    try:
        while thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0
