"""observe.OpenTelemetry: spans and metrics from CallRecords, checked with the real SDK
(in-memory span exporter, in-memory metric reader), through the real engine and an
instrumented OpenAI client against the local fake provider."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

import budgetguard as bg
from budgetguard._core.errors import ConfigurationError
from budgetguard._core.money import nanos_to_usd
from budgetguard._core.records import CallRecord
from budgetguard.testing import FakeProvider

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from budgetguard.observe.otel import OpenTelemetry
from budgetguard.observe.otel_names import provider_name
from budgetguard.observe.otel_spans import usd_text

openai = pytest.importorskip("openai")

MESSAGES = [{"role": "user", "content": "Say hello."}]
USAGE = bg.Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=1024, reasoning_tokens=200)


class Otel:
    """An SDK tracer and meter provider wired to in-memory exporters, and the listeners
    made on them (closed at the end of the test)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("test")
        self.made: list[OpenTelemetry] = []
        self.records: list[CallRecord] = []

    def listener(self, **options: Any) -> OpenTelemetry:
        options.setdefault("background", False)
        made = OpenTelemetry(self.tracer_provider, self.meter_provider, **options)
        self.made.append(made)
        return made

    def configure(self, limits: list[bg.Limit] | None = None, **options: Any) -> OpenTelemetry:
        listener = self.listener(**options)
        limits = limits or [bg.Limit(scope="feature", usd=10, window="day")]
        bg.configure(policy=bg.Policy(limits=limits), listeners=[listener, self.records.append])
        return listener

    def spans(self) -> list[ReadableSpan]:
        for made in self.made:
            assert made.flush(10)
        return list(self.exporter.get_finished_spans())

    def points(self, name: str) -> dict[frozenset[tuple[str, Any]], Any]:
        for made in self.made:
            assert made.flush(10)
        data = self.reader.get_metrics_data()
        found: dict[frozenset[tuple[str, Any]], Any] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            found[frozenset((point.attributes or {}).items())] = point
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = Otel()
    yield made
    for listener in made.made:
        listener.close(5)


def guarded_call(usage: bg.Usage = USAGE, model: str = "gpt-4o", **who: Any) -> None:
    with bg.budget(feature="summarize", **who):
        admission = bg.admit_cost(5_000_000, model=model)
        admission.settle(usage, model=model)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# -- one span per call, with the record's exact numbers ---------------------------------------
def test_a_span_per_call_carries_the_records_exact_numbers(otel: Otel) -> None:
    otel.configure()
    guarded_call(tenant="acme", user="u-1")
    (span,) = otel.spans()
    (record,) = otel.records
    assert span.name == "chat gpt-4o" and span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert span.end_time == int(record.at * 1e9)
    assert span.start_time == span.end_time - int(record.latency_s * 1e9)
    assert record.usage is not None
    assert attrs(span) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 1200,
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 1024,
        "gen_ai.usage.cache_creation.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 200,
        "gen_ai.usage.cost.amount": record.cost / 1e9,
        "gen_ai.usage.cost.currency": "USD",
        "gen_ai.usage.cost.source": "local",
        "budgetguard.cost_usd": f"{record.cost_usd:f}",
        "budgetguard.reserved_usd": f"{record.estimate_usd:f}",
        "budgetguard.outcome": "ok",
        "budgetguard.feature": "summarize",
    }
    assert Decimal(attrs(span)["budgetguard.cost_usd"]) == record.cost_usd > 0


def test_tenant_and_user_only_when_opted_in(otel: Otel) -> None:
    otel.configure(include_tenant=True, include_user=True)
    guarded_call(tenant="acme", user="u-1")
    (span,) = otel.spans()
    assert attrs(span)["budgetguard.tenant"] == "acme"
    assert attrs(span)["budgetguard.user"] == "u-1"


