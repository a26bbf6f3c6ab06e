"""OpenTelemetry: a span and metrics per guarded call, from its ``CallRecord``.

``bg.configure(listeners=[OpenTelemetry()])`` (the ``budgetguard[otel]`` extra; only
``opentelemetry-api`` is needed at run time, the SDK or a distro is the user's
choice). The listener runs on the request path, after the call, so it does as
little as it can there: instruments and tracer are made once, metric attribute sets
are cached per (feature, model, outcome, ...), no-op providers (given, or the global
ones before any is set) skip the work altogether, and with a real SDK the span and
measurements are made on a background thread.

A listener only runs once the call is over, so it cannot open a span *around* the
call: it records one after the fact, with the call's own start and end times
(``record.at - record.latency_s`` .. ``record.at``), as a child of whatever span is
current. When that current span already is the call's GenAI span - opened by
instrumentation that wraps budgetguard's wrapper, or by the user - it is enriched
instead (see ``otel_spans.enrichable``): one span per call, never a twin.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._core.errors import ConfigurationError
from .._core.records import CallRecord
from . import otel_names as n
from .background import Worker
from .otel_gauges import LimitGauges
from .otel_spans import ERRORED, enrichable, span_attributes

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

__all__ = ["OpenTelemetry"]

log = logging.getLogger("budgetguard.otel")

MAX_ATTRIBUTE_SETS = 4096
"""Metric attribute sets kept ready-made; past it the cache starts over (a guard against
an unbounded dimension, not a limit on what is recorded)."""

_OVERFLOW_KEY = frozenset({("otel.metric.overflow", True)})
_ENRICHED: Any = object()  # no span of ours: the call's own was enriched, or no tracing


def _version() -> str:
    try:
        return importlib.metadata.version("budgetguard")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _metrics_state() -> Any:
    """The module holding the API's global meter provider (private: None if it moved)."""
    try:
        from opentelemetry.metrics import _internal
    except ImportError:
        return None
    return _internal


def _load() -> tuple[Any, Any]:
    """The ``opentelemetry.trace`` and ``opentelemetry.metrics`` modules, or an ImportError
    that says how to get them."""
    try:
        from opentelemetry import metrics, trace
    except ImportError as error:
        raise ImportError(
            "budgetguard.observe.OpenTelemetry needs opentelemetry-api: "
            "pip install 'budgetguard[otel]'"
        ) from error
    return trace, metrics


