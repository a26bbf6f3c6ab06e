"""How a command prints: aligned tables for people, JSON and CSV for scripts."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TextIO

from .._core.money import format_usd, nanos_to_usd
from .._core.policy import Limit

__all__ = [
    "Row",
    "amount_text",
    "emit",
    "exact",
    "limit_text",
    "percent",
    "printable",
    "show_columns",
]

Row = dict[str, Any]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return printable(str(value))


def printable(text: str) -> str:
    """``text`` with control characters escaped: an id from a request header must not
    forge table rows (a newline) or recolour the terminal (an escape sequence)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_COUNTS = re.compile(r"\d (?:tokens?|requests?)$")


def _is_amount(cell: str) -> bool:
    return cell.startswith("$") or cell.endswith("%") or _COUNTS.search(cell) is not None


def amount_text(unit: str, amount: int) -> str:
    """An amount in a unit's store integers, for people: ``$0.05`` (from nano-USD),
    ``1,000,000 tokens``, ``1 request``."""
    if unit == "usd":
        return format_usd(amount)
    word = unit.removesuffix("s") if amount == 1 else unit
    return f"{amount:,} {word}"


def exact(unit: str, amount: int) -> Decimal | int:
    """An amount for machines: ``Decimal`` dollars (JSON: a string), else an int count."""
    return nanos_to_usd(amount) if unit == "usd" else amount


def limit_text(limit: Limit) -> str:
    """Every amount a limit sets: ``$500.00``, ``$5.00, 1,000,000 tokens``."""
    return ", ".join(amount_text(unit, limit.amount(unit) or 0) for unit in limit.units)


def show_columns(
    rows: Sequence[Row],
    columns: list[tuple[str, str]],
    defaults: dict[str, Any],
) -> list[tuple[str, str]]:
    """``columns`` without those whose every row holds its default (``{"source":
    "code"}``): a policy of code limits prints as it always did."""
    return [
        (key, title)
        for key, title in columns
        if key not in defaults or any(row.get(key) != defaults[key] for row in rows)
    ]


def _table(rows: Sequence[Row], columns: Sequence[tuple[str, str]], out: TextIO) -> None:
    """Aligned columns; numbers and money right-aligned."""
    header = [title for _, title in columns]
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]
    right = [
        any(isinstance(row.get(key), int | Decimal) for row in rows)
        or any(_is_amount(_cell(row.get(key))) for row in rows)
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


def emit(
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


def percent(part: int, whole: int) -> str:
    if whole <= 0:
        return "-"
    return f"{Decimal(part * 100) / Decimal(whole):.1f}%"