def test_an_unknown_provider_is_left_out_and_the_name_is_the_operation(otel: Otel) -> None:
    otel.configure(operation="text_completion")
    with bg.budget(feature="summarize"):
        bg.admit_cost(1_000).settle_nanos(700)
    (span,) = otel.spans()
    (record,) = otel.records
    assert record.provider is None and record.model is None
    assert span.name == "text_completion"
    assert "gen_ai.provider.name" not in attrs(span)
    assert "gen_ai.request.model" not in attrs(span)
    assert attrs(span)["gen_ai.usage.cost.amount"] == 700 / 1e9
    assert attrs(span)["budgetguard.cost_usd"] == "0.0000007"


def test_a_denial_is_an_error_span_naming_the_limit_that_refused(otel: Otel) -> None:
    otel.configure(limits=[bg.Limit(scope="feature", usd="0.001", window="day")])
    with pytest.raises(bg.BudgetExceeded), bg.budget(feature="summarize"):
        bg.admit_cost(2_000_000, model="gpt-4o")
    (span,) = otel.spans()
    (record,) = otel.records
    assert record.outcome == "denied" and record.error
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == record.error
    got = attrs(span)
    assert got["budgetguard.outcome"] == "denied"
    assert got["error.type"] == "budgetguard.BudgetExceeded"
    assert got["budgetguard.refused_by.scope"] == "feature"
    assert got["budgetguard.refused_by.key"] == "summarize"
    assert got["budgetguard.refused_by.window"] == "day"
    assert got["budgetguard.refused_by.unit"] == "usd"
    assert got["budgetguard.reserved_usd"] == "0.002"
    assert got["gen_ai.usage.cost.amount"] == 0.0
    assert "gen_ai.response.model" not in got and "gen_ai.usage.input_tokens" not in got


def test_a_user_that_refused_is_not_named_unless_users_are_shown(otel: Otel) -> None:
    otel.configure(limits=[bg.Limit(scope="user", usd="0.001", window="day")])
    with pytest.raises(bg.BudgetExceeded), bg.budget(user="u-secret"):
        bg.admit_cost(2_000_000, model="gpt-4o")
    (span,) = otel.spans()
    assert attrs(span)["budgetguard.refused_by.scope"] == "user"
    assert "budgetguard.refused_by.key" not in attrs(span)
    assert "u-secret" not in repr(attrs(span))


def test_an_error_outcome_sets_the_error_status_and_type(otel: Otel) -> None:
    otel.configure()
    with bg.budget(feature="summarize"):
        bg.admit_cost(1_000, model="gpt-4o").release("APIConnectionError: connection refused")
    (span,) = otel.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "APIConnectionError: connection refused"
    assert attrs(span)["error.type"] == "APIConnectionError"
    assert attrs(span)["budgetguard.outcome"] == "error"


async def test_async_calls_make_the_same_span(otel: Otel) -> None:
    otel.configure()
    async with bg.spend_limit(usd=1, feature="summarize"):
        admission = await bg.aadmit_cost(5_000_000, model="gpt-4o")
        await admission.asettle(USAGE, model="gpt-4o")
    (span,) = otel.spans()
    (record,) = otel.records
    assert attrs(span)["gen_ai.usage.cost.amount"] == record.cost / 1e9
    assert attrs(span)["budgetguard.cost_usd"] == f"{record.cost_usd:f}"


# -- enrich the call's own span rather than add a twin ----------------------------------------
def test_the_calls_own_genai_span_is_enriched_not_twinned(otel: Otel) -> None:
    otel.configure()
    genai = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    with otel.tracer.start_as_current_span(
        "chat gpt-4o", kind=SpanKind.CLIENT, attributes={**genai, "gen_ai.usage.input_tokens": 7}
    ):
        guarded_call()
    (span,) = otel.spans()
    (record,) = otel.records
    got = attrs(span)
    assert got["gen_ai.usage.input_tokens"] == 7  # the instrumentation's own value wins
    assert got["gen_ai.usage.output_tokens"] == 300  # what it lacked is added
    assert got["gen_ai.usage.cost.amount"] == record.cost / 1e9
    assert got["budgetguard.cost_usd"] == f"{record.cost_usd:f}"
    assert got["budgetguard.outcome"] == "ok"


def test_a_span_named_for_the_operation_is_enriched_too(otel: Otel) -> None:
    otel.configure(background=True)
    with otel.tracer.start_as_current_span("chat gpt-4o"):
        guarded_call()
    (span,) = otel.spans()
    assert attrs(span)["budgetguard.outcome"] == "ok"