class OpenTelemetry:
    """A listener recording each guarded call as an OpenTelemetry span and metrics.

    ``tracer_provider`` / ``meter_provider``: default the global ones (which an SDK or
    distro configures; until then they are no-ops). ``attributes``: the dimensions of
    the metrics, among ``feature``, ``model`` (requested and response model) and
    ``outcome``; ``gen_ai.operation.name`` and ``gen_ai.provider.name`` are always there.
    ``include_tenant`` / ``include_user``: also put tenant and user on spans and metrics
    (and report tenant / user limits as gauges) - off by default, because each tenant
    or user is a new time series and may be personal data. ``operation``: the
    ``gen_ai.operation.name`` of the calls (a ``CallRecord`` does not say which).
    ``max_limits``: how many limits the gauges follow (past it, the one followed
    longest is dropped); ``gauge_store``: whose counters they read (default: the
    configured store, at collection time).

    ``background`` (default): the request path only checks for a span to enrich and
    queues the record (a bounded queue; a full one drops and counts, never blocks);
    a thread makes the span and the measurements, which the SDK makes cost tens of
    microseconds. ``background=False`` does it all in the call (tests, or a no-op
    provider). ``flush()`` waits for what was queued.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        attributes: Sequence[str] = ("feature", "model", "outcome"),
        include_tenant: bool = False,
        include_user: bool = False,
        operation: str = "chat",
        max_limits: int = 256,
        gauge_store: Any = None,
        background: bool = True,
        max_queue: int = 10_000,
    ) -> None:
        trace, metrics = _load()
        from opentelemetry.context import Context

        if isinstance(attributes, str):
            raise ConfigurationError(
                f"attributes: expected a sequence of names, got the string {attributes!r}"
            )
        for name in attributes:
            if name not in n.ATTRIBUTE_CHOICES:
                choices = ", ".join(sorted(n.ATTRIBUTE_CHOICES))
                raise ConfigurationError(f"attributes: {name!r} is not one of {choices}")
        if not isinstance(operation, str) or not operation:
            raise ConfigurationError(f"operation: expected a name like 'chat', got {operation!r}")
        self.attributes = tuple(attributes)
        self.include_tenant = include_tenant
        self.include_user = include_user
        self.operation = operation
        self._trace = trace
        self._metrics = metrics
        self._metrics_state = _metrics_state()
        self._kind = trace.SpanKind.CLIENT
        self._status_of = trace.Status
        self._error_code = trace.StatusCode.ERROR
        version = _version()
        self._tracer = trace.get_tracer("budgetguard", version, tracer_provider=tracer_provider)
        # No-op providers say "none of this": skip the work, not just its export. With the
        # global providers, undecided (None) until one is set - which happens only once.
        self._tracing: bool | None = (
            None
            if tracer_provider is None
            else not isinstance(tracer_provider, trace.NoOpTracerProvider)
        )
        self._metering: bool | None = (
            None
            if meter_provider is None
            else not isinstance(meter_provider, metrics.NoOpMeterProvider)
        )
        meter = metrics.get_meter("budgetguard", version, meter_provider=meter_provider)
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used per guarded call, by gen_ai.token.type (input, output)",
            explicit_bucket_boundaries_advisory=n.TOKEN_BUCKETS,
        )
        self._cost_lock = threading.Lock()
        self._costs: dict[frozenset[tuple[str, Any]], tuple[dict[str, Any], list[int]]] = {}
        meter.create_observable_counter(
            "budgetguard.cost",
            callbacks=[self._observe_cost],
            unit="USD",
            description="What guarded calls cost, in USD: summed exactly in nano-USD, a "
            "float only when collected",
        )
        self._denials = meter.create_counter(
            "budgetguard.denials",
            unit="{call}",
            description="Calls refused by a limit, by budgetguard.refused_by.scope",
        )
        self.gauges = LimitGauges(
            meter,
            include_tenant=include_tenant,
            include_user=include_user,
            max_limits=max_limits,
            store=gauge_store,
        )
        self._use_feature = "feature" in attributes
        self._use_model = "model" in attributes
        self._use_outcome = "outcome" in attributes
        self._sets: dict[tuple[object, ...], _Sets] = {}
        self._failures = 0
        self._empty = Context()
        self._worker: Worker[tuple[CallRecord, Span | None]] | None = (
            Worker("budgetguard-otel", self._handle, max_queue) if background else None
        )

    # -- the request path ------------------------------------------------------------------
    def __call__(self, record: CallRecord) -> None:
        try:
            parent: Span | None = _ENRICHED
            tracing = self._tracing
            if tracing is None:
                tracing = self._global_tracing()
            if tracing:
                current = self._trace.get_current_span()
                if current.is_recording() and enrichable(current, record, self.operation):
                    self._enrich(current, record)  # now: its owner may end it any moment
                elif current.get_span_context().is_valid:
                    parent = current
                else:
                    parent = None
            elif not (self._metering if self._metering is not None else self._global_metering()):
                return
            worker = self._worker
            if worker is None:
                self._handle([(record, parent)])
            else:
                worker.put((record, parent))
        except Exception:
            self._failed()

    def _global_tracing(self) -> bool:
        """Whether the global tracer provider is a real one: False while none is set,
        decided for good once one is (it can be set only once). The API's own getter
        reads the environment on every call, so its global is looked at first."""
        if getattr(self._trace, "_TRACER_PROVIDER", True) is None:
            return False
        provider = self._trace.get_tracer_provider()
        if isinstance(provider, self._trace.ProxyTracerProvider):
            return False
        self._tracing = not isinstance(provider, self._trace.NoOpTracerProvider)
        return self._tracing

    def _global_metering(self) -> bool:
        state = self._metrics_state
        if state is not None and getattr(state, "_METER_PROVIDER", True) is None:
            return False
        provider = self._metrics.get_meter_provider()
        if type(provider).__name__ == "_ProxyMeterProvider":
            return False
        self._metering = not isinstance(provider, self._metrics.NoOpMeterProvider)
        return self._metering

    def _failed(self) -> None:
        # emit() would catch it too; a broken exporter must not flood the log per call.
        self._failures += 1
        if self._failures == 1 or self._failures % 1000 == 0:
            log.exception(
                "budgetguard: the OpenTelemetry listener failed (%d times so far); "
                "the call is unaffected",
                self._failures,
            )

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every call recorded so far is handed to the SDK (background mode);
        False on timeout. The SDK's own processors and readers export on their schedule."""
        return True if self._worker is None else self._worker.flush(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, then stop the background thread."""
        if self._worker is not None:
            self._worker.close(timeout)

    # -- the SDK's side (the background thread, or inline) --------------------------------
    def _handle(self, batch: list[tuple[CallRecord, Span | None]]) -> None:
        for record, parent in batch:
            try:
                if parent is not _ENRICHED:
                    self._span(record, parent)
                if self._metering is not False:
                    self._measure(record)
                    if record.counters:
                        self.gauges.saw(record.counters)
            except Exception:
                self._failed()

    def _span(self, record: CallRecord, parent: Span | None) -> None:
        end = int(record.at * 1e9)
        model = record.requested_model or record.model
        span = self._tracer.start_span(
            f"{self.operation} {model}" if model else self.operation,
            context=self._empty if parent is None else self._trace.set_span_in_context(parent),
            kind=self._kind,
            attributes=self.span_attributes(record),  # at the start: cheaper, and samplers see them
            start_time=end - int(record.latency_s * 1e9),
        )
        if record.outcome in ERRORED:
            span.set_status(self._status_of(self._error_code, record.error))
        span.end(end_time=end)

    def span_attributes(self, record: CallRecord) -> dict[str, Any]:
        """Every attribute the call's span carries (public for tests and custom exporters)."""
        return span_attributes(
            record,
            self.operation,
            include_tenant=self.include_tenant,
            include_user=self.include_user,
        )

    def _enrich(self, span: Span, record: CallRecord) -> None:
        """Add to a span someone else opened for this call: the conventions' attributes it
        lacks (the instrumentation's own values win), and budgetguard's and cost's always.
        Its name, times and end stay its owner's."""
        present = getattr(span, "attributes", None) or {}
        attrs = {
            key: value
            for key, value in self.span_attributes(record).items()
            if not (key.startswith("gen_ai.") and not key.startswith(n.COST_PREFIX))
            or key not in present
        }
        span.set_attributes(attrs)
        if record.outcome in ERRORED:
            span.set_status(self._status_of(self._error_code, record.error))

    def _measure(self, record: CallRecord) -> None:
        sets = self._attribute_sets(record)
        usage = record.usage
        if usage is not None:
            self._tokens.record(usage.input_tokens, sets.input)
            self._tokens.record(usage.output_tokens, sets.output)
        if record.cost:
            with self._cost_lock:  # summed here, exactly: the SDK sees one float per collection
                sets.cost[0] += record.cost
        if record.outcome == "denied":
            self._denials.add(1, sets.denial)

    def _observe_cost(self, _options: Any) -> list[Any]:
        observation = self._metrics.Observation
        return [
            observation(total[0] / 1e9, attrs)
            for attrs, total in list(self._costs.values())
            if total[0]  # a combination that never cost anything (denials) has no series
        ]

    def _attribute_sets(self, record: CallRecord) -> _Sets:
        """The attribute sets of ``record``'s measurements, built once per distinct
        combination and reused: the SDK only has to hash them."""
        refused = record.refused_by
        key = (
            record.feature if self._use_feature else None,
            (record.requested_model, record.model) if self._use_model else None,
            record.outcome if self._use_outcome else None,
            record.provider,
            record.tenant if self.include_tenant else None,
            record.user if self.include_user else None,
            None if refused is None else refused.scope,
        )
        sets = self._sets.get(key)
        if sets is None:
            sets = self._build_sets(record)
            if len(self._sets) >= MAX_ATTRIBUTE_SETS:
                self._sets.clear()
            self._sets[key] = sets
        return sets

    def _build_sets(self, record: CallRecord) -> _Sets:
        base: dict[str, Any] = {n.OPERATION: self.operation}
        provider = n.provider_name(record.provider)
        if provider is not None:
            base[n.PROVIDER] = provider
        if self._use_model:
            requested = record.requested_model or record.model
            if requested is not None:
                base[n.REQUEST_MODEL] = requested
            if record.model is not None:
                base[n.RESPONSE_MODEL] = record.model
        if self._use_feature and record.feature is not None:
            base[n.FEATURE] = record.feature
        if self._use_outcome:
            base[n.OUTCOME] = record.outcome
        if self.include_tenant and record.tenant is not None:
            base[n.TENANT] = record.tenant
        if self.include_user and record.user is not None:
            base[n.USER] = record.user
        refused = record.refused_by
        with self._cost_lock:
            identity = frozenset(base.items())
            if identity not in self._costs and len(self._costs) >= MAX_ATTRIBUTE_SETS:
                identity = _OVERFLOW_KEY
                base_for_cost: dict[str, Any] = {"otel.metric.overflow": True}
            else:
                base_for_cost = base
            entry = self._costs.setdefault(identity, (base_for_cost, [0]))
        return _Sets(
            input={**base, n.TOKEN_TYPE: "input"},
            output={**base, n.TOKEN_TYPE: "output"},
            denial={**base, n.REFUSED_SCOPE: "request" if refused is None else refused.scope},
            cost=entry[1],
        )


class _Sets:
    """One combination's ready-made attribute sets, and its running cost in nano-USD."""

    __slots__ = ("cost", "denial", "input", "output")

    def __init__(
        self,
        *,
        input: dict[str, Any],
        output: dict[str, Any],
        denial: dict[str, Any],
        cost: list[int],
    ) -> None:
        self.input = input
        self.output = output
        self.denial = denial
        self.cost = cost
