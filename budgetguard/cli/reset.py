"""``budgetguard reset``: zero the spend of counters in a Redis store."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from ..stores.memory import MemoryStore
from .context import CliError, Context
from .counters import counter_pattern, glob_escape, key_unit

__all__ = ["cmd_reset"]


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


def cmd_reset(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    if not args.all and args.scope is None:
        raise CliError("reset: name what to reset with --scope (and --key, --tenant), or --all")
    unit = getattr(args, "unit", None)
    if args.all and (args.scope or args.key or args.tenant or args.window or unit):
        raise CliError(
            "reset: --all resets every counter; it takes no --scope/--key/--tenant/--window/--unit"
        )
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
        p = glob_escape(prefix)
        patterns = [f"{p}:{{*}}:c:*", f"{p}:{{*}}:a:*"]
        what = "every counter"
    else:
        options = {"key": args.key, "tenant": args.tenant, "window": args.window}
        patterns = [
            counter_pattern(prefix, args.scope, **options),
            counter_pattern(prefix, args.scope, kind="a", **options),
        ]
        what = f"scope={args.scope}" + "".join(
            f" {k}={v}" for k, v in {**options, "unit": unit}.items() if v is not None
        )
    # A pattern matches every unit (``tenant=acme:day:tokens:<bucket>`` as well as
    # ``tenant=acme:day:<bucket>``); --unit keeps one.
    counters = sorted({_text(k) for k in client.scan_iter(match=patterns[0], count=1000)})
    markers = sorted({_text(k) for k in client.scan_iter(match=patterns[1], count=1000)})
    counters = [k for k in counters if ":c:" in k and unit in (None, key_unit(k, "c"))]
    markers = [k for k in markers if unit in (None, key_unit(k, "a"))]
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
