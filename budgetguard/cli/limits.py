"""``budgetguard limits``: the configured policy."""

from __future__ import annotations

import argparse
import json
from typing import TextIO
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .._core.money import format_usd
from .context import Context
from .render import emit

__all__ = ["cmd_limits", "redact"]


def cmd_limits(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
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
    emit(rows, columns, args.format, out, machine=("scope", "key", "window", "usd"))
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
        out.write(f"store: {redact(ctx.store_url or 'memory://')}\n")
    return 0


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
