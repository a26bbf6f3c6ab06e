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
import csv
import importlib
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import unquote

from pydantic import ValidationError

from . import _core
from ._errors import BudgetError, ConfigurationError, StoreUnavailable
from ._frames import Attribution
from ._ledger import Ledger, open_ledger, parse_since
from ._ledger_sql import GROUPS
from ._money import format_usd, nanos_to_usd
from ._policy import Limit, Policy
from ._windows import window_span
from .stores._base import Counter, CounterStatus, Store
from .stores._memory import MemoryStore

if TYPE_CHECKING:
    from .stores._redis import RedisStore

__all__ = ["CliError", "Context", "load_context", "main"]

_POLICY_KEYS = frozenset(Policy.model_fields)
_CONFIG_KEYS = frozenset({"store", "ledger", "prefix", "policy"}) | _POLICY_KEYS
_STATUS_SCOPES = ("global", "tenant", "user", "feature", "model")


DEFAULT_CONFIG = "budgetguard.toml"
"""Read from the current directory when no --config, $BUDGETGUARD_CONFIG or app names one."""


class CliError(Exception):
    """A bad option or configuration: printed as ``budgetguard: error: ...``, exit status 2."""


@dataclass
class Context:
    """What a command works on, and where each part came from (for error messages)."""

    policy: Policy = field(default_factory=Policy)
    store_url: str | None = None
    ledger_url: str | None = None
    prefix: str = "bg"
    store_obj: Store | None = None
    ledger_obj: Ledger | None = None
    sources: dict[str, str] = field(default_factory=dict)
    _store: Store | None = None
    _ledger: Ledger | None = None

    def store(self) -> Store:
        if self._store is None:
            if self.store_obj is not None:
                self._store = self.store_obj
            else:
                self._store = _store_from_url(
                    self.store_url or "memory://", self.prefix, self.sources.get("store", "store")
                )
        return self._store

    def ledger(self) -> Ledger:
        if self._ledger is None:
            if self.ledger_obj is not None:
                self._ledger = self.ledger_obj
            elif self.ledger_url is None:
                raise CliError(
                    "no ledger configured: pass --ledger sqlite:///budgetguard.db, set "
                    "BUDGETGUARD_LEDGER, or name `ledger` in --config"
                )
            else:
                where = self.sources.get("ledger", "ledger")
                try:
                    self._ledger = open_ledger(self.ledger_url)
                except ConfigurationError as exc:
                    raise CliError(f"{where}: {exc}") from None
        return self._ledger

    def close(self) -> None:
        if self._ledger is not None and self._ledger is not self.ledger_obj:
            self._ledger.close(timeout=5)
        close = getattr(self._store, "close", None)
        if self._store is not None and self._store is not self.store_obj and callable(close):
            close()


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _check_store_url(url: str, where: str) -> None:
    text = url.strip()
    if text not in ("", "memory", "memory://") and not text.startswith(_REDIS_SCHEMES):
        raise CliError(
            f"{where}: unsupported store URL {url!r}; use redis://host:6379/0 or memory://"
        )


def _store_from_url(url: str, prefix: str, where: str) -> Store:
    _check_store_url(url, where)
    text = url.strip()
    if not text.startswith(_REDIS_SCHEMES):
        return MemoryStore()
    from .stores._redis import RedisStore

    try:
        return RedisStore.from_url(text, prefix=prefix)
    except (ConfigurationError, ValueError) as exc:
        raise CliError(f"{where}: {exc}") from None


# -- loading the configuration ---------------------------------------------------