def test_a_second_call_in_an_enriched_span_gets_its_own_child(otel: Otel) -> None:
    otel.configure()
    with otel.tracer.start_as_current_span("chat gpt-4o") as outer:
        guarded_call()
        guarded_call()
    child, parent = otel.spans()
    assert child.parent is not None and child.parent.span_id == outer.get_span_context().span_id
    assert attrs(parent)["budgetguard.outcome"] == attrs(child)["budgetguard.outcome"] == "ok"


@pytest.mark.parametrize(
    ("name", "attributes"),
    [
        ("invoke_agent planner", {"gen_ai.operation.name": "invoke_agent"}),
        ("chat claude-haiku-4-5", {"gen_ai.request.model": "claude-haiku-4-5"}),
        ("handle request", {}),
    ],
)
def test_other_spans_are_parents_never_enriched(
    otel: Otel, name: str, attributes: dict[str, str]
) -> None:
    otel.configure(background=True)
    with otel.tracer.start_as_current_span(name, attributes=attributes) as outer:
        guarded_call()
    (ours,) = [span for span in otel.spans() if span.name == "chat gpt-4o"]
    (theirs,) = [span for span in otel.spans() if span.name == name]
    assert "budgetguard.outcome" not in attrs(theirs)
    assert ours.name == "chat gpt-4o" and attrs(ours)["budgetguard.outcome"] == "ok"
    # made on the background thread, still a child of the span current at the call
    assert ours.parent is not None and ours.parent.span_id == outer.get_span_context().span_id
    assert ours.context is not None and ours.context.trace_id == outer.get_span_context().trace_id


# -- through an instrumented OpenAI client ----------------------------------------------------
def test_an_instrumented_openai_call(otel: Otel, fake: FakeProvider) -> None:
    fake.clear()
    otel.configure(background=True)
    fake.reply(
        model="gpt-4o-2024-08-06",
        input_tokens=1200,
        cache_read_tokens=1024,
        output_tokens=300,
        reasoning_tokens=200,
    )
    client = bg.instrument(openai.OpenAI(base_url=fake.openai_base_url, api_key="t", max_retries=0))
    with bg.budget(feature="summarize"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=300)
    (span,) = otel.spans()
    (record,) = otel.records
    assert record.usage is not None
    got = attrs(span)
    assert span.name == "chat gpt-4o"
    assert got["gen_ai.provider.name"] == "openai"
    assert got["gen_ai.request.model"] == "gpt-4o"
    assert got["gen_ai.response.model"] == record.model == "gpt-4o-2024-08-06"
    assert got["gen_ai.usage.input_tokens"] == record.usage.input_tokens == 1200
    assert got["gen_ai.usage.output_tokens"] == record.usage.output_tokens == 300
    assert got["gen_ai.usage.cache_read.input_tokens"] == record.usage.cache_read_tokens == 1024
    assert got["gen_ai.usage.reasoning.output_tokens"] == 200
    assert got["gen_ai.usage.cost.amount"] == record.cost / 1e9
    assert got["budgetguard.cost_usd"] == f"{record.cost_usd:f}"
    assert got["budgetguard.reserved_usd"] == f"{record.estimate_usd:f}"
    assert got.get("budgetguard.output_cap") == record.output_cap


def test_an_instrumented_openai_call_that_fails(otel: Otel, fake: FakeProvider) -> None:
    fake.clear()
    otel.configure()
    fake.reply(status=500)
    client = bg.instrument(openai.OpenAI(base_url=fake.openai_base_url, api_key="t", max_retries=0))
    with pytest.raises(openai.InternalServerError), bg.budget(feature="summarize"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=300)
    (span,) = otel.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)["error.type"] == "InternalServerError"
    assert attrs(span)["gen_ai.usage.cost.amount"] == 0.0


