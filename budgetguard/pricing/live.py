"""Live prices: genai-prices' own background updater, and the hook our rate cache follows.

``genai_prices.UpdatePrices`` runs one shared thread that fetches the price
data and swaps the process-wide snapshot (``data_snapshot.set_custom_snapshot``);
a failed fetch raises inside that thread, is logged by genai-prices (on every
attempt) and leaves the last snapshot in place. We start it with a subclass
whose ``fetch()`` - the extension point genai-prices documents: the started
instance supplies the settings and ``fetch()`` - also:

* rejects data that parses but cannot be right (no providers, or far fewer
  priced models than the data in use: a truncated mirror would otherwise turn
  known models into ``UnknownModel`` or, worse, free);
* installs the new snapshot itself, then clears every ``PriceBook``'s rate
  cache, so the next call resolves against the new data while cache hits stay
  a plain dict lookup (nothing is checked on the hot path);
* logs a failure once per run of failures on the ``budgetguard`` logger, and
  the recovery.

No monkeypatching: only public genai-prices names (``UpdatePrices``,
``DataSnapshot``, ``set_custom_snapshot``, ``get_snapshot``) are used, plus the
raw-data parser genai-prices' own ``fetch()`` uses.
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core.errors import ConfigurationError

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot

__all__ = [
    "MIN_REFRESH_SECONDS",
    "PriceStatus",
    "attempts",
    "fetch_snapshot",
    "follow",
    "generation",
    "parse_refresh",
    "price_status",
    "refresh_prices",
    "start",
    "stop",
    "wait_for_fetch",
]

log = logging.getLogger("budgetguard")

MIN_REFRESH_SECONDS = 1.0
_MIN_PRICED_SHARE = 0.5
"""A fetch must price at least this share of the models the data in use prices."""


@dataclass(frozen=True, slots=True)
class PriceStatus:
    """Where the genai-prices data in use came from and how fresh it is.

    ``source``: ``"snapshot"`` (the data in the installed wheel) or
    ``"fetched"``; ``fetched_at``: when the data in use was fetched (UTC);
    ``snapshot_date``: when the installed wheel's data was written (its file
    date, a lower bound on its age); ``refresh``: the update interval in
    seconds while the updater runs, else None; ``last_error``: the latest
    failed fetch (kept until a fetch succeeds); ``generation``: bumped by
    every fetched snapshot.
    """

    source: str
    url: str | None
    fetched_at: datetime | None
    snapshot_date: datetime | None
    genai_prices_version: str
    refresh: float | None
    last_error: str | None
    generation: int

    @property
    def data_date(self) -> datetime | None:
        """The date of the data in use: fetched, else the wheel's."""
        return self.fetched_at if self.source == "fetched" else self.snapshot_date


# -- process-wide state (the genai-prices snapshot is process-wide too) --------------

_lock = threading.Lock()
_done = threading.Condition(_lock)
_books: weakref.WeakSet[Any] = weakref.WeakSet()
_updater: Any = None
_attempts = 0
_generation = 0
_fetched_at: datetime | None = None
_fetched_url: str | None = None
_last_error: str | None = None
_failing = False


def generation() -> int:
    """Bumped when a fetched snapshot is installed; a resolve spanning a bump is not cached."""
    return _generation


def follow(book: Any) -> None:
    """Clear ``book``'s rate cache (its ``invalidate()``) after every fetched snapshot."""
    with _lock:
        _books.add(book)