def _read_config(path: str, where: str) -> dict[str, Any]:
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise CliError(f"{where}: cannot read {path!r}: {exc.strerror or exc}") from None
    text = raw.decode("utf-8", errors="replace")
    suffix = file.suffix.lower()
    try:
        data: Any = json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if suffix == ".json" else "TOML"
        raise CliError(f"{where}: {path} is not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise CliError(f"{where}: {path} must hold a table/object at the top level")
    return data


def _apply_config(ctx: Context, data: Mapping[str, Any], path: str) -> None:
    unknown = sorted(set(data) - _CONFIG_KEYS)
    if unknown:
        raise CliError(
            f"{path}: unknown key(s) {', '.join(unknown)}; expected store, ledger, prefix, "
            f"policy (or the policy's own keys: {', '.join(sorted(_POLICY_KEYS))})"
        )
    policy_data = dict(data.get("policy") or {})
    if not isinstance(data.get("policy", {}), Mapping):
        raise CliError(f"{path}: policy: expected a table/object")
    for key in _POLICY_KEYS & set(data):
        policy_data[key] = data[key]
    if policy_data:
        try:
            ctx.policy = Policy.model_validate(policy_data)
        except ValidationError as exc:
            raise CliError(f"{path}: policy: {_validation_text(exc)}") from None
        ctx.sources["policy"] = path
    for name in ("store", "prefix"):
        if name in data:
            value = data[name]
            if not isinstance(value, str):
                raise CliError(f"{path}: {name}: expected a string, got {value!r}")
            setattr(ctx, "store_url" if name == "store" else name, value)
            ctx.sources[name] = f"{path}: {name}"
            if name == "store":
                ctx.store_obj = None
    if "ledger" in data:
        ctx.ledger_url = _ledger_url(data["ledger"], f"{path}: ledger")
        ctx.ledger_obj = None
        ctx.sources["ledger"] = f"{path}: ledger"


def _ledger_url(value: Any, where: str) -> str:
    """``ledger = "sqlite:///x.db"``, or a table ``{url = ..., table = ..., schema = ...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("url"), str):
        extra = {k: v for k, v in value.items() if k != "url"}
        bad = sorted(set(extra) - {"table", "schema"})
        if bad:
            raise CliError(f"{where}: unknown key(s) {', '.join(bad)}; expected url, table, schema")
        url = str(value["url"])
        if extra:
            url += ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in extra.items())
        return url
    raise CliError(f"{where}: expected a URL string or a table with `url`, got {value!r}")


def _validation_text(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"])
        msg = str(error["msg"]).removeprefix("Value error, ")
        if msg.split(":", 1)[0] == loc.rsplit(".", 1)[-1]:
            msg = msg.split(":", 1)[1].strip()  # "usd: must be >= 0" under limits.0.usd
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _apply_app(ctx: Context, spec: str, where: str) -> None:
    """Import ``module:attr``, call it if callable, then read what ``bg.configure`` set."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CliError(f"{where}: expected module:attr (e.g. myapp.budgets:setup), got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"{where}: cannot import {module_name!r}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"{where}: {module_name!r} has no attribute {attr!r}") from None
    from . import _config

    if callable(target):
        try:
            target = target()
        except Exception as exc:
            raise CliError(f"{where}: {spec} raised {type(exc).__name__}: {exc}") from None
    settings = _config.current()
    ctx.policy = settings.policy
    ctx.sources["policy"] = where
    if settings.store is not None:
        ctx.store_obj = settings.store
        ctx.store_url = settings.store_url
        ctx.prefix = getattr(settings.store, "prefix", ctx.prefix)
        ctx.sources["store"] = where
    ledgers = [t for t in (target, *settings.listeners) if isinstance(t, Ledger)]
    if ledgers:
        ctx.ledger_obj = ledgers[0]
        ctx.sources["ledger"] = where


def load_context(
    *,
    config: str | None = None,
    app: str | None = None,
    store: str | None = None,
    ledger: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Context:
    """The policy, store and ledger a command works on.

    Lowest to highest priority: ``--app`` (or ``$BUDGETGUARD_APP``), ``--config``
    (or ``$BUDGETGUARD_CONFIG``; else ``./budgetguard.toml`` when there is one
    and no app is named), ``$BUDGETGUARD_STORE`` / ``$BUDGETGUARD_LEDGER``,
    then ``--store`` / ``--ledger``.
    """
    env = os.environ if environ is None else environ
    ctx = Context()
    app_spec, app_where = (app, "--app") if app else (env.get("BUDGETGUARD_APP"), "BUDGETGUARD_APP")
    if app_spec:
        _apply_app(ctx, app_spec, app_where)
    path, where = (config, "--config") if config else (env.get("BUDGETGUARD_CONFIG"), "")
    if not path and not app_spec and os.path.isfile(DEFAULT_CONFIG):
        path, where = DEFAULT_CONFIG, DEFAULT_CONFIG
    if path:
        _apply_config(ctx, _read_config(path, where or "BUDGETGUARD_CONFIG"), path)
    for name, flag, var in (
        ("store", store, "BUDGETGUARD_STORE"),
        ("ledger", ledger, "BUDGETGUARD_LEDGER"),
    ):
        value, source = (flag, f"--{name}") if flag else (env.get(var), var)
        if value:
            setattr(ctx, f"{name}_url", value)
            setattr(ctx, f"{name}_obj", None)
            ctx.sources[name] = source
    if ctx.store_obj is None and ctx.store_url is not None:
        _check_store_url(ctx.store_url, ctx.sources.get("store", "store"))
    return ctx


# -- output ------------------------------------------------------------------------


Row = dict[str, Any]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def _table(rows: Sequence[Row], columns: Sequence[tuple[str, str]], out: TextIO) -> None:
    """Aligned columns; numbers and money right-aligned."""
    header = [title for _, title in columns]
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]
    right = [
        any(isinstance(row.get(key), int | Decimal) for row in rows)
        or any(_cell(row.get(key)).startswith("$") for row in rows)
        or any(_cell(row.get(key)).endswith("%") for row in rows)
        for key, _ in columns
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ).rstrip()

    out.write(line(header) + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for values in cells:
        out.write(line(values) + "\n")


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:f}"  # never 2E+1
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _emit(
    rows: Sequence[Row],
    columns: Sequence[tuple[str, str]],
    fmt: str,
    out: TextIO,
    *,
    machine: Sequence[str],
) -> None:
    """``machine``: the keys of the JSON / CSV output (exact amounts, no ``$``)."""
    if fmt == "json":
        out.write(json.dumps([{k: _json_value(r.get(k)) for k in machine} for r in rows], indent=2))
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(machine)
        for r in rows:
            writer.writerow(["" if r.get(k) is None else _json_value(r.get(k)) for k in machine])
    else:
        _table(rows, columns, out)


def _percent(part: int, whole: int) -> str:
    if whole <= 0:
        return "-"
    return f"{Decimal(part * 100) / Decimal(whole):.1f}%"


# -- counters: which exist, and their Redis keys -------------------------------------


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def counter_pattern(
    prefix: str,
    scope: str,
    *,
    key: str | None = None,
    tenant: str | None = None,
    window: str | None = None,
    kind: str = "c",
    bucket: str = "*",
) -> str:
    """SCAN pattern of a scope's counter keys (``kind="c"``) or alert markers (``"a"``).

    Keys are ``<prefix>:{<tag>}:<kind>:<counter key>:<rest>`` (see stores/_redis_common.py);
    user-supplied parts are percent-escaped by the core, so they hold no glob characters.
    """
    esc = _core._escape
    p = _glob_escape(prefix)
    w = window or "*"
    subject = "*" if key is None else esc(key)
    if scope == "global":
        return f"{p}:{{global}}:{kind}:global={esc('*')}:{w}:{bucket}"
    if scope == "tenant":
        t = subject if key is not None else ("*" if tenant is None else esc(tenant))
        return f"{p}:{{{t}}}:{kind}:tenant={t}:{w}:{bucket}"
    if scope == "user":
        if tenant is not None:
            t = esc(tenant)
            return f"{p}:{{{t}}}:{kind}:tenant={t}/user={subject}:{w}:{bucket}"
        return f"{p}:{{*}}:{kind}:*user={subject}:{w}:{bucket}"
    if scope in ("feature", "model"):
        return f"{p}:{{global}}:{kind}:{scope}={subject}:{w}:{bucket}"
    raise CliError(f"--scope: expected one of {', '.join(_STATUS_SCOPES)}, got {scope!r}")


@dataclass(frozen=True, slots=True)
class _Found:
    """A counter seen in the store: its attribution and bucket start."""

    scope: str
    subject: str
    tenant: str | None
    window: str
    start: int


def parse_counter_key(counter_key: str) -> tuple[str, str, str | None, str] | None:
    """``tenant=acme/user=u-1:day`` -> (scope, subject, tenant, window)."""
    base, sep, window = counter_key.rpartition(":")
    if not sep:
        return None
    parts = {}
    for part in base.split("/"):
        name, eq, value = part.partition("=")
        if not eq:
            return None
        parts[name] = unquote(value)
    if "user" in parts:
        return "user", parts["user"], parts.get("tenant"), window
    if len(parts) != 1:
        return None
    ((scope, subject),) = parts.items()
    return scope, subject, subject if scope == "tenant" else None, window


def _redis_found(store: RedisStore, pattern: str) -> Iterator[_Found]:
    marker = ":c:"
    for raw in store.client.scan_iter(match=pattern, count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        at = key.find("}" + marker)
        if at < 0:
            continue
        counter_key, _, start = key[at + 1 + len(marker) :].rpartition(":")
        parsed = parse_counter_key(counter_key)
        if parsed is None or not start.lstrip("-").isdigit():
            continue
        yield _Found(*parsed, int(start))


def _memory_found(store: MemoryStore) -> Iterator[_Found]:
    buckets: Mapping[tuple[str, int], Any] = getattr(store, "_buckets", {})
    for counter_key, start in list(buckets):
        parsed = parse_counter_key(counter_key)
        if parsed is not None:
            yield _Found(*parsed, start)


def _discover(
    store: Store, scope: str, window: str, prefix: str, *, want: str | None, tenant: str | None
) -> list[_Found]:
    """Counters of a scope (every user, every feature) that exist in the store."""
    if isinstance(store, MemoryStore):
        found: Iterable[_Found] = _memory_found(store)
    elif hasattr(store, "client") and hasattr(store, "bucket_key"):
        pattern = counter_pattern(prefix, scope, key=want, tenant=tenant, window=window)
        found = _redis_found(store, pattern)  # type: ignore[arg-type]
    else:
        return []
    return [
        f
        for f in found
        if f.scope == scope
        and f.window == window
        and (want is None or f.subject == want)
        and (tenant is None or f.tenant == tenant)
    ]


def _counter_of(policy: Policy, limit: Limit, subject: str, tenant: str | None) -> Counter:
    who = Attribution(
        tenant=subject if limit.scope == "tenant" else tenant,
        user=subject if limit.scope == "user" else None,
        feature=subject if limit.scope == "feature" else None,
    )
    single = policy.model_copy(update={"limits": (limit,)})
    counters = _core.plan_counters(single, (), who, subject if limit.scope == "model" else None)
    return counters[0]


def _subjects(
    ctx: Context, limit: Limit, key: str | None, tenant: str | None, now: float
) -> set[tuple[str, str | None]]:
    """(subject, tenant) of every counter of ``limit`` to show."""
    scope, window = limit.scope, limit.resolved_window
    want = key if key is not None else limit.key
    if scope == "tenant" and want is None:
        want = tenant
    if scope == "global":
        return {("*", None)}
    if scope != "user" and want is not None:
        return {(want, None)}
    start = window_span(window, now, ctx.policy.timezone)[0]
    seen = _discover(ctx.store(), scope, window, ctx.prefix, want=want, tenant=tenant)
    subjects = {
        (f.subject, f.tenant if scope == "user" else None) for f in seen if f.start == start
    }
    if not subjects and want is not None:
        subjects = {(want, tenant)}
    return subjects


def _status_rows(
    ctx: Context, scope: str | None, key: str | None, tenant: str | None
) -> tuple[list[tuple[CounterStatus, str | None]], list[str]]:
    notes: list[str] = []
    counters: dict[str, tuple[Counter, str | None]] = {}
    now = time.time()
    for limit in ctx.policy.limits:
        if limit.scope not in _STATUS_SCOPES or (scope is not None and limit.scope != scope):
            continue
        if key is not None and limit.key not in (None, key):
            continue
        subjects = _subjects(ctx, limit, key, tenant, now)
        if not subjects:
            what = limit.scope if limit.key is None else f"{limit.scope} {limit.key!r}"
            notes.append(f"no {what} has spent in the current {limit.resolved_window} yet")
        for subject, owner in sorted(subjects, key=lambda s: (s[1] or "", s[0])):
            counter = _counter_of(ctx.policy, limit, subject, owner)
            known = counters.get(counter.key)
            if known is None or counter.limit < known[0].limit:
                counters[counter.key] = (counter, owner)
    store = ctx.store()
    statuses = [(store.status(counter), owner) for counter, owner in counters.values()]
    return statuses, notes


# -- commands ------------------------------------------------------------------------


def _cmd_limits(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    policy = ctx.policy
    if args.format == "json":
        out.write(json.dumps(policy.model_dump(mode="json"), indent=2) + "\n")
        return 0
    rows = [
        {
            "scope": limit.scope,
            "key": limit.key or ("*" if limit.scope not in ("global", "run", "request") else ""),
            "window": limit.resolved_window,
            "usd": limit.usd,
            "limit": format_usd(limit.nanos),
        }
        for limit in policy.limits
    ]
    columns = [("scope", "SCOPE"), ("key", "KEY"), ("window", "WINDOW"), ("limit", "LIMIT")]
    _emit(rows, columns, args.format, out, machine=("scope", "key", "window", "usd"))
    if args.format == "table":
        if not policy.limits:
            out.write("(no limits configured)\n")
        out.write(f"\non_exceed: {policy.on_exceed}\n")
        for start in policy.downgrade:
            out.write(f"downgrade: {' -> '.join([start, *policy.downgrade_chain(start)])}\n")
        if policy.alerts:
            alerts = ", ".join(
                f"{(t.fraction * 100).normalize():f}%" + (f" ({t.scope})" if t.scope else "")
                for t in policy.alerts
            )
            out.write(f"alerts: {alerts}\n")
        out.write(
            f"timezone: {policy.timezone}   lease: {policy.lease_s:g}s   "
            f"block_timeout: {policy.block_timeout:g}s\n"
        )
        out.write(f"store: {_redact(ctx.store_url or 'memory://')}\n")
    return 0


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    head, sep, tail = url.partition("://")
    if sep and "@" in tail.split("/", 1)[0]:
        creds, _, rest = tail.partition("@")
        user = creds.split(":", 1)[0]
        return f"{head}://{user}:***@{rest}" if ":" in creds else url
    return url


def _cmd_status(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    if not ctx.policy.limits:
        raise CliError("status: no limits configured; pass --config or --app")
    statuses, notes = _status_rows(ctx, args.scope, args.key, args.tenant)
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
                "used": _percent(raw.spent + raw.held, counter.limit),
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
    _emit(rows, columns, args.format, out, machine=machine)
    if args.format == "table":
        for note in notes:
            out.write(f"({note})\n")
    return 0


def _cmd_report(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    try:
        since = parse_since(args.since, field="--since")
        until = None if args.until is None else parse_since(args.until, field="--until")
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    ledger = ctx.ledger()
    ledger.flush(5)  # an --app's live ledger: include its last rows
    try:
        report = ledger.report(args.by, since=since, until=until)
    except ConfigurationError as exc:
        raise CliError(f"--by: {exc}".replace("--by: by: ", "--by: ")) from None
    total = sum(r.cost_nanos for r in report)
    shown = report[: args.top] if args.top else report
    rows = [
        {
            "key": r.key,
            "calls": r.calls,
            "ok": r.ok,
            "downgraded": r.downgraded,
            "denied": r.denied,
            "errors": r.errors,
            "input_tokens": r.input_tokens,
            "cached_tokens": r.cached_tokens,
            "output_tokens": r.output_tokens,
            "reasoning_tokens": r.reasoning_tokens,
            "cost": format_usd(r.cost_nanos),
            "cost_usd": r.cost,
            "cost_nanos": r.cost_nanos,
            "share": _percent(r.cost_nanos, total),
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
        "denied",
        "errors",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost_usd",
        "cost_nanos",
    )
    _emit(rows, columns, args.format, out, machine=machine)
    if args.format == "table":
        calls = sum(r.calls for r in report)
        period = f"since {since:%Y-%m-%d %H:%M} UTC"
        if until is not None:
            period += f" until {until:%Y-%m-%d %H:%M} UTC"
        if not report:
            out.write("(no calls recorded)\n")
        out.write(f"\ntotal {format_usd(total)} over {calls} calls, {period}\n")
    return 0


_RESET_LUA = """
-- Zero one counter bucket. A bucket with calls in flight keeps its hold (the
-- calls will settle or expire into it); an idle one is deleted.
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0') or 0
if held > 0 then
  redis.call('HSET', KEYS[1], 'spent', '0')
  return 2
end
return redis.call('DEL', KEYS[1])
"""


def _cmd_reset(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    if not args.all and args.scope is None:
        raise CliError("reset: name what to reset with --scope (and --key, --tenant), or --all")
    if args.all and (args.scope or args.key or args.tenant or args.window):
        raise CliError("reset: --all resets every counter; it takes no --scope/--key/--tenant")
    store = ctx.store()
    if isinstance(store, MemoryStore) or not hasattr(store, "client"):
        where = ctx.sources.get("store", "the default")
        raise CliError(
            f"reset: the store ({where}: {ctx.store_url or 'memory://'}) is in-process; "
            "a CLI cannot reach it. Reset needs a Redis store: --store redis://host:6379/0"
        )
    client: Any = store.client
    prefix = ctx.prefix
    if args.all:
        p = _glob_escape(prefix)
        patterns = [f"{p}:{{*}}:c:*", f"{p}:{{*}}:a:*"]
        what = "every counter"
    else:
        options = {"key": args.key, "tenant": args.tenant, "window": args.window}
        patterns = [
            counter_pattern(prefix, args.scope, **options),
            counter_pattern(prefix, args.scope, kind="a", **options),
        ]
        what = f"scope={args.scope}" + "".join(
            f" {k}={v}" for k, v in options.items() if v is not None
        )
    counters = sorted({_text(k) for k in client.scan_iter(match=patterns[0], count=1000)})
    markers = sorted({_text(k) for k in client.scan_iter(match=patterns[1], count=1000)})
    counters = [k for k in counters if ":c:" in k]
    if not counters and not markers:
        out.write(f"nothing to reset for {what} (prefix {prefix!r})\n")
        return 0
    out.write(f"{len(counters)} counter bucket(s) of {what} will have their spend set to 0:\n")
    for key in counters[:10]:
        out.write(f"  {key}\n")
    if len(counters) > 10:
        out.write(f"  ... and {len(counters) - 10} more\n")
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("reset: refusing without confirmation; pass --yes (-y) in scripts")
        out.flush()
        answer = input("Reset them? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            out.write("nothing reset\n")
            return 1
    script = client.register_script(_RESET_LUA)
    deleted = kept = 0
    for key in counters:
        result = int(script(keys=[key]))
        deleted += result == 1
        kept += result == 2
    for key in markers:
        client.delete(key)
    out.write(
        f"reset {deleted + kept} counter bucket(s): {deleted} deleted, {kept} zeroed with "
        f"calls in flight keeping their holds; {len(markers)} alert marker(s) cleared\n"
    )
    return 0


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


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
    status.add_argument("--scope", choices=_STATUS_SCOPES)
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
    reset.add_argument("--scope", choices=_STATUS_SCOPES)
    reset.add_argument("--key", help="one tenant / user / feature / model (default: all)")
    reset.add_argument("--tenant", help="only this tenant's users")
    reset.add_argument("--window", help="only counters of this window (day, month, ...)")
    reset.add_argument("--all", action="store_true", help="every counter under the prefix")
    reset.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    return parser


_COMMANDS: dict[str, Callable[[Context, argparse.Namespace, TextIO], int]] = {
    "status": _cmd_status,
    "report": _cmd_report,
    "limits": _cmd_limits,
    "reset": _cmd_reset,
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
