"""Model -> rates: genai-prices data, user overrides and a fallback, cached per model.

Every guarded call is priced twice (worst case before, actual usage after),
so a lookup must cost a dict hit, not a trip through genai-prices' matching
and ``Decimal`` arithmetic (~170 us per ``calc_price``). ``PriceBook`` turns
a model's prices into integer rates once - nano-USD per *million* tokens, so
a rate with up to nine decimals of USD/MTok stays exact - and ``ModelRates``
then prices usage with integers only, rounding up once at the very end: the
result is exactly ``ceil(genai_prices.calc_price(...).total_price * 1e9)``.

A model nobody can price is never free: it raises ``UnknownModel`` unless a
fallback price is configured. Prices that change over time (genai-prices'
dated and time-of-day prices) are picked up by re-resolving a cache entry
after an hour, or at the next price boundary when that comes sooner. Live
prices (``live.py``: genai-prices' updater) clear every book's cache when a
fetched snapshot is installed, so the next call prices at the new data and a
cache hit stays a plain dict lookup.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

from .._core.errors import ConfigurationError, UnknownModel
from .._core.usage import PriceContext, Usage
from . import live
from .detailed import DETAIL_KEYS
from .output_limits import DEFAULT_MAX_OUTPUT_TOKENS, table_max_output
from .prices import Price, rates_from_price
from .rates import ModelRates, Rate, TieredRate, nanos_per_million

__all__ = ["REFRESH_SECONDS", "FreeModels", "PriceBook"]

FreeModels = Literal["price", "refuse"]

log = logging.getLogger("budgetguard")

REFRESH_SECONDS = 3600.0
"""A cached genai-prices entry is re-resolved after this long (monotonic clock)."""

# -- genai-prices -----------------------------------------------------------------


def _genai_rate(value: object, scale: int = 1) -> Rate | None:
    from genai_prices.types import TieredPrices

    if value is None:
        return None
    if isinstance(value, Decimal):
        return nanos_per_million(value, scale)
    if isinstance(value, TieredPrices):
        tiers = tuple(
            (int(tier.start), nanos_per_million(tier.price, scale))
            for tier in sorted(value.tiers, key=lambda tier: tier.start)
        )
        base = nanos_per_million(value.base, scale)
        return TieredRate(base, tiers) if tiers else base
    raise TypeError(f"unexpected genai-prices price {value!r}")


_DETAIL_PRICE_KEYS = {
    key: ("web_searches_kcount" if key == "web_searches" else key.replace("_tokens", "_mtok"))
    for key in DETAIL_KEYS
}


def _is_free(prices: Any) -> bool:
    """genai-prices lists the model with no price at all (its way of saying free)."""
    return not any(value is not None for name, value in vars(prices).items() if name[:1] != "_")


def _rates_from_genai(
    provider: Any, model: Any, now: datetime, context: PriceContext, free: FreeModels
) -> ModelRates | None:
    # A price variant (service tier, batch, fast mode) applies to the provider's own
    # models only, not to a fallback provider's (genai-prices' rule).
    own = any(model is candidate for candidate in provider.models)
    prices = model.get_prices(now, dict(context)) if context and own else model.get_prices(now)
    input_rate = _genai_rate(getattr(prices, "input_mtok", None))
    output_rate = _genai_rate(getattr(prices, "output_mtok", None))
    if input_rate is not None and output_rate is None:
        output_rate = 0  # an embedding model: genai-prices prices no output either
    if input_rate is None or output_rate is None:
        if free == "price" and _is_free(prices):
            return ModelRates(
                model=model.id,
                provider=provider.id,
                input_rate=0,
                output_rate=0,
                max_output_tokens=table_max_output(model.id) or DEFAULT_MAX_OUTPUT_TOKENS,
                context_window=model.context_window,
                source="free",
            )
        return None
    requests = _genai_rate(getattr(prices, "requests_kcount", None), scale=1000)
    if isinstance(requests, TieredRate):  # never seen; charge the highest tier
        requests = max([requests.base, *(rate for _, rate in requests.tiers)])
    context_window = model.context_window
    return ModelRates(
        model=model.id,
        provider=provider.id,
        input_rate=input_rate,
        output_rate=output_rate,
        cache_read_rate=_genai_rate(getattr(prices, "cache_read_mtok", None)),
        cache_write_rate=_genai_rate(getattr(prices, "cache_write_mtok", None)),
        cache_write_1h_rate=_genai_rate(getattr(prices, "cache_write_1h_mtok", None)),
        reasoning_rate=_genai_rate(getattr(prices, "output_reasoning_mtok", None)),
        request_rate=requests or 0,
        detail_rates=tuple(
            (key, rate)
            for key, price_key in _DETAIL_PRICE_KEYS.items()
            if (rate := _genai_rate(getattr(prices, price_key, None))) is not None
        ),
        max_output_tokens=(
            table_max_output(model.id) or context_window or DEFAULT_MAX_OUTPUT_TOKENS
        ),
        context_window=context_window,
        source="genai-prices",
    )


def _next_price_change(model: Any, now: datetime) -> datetime | None:
    """The next instant a dated or time-of-day conditional price may switch."""
    from genai_prices.types import StartDateConstraint, TimeOfDateConstraint

    if not isinstance(model.prices, list):
        return None
    candidates: list[datetime] = []
    for conditional in model.prices:
        constraint = conditional.constraint
        if isinstance(constraint, StartDateConstraint):
            start = datetime.combine(constraint.start_date, dtime(0), UTC)
            if start > now:
                candidates.append(start)
        elif isinstance(constraint, TimeOfDateConstraint):
            for moment in (constraint.start_time, constraint.end_time):
                at = _today_at(now.date(), moment)
                candidates.append(at if at > now else at + timedelta(days=1))
    return min(candidates, default=None)


def _today_at(day: date, moment: dtime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return datetime.combine(day, moment).astimezone(UTC)


def _find(model: str, provider: str | None) -> tuple[Any, Any] | None:
    """genai-prices' own matching, then again without a ``provider/`` prefix."""
    from genai_prices.data_snapshot import get_snapshot

    snapshot = get_snapshot()
    attempts: list[tuple[str, str | None]] = [(model, provider)]
    if "/" in model:
        prefix, _, rest = model.partition("/")
        attempts += [(rest, provider or prefix), (rest, provider)]
    for ref, provider_id in attempts:
        try:
            return snapshot.find_provider_model(ref, None, provider_id, None)
        except LookupError:
            continue
    return None


