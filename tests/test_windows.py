from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetguard._core.windows import CALENDAR_WINDOWS, SpanCache, window_span


def ts(*args: int, tz: object = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp()  # type: ignore[arg-type]


def test_calendar_windows_in_utc() -> None:
    now = ts(2026, 11, 25, 13, 45, 30)  # a Wednesday
    assert window_span("minute", now) == (
        int(ts(2026, 11, 25, 13, 45)),
        int(ts(2026, 11, 25, 13, 46)),
    )
    assert window_span("hour", now) == (int(ts(2026, 11, 25, 13)), int(ts(2026, 11, 25, 14)))
    assert window_span("day", now) == (int(ts(2026, 11, 25)), int(ts(2026, 11, 26)))
    assert window_span("week", now) == (int(ts(2026, 11, 23)), int(ts(2026, 11, 30)))
    assert window_span("month", now) == (int(ts(2026, 11, 1)), int(ts(2026, 12, 1)))
    assert window_span("month", ts(2026, 12, 31, 23, 59)) == (
        int(ts(2026, 12, 1)),
        int(ts(2027, 1, 1)),
    )


def test_non_calendar_windows_never_reset() -> None:
    assert window_span("total", ts(2026, 1, 1)) == (0, None)
    assert window_span("run", ts(2026, 1, 1)) == (0, None)


def test_days_follow_the_zone_including_dst() -> None:
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    # 2026-03-29: clocks go forward, the day is 23 hours long.
    start, end = window_span("day", ts(2026, 3, 29, 12, tz=berlin), "Europe/Berlin")
    assert start == int(ts(2026, 3, 29, tz=berlin))
    assert end - start == 23 * 3600
    # A 5:30 offset zone: hours start at :30 UTC.
    start, _ = window_span("hour", ts(2026, 6, 1, 10, 45), "Asia/Kolkata")
    assert datetime.fromtimestamp(start, UTC).minute == 30


@given(
    st.sampled_from(sorted(CALENDAR_WINDOWS)),
    st.integers(min_value=0, max_value=4_000_000_000),
    st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
)
def test_now_falls_inside_its_window(window: str, now: int, tz: str) -> None:
    start, end = window_span(window, now, tz)
    assert end is not None
    assert start <= now < end
    # The next window starts where this one ends.
    assert window_span(window, end, tz)[0] == end


@pytest.mark.parametrize("window", ["request", "run", "total"])
def test_non_calendar(window: str) -> None:
    assert window_span(window, 123.0)[1] is None


@given(
    st.sampled_from(sorted(CALENDAR_WINDOWS)),
    st.integers(min_value=0, max_value=4_000_000_000),
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.sampled_from(
        ["UTC", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "America/Santiago"]
    ),
)
def test_span_cache_answers_like_window_span(window: str, now: int, at: float, tz: str) -> None:
    cache = SpanCache()
    start, end = cache.span(window, now, tz)
    assert (start, end) == window_span(window, now, tz)
    assert end is not None
    later = start + int((end - start) * at)  # anywhere in the cached window
    assert cache.span(window, later, tz) == window_span(window, later, tz)


@pytest.mark.parametrize("window", sorted(CALENDAR_WINDOWS))
@pytest.mark.parametrize("tz", ["Australia/Lord_Howe", "America/Santiago", "Europe/Berlin"])
def test_span_cache_across_offset_changes(window: str, tz: str) -> None:
    # Every minute of the days around each DST change of 2026, of one cache,
    # forwards then backwards (a clock may step back): Lord Howe moves by 30
    # minutes, so its hours overlap there.
    zone = ZoneInfo(tz)
    changes = [
        t
        for t in range(int(ts(2026, 1, 1)), int(ts(2027, 1, 1)), 1800)
        if datetime.fromtimestamp(t, zone).utcoffset()
        != datetime.fromtimestamp(t + 1800, zone).utcoffset()
    ]
    assert changes
    cache = SpanCache()
    for change in changes:
        minutes = range(change - 86_400, change + 86_400, 60)
        for now in [*minutes, *reversed(minutes)]:
            assert cache.span(window, now, tz) == window_span(window, now, tz)