# -- metrics ----------------------------------------------------------------------------------
def test_token_usage_cost_and_denials(otel: Otel) -> None:
    otel.configure(limits=[bg.Limit(scope="feature", usd="0.05", window="day")])
    guarded_call()
    guarded_call(bg.Usage(input_tokens=10, output_tokens=5))
    with pytest.raises(bg.BudgetExceeded), bg.budget(feature="summarize"):
        bg.admit_cost(10**9, model="gpt-4o")
    base = {
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "gpt-4o"),
        ("gen_ai.response.model", "gpt-4o"),
        ("budgetguard.feature", "summarize"),
        ("budgetguard.outcome", "ok"),
    }
    tokens = otel.points("gen_ai.client.token.usage")
    inputs = tokens[frozenset(base | {("gen_ai.token.type", "input")})]
    outputs = tokens[frozenset(base | {("gen_ai.token.type", "output")})]
    assert (inputs.count, inputs.sum) == (2, 1210)
    assert (outputs.count, outputs.sum) == (2, 305)
    ok = [r for r in otel.records if r.outcome == "ok"]
    (cost,) = otel.points("budgetguard.cost").values()
    assert cost.value == sum(r.cost for r in ok) / 1e9  # summed in nano-USD: one rounding
    (denials,) = otel.points("budgetguard.denials").items()
    assert denials[1].value == 1
    assert ("budgetguard.refused_by.scope", "feature") in denials[0]
    assert ("budgetguard.outcome", "denied") in denials[0]


def test_metric_dimensions_are_the_ones_asked_for(otel: Otel) -> None:
    otel.configure(attributes=("outcome",))
    guarded_call(tenant="acme", user="u-1")
    tokens = otel.points("gen_ai.client.token.usage")
    assert set(tokens) == {
        frozenset(
            {
                ("gen_ai.operation.name", "chat"),
                ("gen_ai.provider.name", "openai"),
                ("budgetguard.outcome", "ok"),
                ("gen_ai.token.type", kind),
            }
        )
        for kind in ("input", "output")
    }


def test_limit_gauges_read_the_store(otel: Otel) -> None:
    otel.configure(
        limits=[
            bg.Limit(scope="feature", usd=10, window="day"),
            bg.Limit(scope="tenant", usd=100, window="month"),
            bg.Limit(scope="global", requests=1000, window="hour"),
        ]
    )
    guarded_call(tenant="acme")
    guarded_call(tenant="acme")
    feature = bg.status("feature", "summarize")
    key = frozenset(
        {
            ("budgetguard.limit.scope", "feature"),
            ("budgetguard.limit.key", "summarize"),
            ("budgetguard.limit.window", "day"),
            ("budgetguard.limit.unit", "usd"),
        }
    )
    spent = otel.points("budgetguard.limit.spent")
    assert spent[key].value == float(feature.spent) > 0
    assert otel.points("budgetguard.limit.held")[key].value == 0
    assert otel.points("budgetguard.limit.limit")[key].value == 10.0
    requests = frozenset(
        {
            ("budgetguard.limit.scope", "global"),
            ("budgetguard.limit.window", "hour"),
            ("budgetguard.limit.unit", "requests"),
        }
    )
    assert spent[requests].value == 2
    assert all(("budgetguard.limit.scope", "tenant") not in attrs for attrs in spent)


def test_tenant_gauges_when_tenants_are_shown(otel: Otel) -> None:
    otel.configure(limits=[bg.Limit(scope="tenant", usd=100, window="month")], include_tenant=True)
    guarded_call(tenant="acme")
    (point,) = otel.points("budgetguard.limit.spent").items()
    assert ("budgetguard.limit.key", "acme") in point[0]
    assert point[1].value == float(bg.status("tenant", "acme").spent)


def test_gauges_follow_at_most_max_limits(otel: Otel) -> None:
    otel.configure(max_limits=2)
    for feature in ("a", "b", "c"):
        with bg.budget(feature=feature):
            bg.admit_cost(1_000, model="gpt-4o").settle_nanos(1_000)
    keys = {dict(a)["budgetguard.limit.key"] for a in otel.points("budgetguard.limit.spent")}
    assert keys == {"b", "c"}


