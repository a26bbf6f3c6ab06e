"""Shared by the bench scripts: a machine/date header and markdown tables."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence


def machine() -> dict[str, str | int | None]:
    """Where and when a bench ran: enough to compare two result tables honestly."""
    return {
        "date": f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def header(title: str, extra: Sequence[str] = ()) -> str:
    """``## title`` and one line naming the date, the machine and anything in ``extra``."""
    info = machine()
    parts = [
        str(info["date"]),
        str(info["platform"]),
        f"{info['cpus']} CPUs",
        str(info["python"]),
        *extra,
    ]
    return f"## {title}\n\n" + ", ".join(parts)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; columns after the first are right-aligned."""
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = (
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "| "
        + " | ".join("-" * w if i == 0 else "-" * (w - 1) + ":" for i, w in enumerate(widths))
        + " |"
    )
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])
