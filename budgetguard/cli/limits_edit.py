"""``budgetguard limits set / rm / plan``: change the limits and plans the store holds.

The same flows as ``bg.set_limit``, ``bg.remove_limit`` and ``bg.set_plan``, run on
the store the command was pointed at (``--store``, ``--config``, ``--app``) rather
than on the process-wide configuration. A write needs a store every process of the
application shares (Redis): an in-process ``memory://`` store would die with the
command, so a write to one is refused.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO, TypeVar

from pydantic import ValidationError

from .._core.errors import ConfigurationError
from .._core.limitbook import LimitBook
from .._core.policy import Limit
from .._core.windows import WINDOWS
from .._engine.limits import _plan_flow, _remove_flow, _set_flow, listed
from ..stores.base import Store, StoredLimits
from ..stores.drive import Flow, run
from ..stores.memory import MemoryStore
from .context import CliError, Context
from .counters import store_book
from .render import limit_text, printable

__all__ = ["STORABLE_SCOPES", "cmd_plan", "cmd_rm", "cmd_set", "describe"]

STORABLE_SCOPES = ("global", "tenant", "user", "feature", "model", "request")
_CLEAR = ("-", "none")
_FLAGS = {"usd": "--usd", "tokens": "--tokens", "requests": "--requests", "window": "--window"}
T = TypeVar("T")


def describe(limit: Limit, who: str | None = None) -> str:
    """``tenant acme: $500.00 per month``, ``every user: 1,000 requests per day (warn)``."""
    if who is not None:
        pass
    elif limit.scope in ("global", "request"):
        who = limit.scope
    else:
        who = f"{limit.scope} {limit.key}" if limit.key is not None else f"every {limit.scope}"
    window = limit.resolved_window
    per = "in total" if window == "total" else f"per {window}"
    soft = " (warn: soft, never refuses)" if limit.soft else ""
    return printable(f"{who}: {limit_text(limit)} {per}{soft}")


def _shared_store(ctx: Context, action: str) -> Store:
    """The store to write to; refused when no other process could ever read it."""
    store = ctx.store()
    where = ctx.sources.get("store", "the default")
    if isinstance(store, MemoryStore):
        raise CliError(
            f"limits {action}: the store ({where}: {ctx.store_url or 'memory://'}) lives "
            "inside this one process; what it holds dies with the command. Write to the "
            "store your application shares: --store redis://host:6379/0 (or `store` in "
            "--config)"
        )
    if not isinstance(store, StoredLimits):
        raise CliError(
            f"limits {action}: the store ({where}: {type(store).__name__}) cannot hold "
            "limits; use a Redis store"
        )
    return store


def _run(flow: Flow[T], store: Store, action: str) -> T:
    try:
        return run(flow, store)
    except ConfigurationError as error:
        raise CliError(f"limits {action}: {_flagged(str(error))}") from None


def _flagged(text: str) -> str:
    """``usd: must be >= 0`` -> ``--usd: must be >= 0``: name the option to fix."""
    for name, flag in _FLAGS.items():
        text = text.replace(f" {name}=", f" {flag}")  # "use usd= or tokens=" -> --usd, --tokens
    field, sep, rest = text.partition(":")
    if sep and field in _FLAGS:
        return f"{_FLAGS[field]}:{rest}"
    if sep and field in ("scope", "key", "plan", "tenant", "user"):
        return f"{field.upper()}:{rest}"
    return text


def _scope(text: str, action: str) -> str:
    if text == "run":
        raise CliError(
            f"limits {action}: SCOPE: a run limit belongs to one spend_limit block; "
            "it is never stored"
        )
    if text not in STORABLE_SCOPES:
        raise CliError(
            f"limits {action}: SCOPE: expected one of {', '.join(STORABLE_SCOPES)}, got {text!r}"
        )
    return text


def _window(text: str | None, action: str) -> str | None:
    if text is not None and text not in WINDOWS:
        known = ", ".join(w for w in WINDOWS if w != "run")
        raise CliError(f"limits {action}: --window: expected one of {known}, got {text!r}")
    return text


def _count(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return int(text)  # 1000000 or 1_000_000
    except ValueError:
        raise CliError(f"limits set: {flag}: expected a whole number, got {text!r}") from None


def _limit(args: argparse.Namespace) -> Limit:
    scope = _scope(args.scope, "set")
    window = _window(args.window, "set")
    if args.usd is None and args.tokens is None and args.requests is None:
        raise CliError("limits set: name an amount: --usd X, --tokens N and/or --requests N")
    if window is None and scope != "request":
        raise CliError(
            "limits set: --window: name the window (minute, hour, day, week, month; "
            "total for a limit that never resets)"
        )
    data: dict[str, Any] = {
        "scope": scope,
        "key": args.key,
        "window": window,
        "usd": args.usd,
        "tokens": _count(args.tokens, "--tokens"),
        "requests": _count(args.requests, "--requests"),
        "enforce": "warn" if args.warn else "refuse",
    }
    try:
        return Limit.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        if field and not message.startswith(f"{field}:"):
            message = f"{field}: {message}"
        raise CliError(f"limits set: {_flagged(message)}") from None


def _held(book: LimitBook, scope: str, key: str | None, window: str | None) -> list[Limit]:
    return [
        limit
        for limit in book.limits
        if limit.scope == scope
        and (limit.key or None) == key
        and (window is None or limit.resolved_window == window)
    ]


def cmd_set(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    store = _shared_store(ctx, "set")
    limit = _limit(args)
    before = _held(store_book(store), limit.scope, limit.key, limit.resolved_window)
    _run(_set_flow(limit), store, "set")
    out.write(f"stored {describe(limit)}\n")
    for old in before:
        if old != limit:
            out.write(f"  (it replaces the stored {limit_text(old)})\n")
    book = store_book(store)
    for item in listed(ctx.policy, book):
        if item.source == "store" and item.limit == limit and item.note:
            out.write(printable(f"  ({item.note})") + "\n")
    out.write("every process sharing the store applies it within a second\n")
    return 0


def cmd_rm(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    scope = _scope(args.scope, "rm")
    window = _window(args.window, "rm")
    store = _shared_store(ctx, "rm")
    held = _held(store_book(store), scope, args.key, window)
    removed = _run(_remove_flow(scope, args.key, window), store, "rm")
    if args.key is not None:
        who = f"{scope} {args.key}"
    else:
        who = scope if scope in ("global", "request") else f"every {scope}"
    if removed and held:
        out.write(f"removed the stored limit {describe(held[0])}\n")
        return 0
    if removed:
        out.write(printable(f"removed the stored limit for {who}") + "\n")
        return 0
    per = f" per {window}" if window else ""
    out.write(printable(f"nothing removed: the store holds no limit for {who}{per}") + "\n")
    code = [limit for limit in ctx.policy.limits if limit.scope == scope and limit.key == args.key]
    if code:
        out.write(
            "(the code's limits - Policy.limits, [policy.limits] in the config - are not in "
            "the store; change them there)\n"
        )
    return 1


def _plan_target(args: argparse.Namespace) -> tuple[str, str, str | None]:
    """(kind, who, plan) from ``TENANT PLAN`` / ``--user USER PLAN`` / ``--clear``."""
    names: list[str] = list(args.names)
    if args.user is not None:
        kind, who = "user", args.user
    elif names:
        kind, who = "tenant", names.pop(0)
    else:
        raise CliError("limits plan: name the tenant: limits plan TENANT PLAN (or --user USER)")
    if args.clear:
        if names:
            raise CliError(f"limits plan: --clear takes no PLAN, got {names[0]!r}")
        return kind, who, None
    if len(names) != 1:
        raise CliError(
            "limits plan: PLAN: name one plan (or --clear, '-' or 'none' to take "
            f"the {kind} off its plan), got {len(names)}"
        )
    return kind, who, names[0]


def cmd_plan(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    kind, who, plan = _plan_target(args)
    store = _shared_store(ctx, "plan")
    plans = ctx.policy.plans
    if plan in _CLEAR and plan not in plans:
        plan = None
    if plan is not None and plan not in plans:
        where = ctx.sources.get("policy", "the default policy")
        known = ", ".join(repr(name) for name in plans)
        raise CliError(
            f"limits plan: PLAN: unknown plan {plan!r}; the policy ({where}) defines "
            + (known if known else "no plans (Policy(plans=...), [policy.plans] in --config)")
        )
    before = store_book(store).plans.get((kind, who))
    name = printable(f"{kind} {who}")
    if plan is None and before is None:
        out.write(f"{name} is on no plan: nothing to take off\n")
        return 1
    tenant, user = (who, None) if kind == "tenant" else (None, who)
    _run(_plan_flow(ctx.policy, tenant, user, plan), store, "plan")
    was = printable(f" (was {before})" if before is not None else " (was on no plan)")
    if plan is None:
        out.write(f"{name} is off plan {printable(str(before))}: the other limits apply\n")
        return 0
    out.write(f"{name} is on plan {printable(plan)}{was}:\n")
    for limit in plans[plan]:
        if limit.scope == kind:
            whom = f"{kind} {who}"
        elif limit.scope == "user":
            whom = f"each user of tenant {who}"
        elif limit.scope == "tenant":
            whom = "their tenant (not applied: a user's plan sets user and request limits)"
        else:
            whom = f"each {limit.scope}"
        out.write(f"  {describe(limit, whom)}\n")
    if not plans[plan]:
        out.write("  (the plan sets no limits)\n")
    return 0