# -- never in the call's way ------------------------------------------------------------------
class _Broken(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _BrokenTracer()


class _BrokenTracer(trace.NoOpTracer):
    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        raise RuntimeError("exporter exploded")


@pytest.mark.parametrize("background", [False, True])
def test_a_failing_listener_never_fails_the_call(
    otel: Otel, caplog: pytest.LogCaptureFixture, background: bool
) -> None:
    listener = OpenTelemetry(_Broken(), otel.meter_provider, background=background)
    otel.made.append(listener)
    seen: list[CallRecord] = []
    bg.configure(
        policy=bg.Policy(limits=[bg.Limit(scope="feature", usd=10, window="day")]),
        listeners=[listener, seen.append],
    )
    with caplog.at_level(logging.ERROR, logger="budgetguard.otel"):
        guarded_call()
        assert listener.flush(10)
    assert seen[0].outcome == "ok" and bg.status("feature", "summarize").spent > 0
    assert "exporter exploded" in caplog.text


def test_without_opentelemetry_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"budgetguard\[otel\]"):
        OpenTelemetry()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attributes": ("feature", "tenant")}, "attributes: 'tenant' is not one of"),
        ({"attributes": "feature"}, "attributes: expected a sequence"),
        ({"operation": ""}, "operation:"),
        ({"max_limits": -1}, "max_limits: must be >= 0"),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        OpenTelemetry(**options)


def test_no_op_providers_record_nothing_and_cost_nothing_visible() -> None:
    listener = OpenTelemetry(trace.NoOpTracerProvider(), background=False)
    seen: list[CallRecord] = []
    bg.configure(listeners=[listener, seen.append])
    guarded_call()
    assert seen[0].outcome == "ok"


@pytest.mark.parametrize("nanos", [0, 1, 10, 999_999_999, 10**9, 10**9 + 1, 12_345_000, 2**53])
def test_usd_text_is_the_exact_decimal_never_an_exponent(nanos: int) -> None:
    assert usd_text(nanos) == f"{nanos_to_usd(nanos):f}"
    assert Decimal(usd_text(nanos)) == nanos_to_usd(nanos)


def test_global_providers_cost_nothing_until_one_is_set(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    listener = OpenTelemetry(background=False)  # the API's global (proxy) providers
    otel.made.append(listener)
    bg.configure(
        policy=bg.Policy(limits=[bg.Limit(scope="feature", usd=10, window="day")]),
        listeners=[listener],
    )
    guarded_call()
    assert listener._tracing is None and not otel.spans()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", otel.tracer_provider)  # set_tracer_provider
    guarded_call()
    (span,) = otel.spans()
    assert span.name == "chat gpt-4o" and listener._tracing is True


@pytest.mark.parametrize(
    ("provider", "name"),
    [
        ("openai", "openai"),
        ("anthropic", "anthropic"),
        ("google", "gcp.gen_ai"),
        ("azure", "azure.ai.openai"),
        ("aws", "aws.bedrock"),
        ("mistral", "mistral_ai"),
        ("x-ai", "x_ai"),
        ("openrouter", "openrouter"),  # no well-known value: the conventions' custom value
        (None, None),  # unknown: left out, never guessed
    ],
)
def test_provider_names_follow_the_conventions(provider: str | None, name: str | None) -> None:
    assert provider_name(provider) == name


def test_tenant_and_user_as_metric_dimensions_only_when_opted_in(otel: Otel) -> None:
    otel.configure(attributes=(), include_tenant=True, include_user=True)
    guarded_call(tenant="acme", user="u-1")
    (cost,) = otel.points("budgetguard.cost")
    assert dict(cost) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "budgetguard.tenant": "acme",
        "budgetguard.user": "u-1",
    }


def test_cost_series_are_bounded(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    import budgetguard.observe.otel as module

    monkeypatch.setattr(module, "MAX_ATTRIBUTE_SETS", 2)
    otel.configure()
    for feature in ("a", "b", "c", "d"):
        with bg.budget(feature=feature):
            bg.admit_cost(1_000, model="gpt-4o").settle_nanos(1_000)
    costs = {
        dict(a).get("budgetguard.feature", "overflow"): p.value
        for a, p in otel.points("budgetguard.cost").items()
    }
    assert costs == {"a": 1e-6, "b": 1e-6, "overflow": 2e-6}