def parse_refresh(value: object, where: str = "prices_refresh") -> float | None:
    """``"1h"``, ``"30m"``, ``"90s"``, ``"1d"`` or a number of seconds; None: off."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigurationError(f"{where}: expected a duration like '1h', got {value!r}")
    seconds: float
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
        if match is None:
            raise ConfigurationError(
                f"{where}: expected a duration like '1h', '30m', '90s' or seconds, got {value!r}"
            )
        unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        seconds = float(match.group(1)) * unit
    else:
        raise ConfigurationError(f"{where}: expected a duration like '1h', got {value!r}")
    if not seconds >= MIN_REFRESH_SECONDS or seconds == float("inf"):
        raise ConfigurationError(
            f"{where}: must be at least {MIN_REFRESH_SECONDS:g} second(s), got {value!r}"
        )
    return seconds


def _priced(snapshot: DataSnapshot) -> int:
    return sum(1 for provider in snapshot.providers for model in provider.models if model.prices)


def _check(snapshot: DataSnapshot | None, url: str) -> DataSnapshot:
    from genai_prices.data_snapshot import get_snapshot

    if snapshot is None or not snapshot.providers:
        raise ValueError(f"{url}: the price data lists no providers")
    have, fetched = _priced(get_snapshot()), _priced(snapshot)
    if fetched < have * _MIN_PRICED_SHARE:
        raise ValueError(
            f"{url}: the price data prices {fetched} models, the data in use {have}: "
            "refusing it as truncated"
        )
    lost = _now_free(get_snapshot(), snapshot)
    if lost:
        raise ValueError(
            f"{url}: the price data drops or zeroes prices of {', '.join(lost[:3])} that the "
            "data in use charges: refusing it rather than price any part of a call at $0"
        )
    return snapshot


def _has_price(prices: Any) -> bool:
    if isinstance(prices, list):
        return bool(prices)
    return any(v is not None for k, v in vars(prices).items() if k[:1] != "_")


def _charged(prices: Any) -> dict[str, Any]:
    """The price fields that charge something (set, and not 0)."""
    if isinstance(prices, list):
        return {"conditional prices": True} if prices else {}
    return {
        name: value
        for name, value in vars(prices).items()
        if name[:1] != "_" and value is not None and not (isinstance(value, Decimal) and not value)
    }


def _now_free(old: DataSnapshot, new: DataSnapshot) -> list[str]:
    """Models of which the fetched data drops or zeroes a price the data in use charges
    (output, cached input, ...): a call would be charged nothing for that part."""
    charged = {
        (provider.id, model.id): _charged(model.prices)
        for provider in old.providers
        for model in provider.models
    }
    lost = []
    for provider in new.providers:
        for model in provider.models:
            before = charged.get((provider.id, model.id))
            if before and set(before) - set(_charged(model.prices)):
                missing = ", ".join(sorted(set(before) - set(_charged(model.prices))))
                lost.append(f"{provider.id}/{model.id} ({missing})")
    return lost


def fetch_snapshot(url: str | None = None, timeout: float = 10.0) -> DataSnapshot:
    """Fetch and check the price data at ``url`` (genai-prices' own by default) once,
    without installing it: for ``budgetguard prices --diff``."""
    import httpx2
    from genai_prices.update_prices import DEFAULT_UPDATE_URL, UpdatePrices

    target = url or DEFAULT_UPDATE_URL
    fetcher = UpdatePrices(url=target, request_timeout=httpx2.Timeout(timeout, connect=timeout))
    return _check(fetcher.fetch(), target)


def _updater_class() -> type[Any]:
    from genai_prices.data_snapshot import get_snapshot, set_custom_snapshot
    from genai_prices.update_prices import UpdatePrices

    class _BudgetguardUpdater(UpdatePrices):
        """genai-prices' updater, with our checks and cache hook in ``fetch()``."""

        def fetch(self) -> DataSnapshot | None:
            try:
                snapshot = _check(super().fetch(), self.url)
            except Exception as error:
                if self is _updater:
                    _failed(self.url, error)
                raise  # genai-prices logs it and keeps the snapshot in use
            if self is not _updater:
                # Stopped or replaced (another URL) while fetching: what it fetched is
                # not what was asked for any more; the prices in use stay.
                return get_snapshot()
            set_custom_snapshot(snapshot)  # genai-prices sets it again on return: same object
            _installed(self.url)
            return snapshot

    return _BudgetguardUpdater


def _failed(url: str, error: Exception) -> None:
    global _attempts, _last_error, _failing
    with _lock:
        _attempts += 1
        _last_error = f"{type(error).__name__}: {error}"
        first = not _failing
        _failing = True
        _done.notify_all()
    if first:
        log.warning(
            "budgetguard: fetching prices from %s failed (%s); keeping the prices in use "
            "and retrying at the next refresh (logged once until a fetch succeeds)",
            url,
            _last_error,
        )


def _installed(url: str) -> None:
    global _attempts, _generation, _fetched_at, _fetched_url, _last_error, _failing
    with _lock:
        _generation += 1
        _fetched_at = datetime.now(UTC)
        _fetched_url = url
        recovered = _failing
        _failing = False
        _last_error = None
        books = list(_books)
    for book in books:
        book.invalidate()
    with _lock:
        _attempts += 1
        _done.notify_all()
    if recovered:
        log.warning("budgetguard: prices fetched from %s again", url)


def start(refresh: float, url: str | None = None) -> None:
    """(Re)start the background updater; the first fetch starts at once."""
    global _updater
    from genai_prices.update_prices import DEFAULT_UPDATE_URL

    updater = _updater_class()(update_interval=refresh, url=url or DEFAULT_UPDATE_URL)
    with _lock:
        old, _updater = _updater, updater
    if old is not None:
        # Stopping the last instance wakes the shared thread; started again before or
        # after it notices, it (or a new thread) fetches at once with our settings.
        old.stop()
    updater.start()


def stop() -> None:
    """Stop the updater. The prices last fetched stay in use (genai-prices' rule)."""
    global _updater
    with _lock:
        old, _updater = _updater, None
    if old is not None:
        old.stop()


def refresh_prices(timeout: float = 30.0) -> bool:
    """Fetch now (the updater must be running) and wait up to ``timeout`` seconds for the
    outcome. True if new prices are in use, False if the fetch failed or timed out."""
    with _lock:
        updater = _updater
        before_attempts, before_generation = _attempts, _generation
    if updater is None:
        raise ConfigurationError("refresh_prices: live prices are off; set prices_refresh")
    start(updater.update_interval, updater.url)  # a restart fetches at once
    return wait_for_fetch(before_attempts, before_generation, timeout)


def wait_for_fetch(after_attempts: int, after_generation: int, timeout: float) -> bool:
    with _lock:
        _done.wait_for(lambda: _attempts > after_attempts, timeout)
        return _generation > after_generation


def attempts() -> tuple[int, int]:
    """(fetch attempts, generation) so far: to wait for the next outcome."""
    with _lock:
        return _attempts, _generation


def _snapshot_date() -> datetime | None:
    try:
        from genai_prices import data

        return datetime.fromtimestamp(Path(str(data.__file__)).stat().st_mtime, UTC)
    except (OSError, TypeError):
        return None


def price_status() -> PriceStatus:
    """Where the prices in use come from, how old they are, whether the updater runs."""
    from genai_prices import __version__
    from genai_prices.data_snapshot import get_snapshot

    fetched = get_snapshot().from_auto_update
    with _lock:
        updater = _updater
        return PriceStatus(
            source="fetched" if fetched else "snapshot",
            url=updater.url if updater is not None else _fetched_url,
            fetched_at=_fetched_at if fetched else None,
            snapshot_date=_snapshot_date(),
            genai_prices_version=str(__version__),
            refresh=float(updater.update_interval) if updater is not None else None,
            last_error=_last_error,
            generation=_generation,
        )


def _reset_for_tests() -> None:
    """Stop the updater and go back to the wheel's snapshot (tests only)."""
    global _fetched_at, _fetched_url, _last_error, _failing, _generation
    from genai_prices.data_snapshot import set_custom_snapshot

    stop()
    set_custom_snapshot(None)
    with _lock:
        _fetched_at = _fetched_url = _last_error = None
        _failing = False
        _generation += 1
        books = list(_books)
    for book in books:
        book.invalidate()
