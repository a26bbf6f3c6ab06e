"""Process-wide configuration: the policy, the store and the price book.

One immutable ``Settings`` object, swapped whole by ``configure``; a call
reads it once, so a reconfiguration never tears a call in half. This holds
configuration only - spend lives in the store, never in a module global.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, Literal

from .._core.errors import ConfigurationError, UnknownModel
from .._core.policy import Policy
from .._core.records import CallRecord
from ..pricing import live
from ..pricing.book import FreeModels, PriceBook
from ..pricing.prices import Price
from ..stores.base import AsyncStore, Store
from ..stores.memory import MemoryStore

__all__ = ["Settings", "configure", "current", "reset"]


class _Keep(Enum):
    KEEP = "keep"


_KEEP: Final = _Keep.KEEP


@dataclass(frozen=True)
class Settings:
    """Everything ``configure`` set: read once per call, replaced whole, never mutated.

    ``store`` serves sync code and ``async_store`` async code (one
    ``MemoryStore`` serves both); either may be None when the configured
    store only speaks the other.
    """

    policy: Policy = field(default_factory=Policy)
    store: Store | None = None
    async_store: AsyncStore | None = None
    prices: PriceBook = field(default_factory=PriceBook)
    store_url: str = "memory://"
    listeners: tuple[Callable[[CallRecord], None], ...] = ()
    prices_refresh: float | None = None
    """Seconds between live price fetches (genai-prices' updater), None: off."""
    prices_url: str | None = None
    """Where live prices are fetched from; None: genai-prices' own URL."""

    def require_store(self) -> Store:
        """The sync store, or a ConfigurationError saying there is none."""
        if self.store is None:
            raise ConfigurationError(
                "store: the configured store is async-only; use it from async code "
                "or configure a sync store as well"
            )
        return self.store

    def require_async_store(self) -> AsyncStore:
        """The async store, or a ConfigurationError saying there is none."""
        if self.async_store is None:
            raise ConfigurationError(
                "store: the configured store is sync-only; give an AsyncStore "
                "(e.g. AsyncRedisStore) for async code"
            )
        return self.async_store


def _default_settings() -> Settings:
    memory = MemoryStore()
    return Settings(store=memory, async_store=memory)


_settings = _default_settings()
_lock = threading.Lock()


def current() -> Settings:
    return _settings


def _stores_from(store: object) -> tuple[Store | None, AsyncStore | None, str]:
    if isinstance(store, str):
        url = store.strip()
        if url in ("", "memory", "memory://"):
            memory = MemoryStore()
            return memory, memory, "memory://"
        if url.startswith(("redis://", "rediss://", "unix://")):
            from ..stores.redis import AsyncRedisStore, RedisStore

            return RedisStore.from_url(url), AsyncRedisStore.from_url(url), url
        raise ConfigurationError(
            f"store: unsupported URL {store!r}; use 'memory://' or 'redis://host:port/db'"
        )
    sync = store if isinstance(store, Store) else None
    async_ = store if isinstance(store, AsyncStore) else None
    if sync is None and async_ is None:
        raise ConfigurationError(
            f"store: expected a URL or a Store / AsyncStore, got {type(store).__name__}"
        )
    return sync, async_, type(store).__name__


def configure(
    *,
    store: object | None = None,
    policy: Policy | Mapping[str, Any] | None = None,
    prices: Mapping[str, Price | Mapping[str, Any]] | None = None,
    fallback_price: Price | Mapping[str, Any] | None = None,
    providers: Mapping[str, str] | None = None,
    async_store: AsyncStore | None = None,
    listeners: Iterable[Callable[[CallRecord], None]] | None = None,
    free_models: FreeModels | None = None,
    prices_refresh: str | float | Literal[_Keep.KEEP] | None = _KEEP,
    prices_url: str | None = None,
) -> Settings:
    """Set what budgetguard enforces, process-wide. Unnamed settings keep their value.

    ``store``: ``"memory://"`` (default, in-process), ``"redis://host:6379/0"``
    (shared by every process), or a store object. ``prices``: per-model
    overrides and custom models, USD per million tokens.
    ``fallback_price``: what an unknown model costs instead of raising
    ``UnknownModel``. ``providers``: model name -> provider id, where the
    name alone is ambiguous (it wins over the provider a client was
    instrumented with). ``free_models``: a model genai-prices lists with no
    price costs $0 (``"price"``, the default, logged) or raises
    ``UnknownModel`` (``"refuse"``). ``prices_refresh``: fetch genai-prices'
    data every ``"1h"`` (``"30m"``, seconds...) in the background and price
    the next call at it; ``None`` stops fetching (the prices last fetched stay
    in use). ``prices_url``: where to fetch it from (a mirror), default
    genai-prices' own.
    """
    global _settings
    if prices_url is not None and (not isinstance(prices_url, str) or not prices_url.strip()):
        raise ConfigurationError(f"prices_url: expected a URL, got {prices_url!r}")
    refresh = None if prices_refresh is _KEEP else live.parse_refresh(prices_refresh)
    with _lock:
        old = _settings
        new_policy = old.policy
        if policy is not None:
            new_policy = policy if isinstance(policy, Policy) else Policy.model_validate(policy)
        sync, async_, url = old.store, old.async_store, old.store_url
        if store is not None:
            sync, async_, url = _stores_from(store)
        if async_store is not None:
            async_ = async_store
        book = old.prices
        if any(v is not None for v in (prices, fallback_price, providers, free_models)):
            book = PriceBook(
                prices if prices is not None else book.overrides,
                fallback=fallback_price if fallback_price is not None else book.fallback,
                providers=providers if providers is not None else book.providers,
                free_models=free_models if free_models is not None else book.free_models,
            )
        _check_downgrades(new_policy, book)
        new_refresh = old.prices_refresh if prices_refresh is _KEEP else refresh
        new_url = prices_url.strip() if prices_url is not None else old.prices_url
        _settings = Settings(
            policy=new_policy,
            store=sync,
            async_store=async_,
            prices=book,
            store_url=url,
            listeners=old.listeners if listeners is None else tuple(listeners),
            prices_refresh=new_refresh,
            prices_url=new_url,
        )
        if (new_refresh, new_url) != (old.prices_refresh, old.prices_url):
            if new_refresh is None:
                live.stop()
            else:
                live.start(new_refresh, new_url)
        return _settings


def _check_downgrades(policy: Policy, book: PriceBook) -> None:
    """Every model a downgrade leads to must have a price: found now, not at the call."""
    for start, target in policy.downgrade.items():
        try:
            book.rates(target)
        except UnknownModel as error:
            raise ConfigurationError(
                f"downgrade[{start!r}]: {target!r} has no price ({error}); add it with "
                f"prices={{{target!r}: ...}} or fix the name"
            ) from None


def reset() -> Settings:
    """Back to the defaults: no limits, a fresh in-process store, genai-prices only."""
    global _settings
    with _lock:
        if _settings.prices_refresh is not None:
            live.stop()
        _settings = _default_settings()
        return _settings
