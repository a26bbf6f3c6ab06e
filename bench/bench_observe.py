"""What the OpenTelemetry and Prometheus listeners add to a guarded call.

    python bench/bench_observe.py [--quick] [--json]

Memory store, one tenant limit, ``with bg.budget(tenant=, feature=)`` around
``bg.admit_cost`` + ``settle(usage)``, sequential. Configurations are measured in
interleaved rounds in one process (the median of the rounds per configuration): no
listener, a listener that does nothing (what building the ``CallRecord`` costs any
listener), ``OpenTelemetry`` with no-op providers (no SDK installed or configured),
``OpenTelemetry`` with the SDK and in-memory exporter (its background thread: the
call waits for a queue put; the SDK's span is ~20 us of the thread's CPU), and
``Prometheus`` in a fresh registry (counting happens at scrape time, or every 1,024
calls). Target (issue 16): each listener adds <= 5 us per call vs no listener.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import budgetguard as bg
from budgetguard.observe import OpenTelemetry, Prometheus

sys.path.insert(0, str(Path(__file__).parent))
from _report import header, table

USAGE = bg.Usage(input_tokens=100, output_tokens=20)
POLICY = bg.Policy(limits=[bg.Limit(scope="tenant", usd=10**6, window="day")])


def _sdk() -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return OpenTelemetry(tracer, meter, max_queue=10**6)


def _noop() -> Any:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    return OpenTelemetry(NoOpTracerProvider(), NoOpMeterProvider())


def _prometheus() -> Any:
    from prometheus_client import CollectorRegistry

    return Prometheus(CollectorRegistry(), budgets=False)


MAKERS: dict[str, Callable[[], Any]] = {
    "no listener": lambda: None,
    "a listener that does nothing": lambda: lambda record: None,
    "OpenTelemetry, no-op providers": _noop,
    "OpenTelemetry, SDK + in-memory exporter": _sdk,
    "Prometheus": _prometheus,
}


def loop(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        with bg.budget(tenant="acme", feature="chat"):
            bg.admit_cost(10**6, model="gpt-4o").settle(USAGE, model="gpt-4o")
    return (time.perf_counter() - start) / n * 1e6


def measure(calls: int, rounds: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in MAKERS}
    for _ in range(rounds):
        for name, make in MAKERS.items():
            listener = make()
            bg.configure(policy=POLICY, listeners=[] if listener is None else [listener])
            loop(300)  # warm: caches, the listener's instruments
            gc.collect()
            results[name].append(loop(calls))
            for finish in ("flush", "close"):
                if hasattr(listener, finish):
                    getattr(listener, finish)()
    bg.reset()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    calls, rounds = (3_000, 3) if args.quick else (20_000, 7)
    results = measure(calls, rounds)
    base = statistics.median(results["no listener"])
    rows = []
    for name, values in results.items():
        median = statistics.median(values)
        added = median - base
        target = "" if name == "no listener" else ("PASS" if added <= 5 else "over")
        rows.append([name, f"{median:.2f} us", f"{added:+.2f} us", target])
    if args.json:
        print(json.dumps({name: statistics.median(v) for name, v in results.items()}, indent=2))
        return 0
    title = "Listener overhead per guarded call, memory store"
    print(header(title, [f"{calls:,} calls x {rounds} rounds"]))
    print(table(["configuration", "per call", "added", "<= 5 us"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
