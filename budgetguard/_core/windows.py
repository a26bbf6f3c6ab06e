"""Budget windows: which bucket "now" falls in, and when it resets.

Calendar windows (minute, hour, day, week, month) are aligned to a time zone
(UTC unless the policy says otherwise); weeks start on Monday (ISO 8601).
``request`` and ``run`` are not calendar windows: a request limit caps one
call and never touches a store; a run counter lives as long as its
``spend_limit`` block. ``total`` never resets.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal, get_args
from zoneinfo import ZoneInfo

__all__ = ["CALENDAR_WINDOWS", "WINDOWS", "SpanCache", "Window", "window_span"]

Window = Literal["request", "run", "minute", "hour", "day", "week", "month", "total"]
WINDOWS: tuple[str, ...] = get_args(Window)
CALENDAR_WINDOWS = frozenset({"minute", "hour", "day", "week", "month"})


def window_span(window: str, now_s: float, tz: str = "UTC") -> tuple[int, int | None]:
    """(start, end) of ``window`` around ``now_s`` as epoch seconds; end is None if it never ends.

    The start doubles as the bucket id: every process that asks at any
    instant of the window gets the same number.
    """
    if window not in CALENDAR_WINDOWS:
        return 0, None
    zone = UTC if tz == "UTC" else ZoneInfo(tz)
    now = datetime.fromtimestamp(now_s, zone)
    if window in ("minute", "hour"):
        length = 60 if window == "minute" else 3600
        offset = _offset_s(now)
        start_s = (int(now_s) + offset) // length * length - offset
        return start_s, start_s + length
    day = now.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if window == "week":
        day -= timedelta(days=day.weekday())
        nxt = day + timedelta(days=7)
    elif window == "month":
        day = day.replace(day=1)
        nxt = (
            day.replace(year=day.year + 1, month=1)
            if day.month == 12
            else day.replace(month=day.month + 1)
        )
    else:
        nxt = day + timedelta(days=1)
    # Wall-clock midnights in the zone; DST days are 23 or 25 hours long.
    start = day.replace(tzinfo=zone)
    end = nxt.replace(tzinfo=zone)
    return int(start.timestamp()), int(end.timestamp())


def _offset_s(moment: datetime) -> int:
    offset = moment.utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


class SpanCache:
    """``window_span`` once per window and zone, not once per call.

    Computing a calendar span takes microseconds (datetime, zoneinfo); a store
    asks for the same one thousands of times a second. The last span of each
    (window, zone) is kept and reused while ``now`` falls inside it, which
    gives exactly ``window_span``'s answer: a day, week or month is one local
    date range, and a minute or hour is kept only when the zone's offset does
    not change inside it. Safe to share between threads: an entry is replaced
    whole, never mutated.
    """

    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current: dict[tuple[str, str], tuple[int, int]] = {}

    def span(self, window: str, now_s: float, tz: str = "UTC") -> tuple[int, int | None]:
        """Same answer as ``window_span(window, now_s, tz)``."""
        if window not in CALENDAR_WINDOWS:
            return 0, None
        key = (window, tz)
        span = self._current.get(key)
        if span is not None and span[0] <= now_s < span[1]:
            return span
        start, end = window_span(window, now_s, tz)
        assert end is not None  # calendar windows always end
        if window in ("minute", "hour") and tz != "UTC" and not _steady(start, end, tz):
            # An offset change inside (Lord Howe moves by 30 minutes): window_span
            # aligns each instant by its own offset, so this span is not reusable.
            return start, end
        self._current[key] = (start, end)
        return start, end


def _steady(start: int, end: int, tz: str) -> bool:
    """Same UTC offset at both ends of a span (at most one change fits in an hour)."""
    zone = ZoneInfo(tz)
    return _offset_s(datetime.fromtimestamp(start, zone)) == _offset_s(
        datetime.fromtimestamp(end - 1, zone)
    )