def _log_free(rates: ModelRates) -> None:
    log.warning(
        "budgetguard: genai-prices lists no price for %s (%s): priced $0 as free. "
        "configure(free_models='refuse') refuses such models instead.",
        rates.model,
        rates.provider,
    )


def _check_provider(provider: str, where: str) -> None:
    from genai_prices.data_snapshot import get_snapshot

    try:
        get_snapshot().find_provider(None, provider, None)
    except LookupError:
        raise ConfigurationError(f"{where}: unknown provider {provider!r}") from None


# -- the book -----------------------------------------------------------------------

_MAX_CACHED = 4096
_FOREVER = float("inf")


class PriceBook:
    """Where rates come from: override > genai-prices > fallback, else ``UnknownModel``.

    ``overrides`` maps a model name (exact string) to a ``Price`` or a mapping
    of its fields; ``fallback`` prices any model nobody else can;
    ``providers`` maps a model name to the genai-prices provider id to look it
    up under; it wins over the provider a client was instrumented with (the
    user said so for that model). ``free_models``: a model genai-prices lists
    with no price at all is priced $0 (``"price"``, logged once) or refused as
    ``UnknownModel`` (``"refuse"``). Thread-safe; lookups are cached by the
    exact ``(model, provider, price context)`` asked.
    """

    __slots__ = (
        "__weakref__",
        "_cache",
        "_fallback",
        "_free",
        "_lock",
        "_overrides",
        "_providers",
    )

    def __init__(
        self,
        overrides: Mapping[str, Price | Mapping[str, object]] | None = None,
        *,
        fallback: Price | Mapping[str, object] | None = None,
        providers: Mapping[str, str] | None = None,
        free_models: FreeModels = "price",
    ) -> None:
        if free_models not in ("price", "refuse"):
            raise ConfigurationError(
                f"free_models: expected 'price' or 'refuse', got {free_models!r}"
            )
        self._free: FreeModels = free_models
        parsed: dict[str, Price] = {}
        for name, price in (overrides or {}).items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"prices: model names must be non-empty strings: {name!r}")
            parsed[name] = Price.parse(price, where=f"prices[{name!r}]")
        self._overrides: Mapping[str, Price] = MappingProxyType(parsed)
        self._fallback = None if fallback is None else Price.parse(fallback, where="fallback")
        checked: dict[str, str] = {}
        for name, provider in (providers or {}).items():
            where = f"providers[{name!r}]"
            if not isinstance(provider, str):
                raise ConfigurationError(f"{where}: expected a provider id, got {provider!r}")
            _check_provider(provider, where)
            checked[name] = provider
        self._providers: Mapping[str, str] = MappingProxyType(checked)
        self._cache: dict[
            tuple[str, str | None, PriceContext, str | None], tuple[ModelRates, float]
        ] = {}
        self._lock = threading.Lock()
        live.follow(self)

    def invalidate(self) -> None:
        """Forget every resolved rate: the next lookup of each model resolves again
        (called when live prices install a fetched snapshot)."""
        with self._lock:
            self._cache.clear()

    @property
    def overrides(self) -> Mapping[str, Price]:
        return self._overrides

    @property
    def fallback(self) -> Price | None:
        return self._fallback

    @property
    def providers(self) -> Mapping[str, str]:
        return self._providers

    @property
    def free_models(self) -> FreeModels:
        return self._free

    def rates(
        self,
        model: str,
        provider: str | None = None,
        context: PriceContext = (),
        hint: str | None = None,
    ) -> ModelRates:
        """The rates of ``model`` (at the price variant ``context`` selects, e.g. a
        service tier): a dict hit once resolved (refreshed after an hour). ``hint``:
        the provider to try when none is given and the name alone finds none (the
        SDK's own, for a client on an unknown host)."""
        key = (model, provider, context, hint)
        entry = self._cache.get(key)
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        generation = live.generation()
        rates, expires = self._resolve(model, provider, context, hint)
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            if generation == live.generation():  # else resolved from the data just replaced
                self._cache[key] = (rates, expires)
        return rates

    def cost(self, model: str, usage: Usage, provider: str | None = None) -> int:
        """nano-USD ``usage`` of ``model`` costs (at the tier ``usage.context`` names)."""
        return self.rates(model, provider, usage.context).cost(usage)

    def _resolve(
        self, model: str, provider: str | None, context: PriceContext, hint: str | None
    ) -> tuple[ModelRates, float]:
        if not isinstance(model, str) or not model:
            raise ConfigurationError(f"model: expected a model name, got {model!r}")
        override = self._overrides.get(model)
        if override is not None:
            return rates_from_price(model, "custom", override, "override"), _FOREVER
        provider_id = self._providers.get(model) or provider
        detail = f" under provider {provider_id!r}" if provider_id else ""
        found = _find(model, provider_id)
        if found is None and provider_id is None and hint is not None:
            found = _find(model, hint)
        if found is not None:
            now = datetime.now(UTC)
            rates = _rates_from_genai(found[0], found[1], now, context, self._free)
            if rates is not None:
                if rates.source == "free":
                    _log_free(rates)
                ttl = REFRESH_SECONDS
                change = _next_price_change(found[1], now)
                if change is not None:
                    ttl = min(ttl, (change - now).total_seconds() + 0.001)
                return rates, time.monotonic() + ttl
            detail = (
                f": genai-prices knows {found[1].id!r} ({found[0].id}) "
                "but has no per-token input and output price for it"
                + (
                    " (it lists the model as free; free_models='refuse')"
                    if _is_free(found[1].get_prices(now))
                    else ""
                )
            )
        if self._fallback is not None:
            rates = rates_from_price(model, provider_id or "custom", self._fallback, "fallback")
            return rates, time.monotonic() + REFRESH_SECONDS  # genai-prices may learn it
        raise UnknownModel(model, detail)
