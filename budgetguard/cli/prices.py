"""``budgetguard prices``: the rates budgetguard will use, where each comes from, how old.

    budgetguard prices [MODEL ...] [--provider P] [--json]
    budgetguard prices --diff [--url URL] [MODEL ...] [--provider P]

Rates are USD per million tokens (exact). A model's source is your override,
the fallback price, genai-prices data fetched at a time (live prices), or the
snapshot in the installed genai-prices wheel. ``--diff`` fetches the price
data now (``--url``, else the configured ``prices_url``, else genai-prices'
own) and lists what it changes against the wheel's snapshot: the prices a
process without live prices would use.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TextIO

from .._core.errors import ConfigurationError, UnknownModel
from .._core.money import nanos_to_usd
from .._engine.config import Settings
from ..pricing import live
from ..pricing.book import PriceBook
from ..pricing.rates import ModelRates, Rate, TieredRate
from .context import CliError, Context
from .render import Row, emit

__all__ = ["STALE_AFTER", "cmd_prices", "register"]

STALE_AFTER = timedelta(days=30)
"""Price data older than this is warned about."""
_FIRST_FETCH_WAIT = 15.0

_COLUMNS = [
    ("model", "MODEL"),
    ("provider", "PROVIDER"),
    ("input", "INPUT"),
    ("output", "OUTPUT"),
    ("cached_input", "CACHED IN"),
    ("cache_write", "CACHE WRITE"),
    ("reasoning", "REASONING"),
    ("audio_input", "AUDIO IN"),
    ("audio_output", "AUDIO OUT"),
    ("tiers", "TIERS"),
    ("source", "SOURCE"),
]
_MACHINE = [key for key, _ in _COLUMNS] + ["as_of"]
_DIFF_COLUMNS = [
    ("change", "CHANGE"),
    ("provider", "PROVIDER"),
    ("model", "MODEL"),
    ("field", "PRICE"),
    ("old", "WHEEL SNAPSHOT"),
    ("new", "FETCHED"),
]


def register(
    commands: Any, *, common: argparse.ArgumentParser, output: argparse.ArgumentParser
) -> None:
    """Add the ``prices`` command to the CLI's subparsers."""
    parser = commands.add_parser(
        "prices",
        parents=[common, output],
        help="the rates budgetguard uses per model, their source and age",
        description="The rates budgetguard prices each model at (USD per million tokens), "
        "where each comes from (override, fallback, fetched live, or the genai-prices "
        "snapshot in the wheel), with a warning when the data is over 30 days old. "
        "--diff fetches the price data now and shows what it changes.",
    )
    parser.add_argument("models", nargs="*", metavar="MODEL", help="models (default: all)")
    parser.add_argument("--provider", metavar="P", help="genai-prices provider id (openai, ...)")
    parser.add_argument(
        "--diff",
        action="store_true",
        help="fetch the price data now; show what changed against the wheel's snapshot",
    )
    parser.add_argument("--url", help="where --diff fetches from (default: prices_url)")
    parser.set_defaults(handler=cmd_prices)


def live_prices_of(ctx: Context) -> Settings:
    """Turn live prices on when the config file asks (``prices_refresh``) and no app
    did: what a process configured from that file prices with. The settings in force."""
    from .._engine import config  # the book an --app configured (price overrides)

    settings = config.current()
    if ctx.prices_refresh is not None and settings.prices_refresh is None:
        try:
            settings = config.configure(
                prices_refresh=ctx.prices_refresh, prices_url=ctx.prices_url
            )
        except ConfigurationError as error:
            raise CliError(str(error)) from None
    return settings


def cmd_prices(ctx: Context, args: argparse.Namespace, out: TextIO) -> int:
    settings = live_prices_of(ctx)
    configured_url = settings.prices_url or ctx.prices_url
    if args.diff:
        return _cmd_diff(args, out, args.url or configured_url)
    book = settings.prices
    baseline = live.attempts()
    status = live.price_status()
    first_fetch = status.source == "snapshot" and status.last_error is None
    if settings.prices_refresh is not None and first_fetch:  # an --app turned live prices on
        live.wait_for_fetch(*baseline, timeout=_FIRST_FETCH_WAIT)
        status = live.price_status()
    rows: list[Row] = []
    if args.models:
        for model in args.models:
            try:
                rates = book.rates(model, args.provider)
            except (UnknownModel, ConfigurationError) as exc:
                raise CliError(f"prices: {exc}") from None
            rows.append(_row(model, rates, status))
    else:
        rows = [_row(m, r, status) for m, r in _every_model(book, args.provider)]
    emit(rows, _COLUMNS, args.format, out, machine=_MACHINE)
    _warn_if_stale(rows, status)
    return 0


def _every_model(book: PriceBook, provider: str | None) -> Iterator[tuple[str, ModelRates]]:
    from genai_prices.data_snapshot import get_snapshot

    for name in book.overrides:
        yield name, book.rates(name, provider)
    providers = get_snapshot().providers
    if provider is not None:
        providers = [p for p in providers if p.id == provider]
        if not providers:
            raise CliError(f"prices: unknown provider {provider!r}")
    for entry in providers:
        for model in entry.models:
            if model.id in book.overrides:
                continue
            try:
                yield model.id, book.rates(model.id, entry.id)
            except UnknownModel:  # no per-token price (per-hour audio, per-image...)
                continue


def _usd(rate: Rate | None) -> Decimal | None:
    if rate is None:
        return None
    return nanos_to_usd(rate.base if isinstance(rate, TieredRate) else rate)


def _tiers(rates: ModelRates) -> str | None:
    parts = []
    for name, rate in (("input", rates.input_rate), ("output", rates.output_rate)):
        if isinstance(rate, TieredRate):
            steps = ", ".join(f">{start}: {_usd(value)}" for start, value in rate.tiers)
            parts.append(f"{name} {steps}")
    return "; ".join(parts) or None


def _source(rates: ModelRates, status: live.PriceStatus) -> tuple[str, datetime | None]:
    if rates.source in ("override", "fallback"):
        return rates.source, None
    if status.source == "fetched" and status.fetched_at is not None:
        stamp = status.fetched_at.strftime("%Y-%m-%d %H:%M UTC")
        return f"fetched at {stamp}", status.fetched_at
    date = status.snapshot_date.strftime("%Y-%m-%d") if status.snapshot_date else "unknown date"
    label = f"snapshot of {date} (genai-prices {status.genai_prices_version})"
    return (label + (", free" if rates.source == "free" else "")), status.snapshot_date


def _row(model: str, rates: ModelRates, status: live.PriceStatus) -> Row:
    details = dict(rates.detail_rates)
    source, as_of = _source(rates, status)
    reasoning = rates.reasoning_rate if rates.reasoning_rate != rates.output_rate else None
    return {
        "model": model,
        "provider": rates.provider,
        "input": _usd(rates.input_rate),
        "output": _usd(rates.output_rate),
        "cached_input": _usd(rates.cache_read_rate),
        "cache_write": _usd(rates.cache_write_rate),
        "reasoning": _usd(reasoning),
        "audio_input": _usd(details.get("input_audio_tokens")),
        "audio_output": _usd(details.get("output_audio_tokens")),
        "tiers": _tiers(rates),
        "source": source,
        "as_of": as_of,
    }


def _warn_if_stale(rows: Iterable[Row], status: live.PriceStatus) -> None:
    dates = [row["as_of"] for row in rows if row["as_of"] is not None]
    if not dates:
        return
    oldest = min(dates)
    age = datetime.now(UTC) - oldest
    if age > STALE_AFTER:
        print(
            f"budgetguard: warning: the price data in use is from {oldest:%Y-%m-%d} "
            f'({age.days} days old); turn on live prices (prices_refresh = "1h") or '
            "upgrade genai-prices",
            file=sys.stderr,
        )


# -- --diff --------------------------------------------------------------------------


def _cmd_diff(args: argparse.Namespace, out: TextIO, url: str | None) -> int:
    from genai_prices.data import providers as wheel

    try:
        fetched = live.fetch_snapshot(url)
    except Exception as exc:  # HTTP error, bad JSON, data that fails validation
        where = url or "genai-prices' own URL"
        print(f"budgetguard: cannot fetch prices from {where}: {exc}", file=sys.stderr)
        return 1
    wanted = {m.lower() for m in args.models}
    rows = [
        row
        for row in _changes(wheel, fetched.providers)
        if (args.provider is None or row["provider"] == args.provider)
        and (not wanted or str(row["model"]).lower() in wanted)
    ]
    emit(rows, _DIFF_COLUMNS, args.format, out, machine=[k for k, _ in _DIFF_COLUMNS])
    if args.format == "table" and not rows:
        out.write("no price changes against the wheel's snapshot\n")
    return 0


def _prices_of(model: Any, now: datetime) -> dict[str, str]:
    prices = model.get_prices(now)
    return {
        name: _price_text(value)
        for name, value in vars(prices).items()
        if name[:1] != "_" and value is not None
    }


def _price_text(value: Any) -> str:
    tiers = getattr(value, "tiers", None)
    if tiers is None:
        return str(value)
    steps = ", ".join(f">{tier.start}: {tier.price}" for tier in tiers)
    return f"{value.base} ({steps})"


def _changes(old: Iterable[Any], new: Iterable[Any]) -> Iterator[Row]:
    now = datetime.now(UTC)
    before = {(p.id, m.id): m for p in old for m in p.models}
    after = {(p.id, m.id): m for p in new for m in p.models}
    for key in sorted(before.keys() | after.keys()):
        provider, model = key
        if key not in after:
            yield _change("removed", provider, model)
            continue
        new_prices = _prices_of(after[key], now)
        if key not in before:
            yield _change("added", provider, model, new=_summary(new_prices))
            continue
        old_prices = _prices_of(before[key], now)
        for field in sorted(old_prices.keys() | new_prices.keys()):
            if old_prices.get(field) != new_prices.get(field):
                yield _change(
                    "changed",
                    provider,
                    model,
                    field=field,
                    old=old_prices.get(field),
                    new=new_prices.get(field),
                )


def _summary(prices: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(prices.items())) or "free"


def _change(
    change: str,
    provider: str,
    model: str,
    *,
    field: str | None = None,
    old: str | None = None,
    new: str | None = None,
) -> Row:
    return {
        "change": change,
        "provider": provider,
        "model": model,
        "field": field,
        "old": old,
        "new": new,
    }
