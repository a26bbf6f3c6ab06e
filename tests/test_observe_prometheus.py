"""``observe.Prometheus`` and ``budgetguard metrics``: real scrapes over HTTP of what the
listener counted (equal to the records' exact sums), budget gauges read from a real
Redis store and the memory store, a failing store, and the CLI."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter as Tally
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

import budgetguard as bg
from budgetguard._core.counters import Counter, CounterStatus
from budgetguard._core.errors import BudgetExceeded, ConfigurationError
from budgetguard._core.records import CallRecord
from budgetguard._core.usage import Usage
from budgetguard._engine import config as _config
from budgetguard._engine.flow import admit_cost
from budgetguard._engine.guard import spend_limit
from budgetguard.cli import main
from budgetguard.observe.ledger import SQLiteLedger
from budgetguard.observe.prometheus import OVERFLOW, Prometheus
from budgetguard.stores import RedisStore

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

POLICY = bg.Policy(
    limits=[
        bg.Limit(scope="global", usd=1000, window="day"),
        bg.Limit(scope="feature", key="summarize", usd=50, window="day"),
        bg.Limit(scope="tenant", usd=1, window="month"),
        bg.Limit(scope="user", tokens=100_000, window="day"),
    ]
)


def call(nanos: int, *, model: str = "gpt-4o", hold: int | None = None, **who: Any) -> None:
    usage = Usage(
        input_tokens=nanos % 1000 + 10,
        output_tokens=7,
        cache_read_tokens=3,
        reasoning_tokens=2,
    )
    with spend_limit(**who):
        admission = admit_cost(nanos if hold is None else hold, model=model)
        admission.settle_nanos(nanos, usage=usage)


def workload(records: list[CallRecord]) -> None:
    """Calls of two features, two models, two tenants; a denial and an overrun."""
    for n in range(9):
        call(100_000_000 + n, feature="summarize", tenant="acme", user=f"u-{n % 3}")
    call(33_333_333, model="claude-haiku-4-5", feature="chat", tenant="globex", user="u-9")
    call(5_000_000, hold=4_000_000, feature="chat", tenant="globex", user="u-9")  # overrun
    with pytest.raises(BudgetExceeded):
        call(2_000_000_000, feature="chat", tenant="acme", user="u-1")  # over acme's $1
    assert len(records) == 12


def scrape_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return str(response.read().decode())


def samples(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = sample.value
    return found


def pick(found: Samples, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {key: value for (n, key), value in found.items() if n == name and want <= key}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served() -> Iterator[tuple[CollectorRegistry, str]]:
    """A registry served by prometheus_client on a free loopback port."""
    registry = CollectorRegistry()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield registry, f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- the listener ----------------------------------------------------------------------


def test_scrape_over_http_equals_the_records_exact_sums(
    served: tuple[CollectorRegistry, str],
) -> None:
    registry, url = served
    records: list[CallRecord] = []
    bg.configure(policy=POLICY, listeners=[records.append, Prometheus(registry)])
    workload(records)
    found = samples(scrape_text(url))

    calls = Tally((r.feature or "", r.model or r.requested_model or "", r.outcome) for r in records)
    assert {
        (dict(k)["feature"], dict(k)["model"], dict(k)["outcome"]): v
        for k, v in pick(found, "budgetguard_calls_total").items()
    } == calls
    for feature in ("summarize", "chat"):
        for model in ("gpt-4o", "claude-haiku-4-5"):
            mine = [r for r in records if r.feature == feature and r.model == model]
            cost = pick(found, "budgetguard_cost_usd_total", feature=feature, model=model)
            if not mine:
                assert not cost
                continue
            # exact: the nano-USD sum, turned into a float once, at the export edge
            assert list(cost.values()) == [sum(r.cost for r in mine) / 1_000_000_000]
            for kind, field in (
                ("input", "input_tokens"),
                ("output", "output_tokens"),
                ("cache_read", "cache_read_tokens"),
                ("reasoning", "reasoning_tokens"),
            ):
                tokens = pick(found, "budgetguard_tokens_total", feature=feature, model=model)
                by_type = {dict(k)["type"]: v for k, v in tokens.items()}
                assert by_type[kind] == sum(getattr(r.usage, field) for r in mine if r.usage)
                assert "cache_write" not in by_type  # never used: no series
    assert pick(found, "budgetguard_overrun_usd_total") == {
        frozenset({("feature", "chat"), ("model", "gpt-4o")}): 1_000_000 / 1_000_000_000
    }
    denials = pick(found, "budgetguard_denials_total")
    assert denials == {
        frozenset({("scope", "tenant"), ("feature", "chat"), ("model", "gpt-4o")}): 1.0
    }
    made = [r for r in records if r.outcome != "denied"]
    assert sum(pick(found, "budgetguard_call_latency_seconds_count").values()) == len(made)
    latency = sum(r.latency_s for r in made if r.model == "gpt-4o")
    summed = pick(found, "budgetguard_call_latency_seconds_sum", model="gpt-4o")
    assert list(summed.values()) == [pytest.approx(latency)]
    inf = pick(found, "budgetguard_call_latency_seconds_bucket", model="gpt-4o", le="+Inf")
    assert list(inf.values()) == [len([r for r in made if r.model == "gpt-4o"])]
    # no tenant, no user label unless asked for
    assert all(
        {"tenant", "user"}.isdisjoint(dict(key)) for (name, key) in found if "budget_" not in name
    )
    assert found["budgetguard_listener_errors_total", frozenset()] == 0


def test_dollars_never_drift() -> None:
    """Ten calls of $0.10: floats would sum to 0.9999999999999999."""
    registry = CollectorRegistry()
    bg.configure(listeners=[Prometheus(registry, budgets=False)])
    for _ in range(10):
        call(100_000_000, feature="f")
    assert (
        registry.get_sample_value("budgetguard_cost_usd_total", {"feature": "f", "model": "gpt-4o"})
        == 1.0
    )
    assert registry.get_sample_value("budgetguard_store_up") is None  # no budget reads


def test_tenant_and_user_labels_only_when_asked_for() -> None:
    registry = CollectorRegistry()
    records: list[CallRecord] = []
    prom = Prometheus(registry, include_tenant=True, include_user=True)
    bg.configure(policy=POLICY, listeners=[records.append, prom])
    workload(records)
    value = registry.get_sample_value
    labels = {"feature": "summarize", "model": "gpt-4o", "tenant": "acme", "user": "u-1"}
    assert value("budgetguard_calls_total", {**labels, "outcome": "ok"}) == 3
    mine = [r for r in records if r.user == "u-1" and r.outcome == "ok"]
    assert value("budgetguard_cost_usd_total", labels) == sum(r.cost for r in mine) / 10**9
    # budget gauges of tenants and users, now opted in
    assert (
        value(
            "budgetguard_budget_spent_usd",
            {
                "scope": "tenant",
                "key": "acme",
                "window": "month",
                "tenant": "",
                "enforce": "refuse",
            },
        )
        == sum(r.cost for r in records if r.tenant == "acme") / 10**9
    )
    user_tokens = value(
        "budgetguard_budget_spent_tokens",
        {"scope": "user", "key": "u-9", "window": "day", "tenant": "globex", "enforce": "refuse"},
    )
    assert user_tokens == sum(
        r.usage.input_tokens + r.usage.output_tokens for r in records if r.user == "u-9" and r.usage
    )


def test_series_past_the_bound_go_to_overflow() -> None:
    registry = CollectorRegistry()
    bg.configure(listeners=[Prometheus(registry, max_series=2, budgets=False)])
    for feature in ("a", "b", "c", "d"):
        call(1, feature=feature)
    got = {
        s.labels["feature"]: s.value
        for f in registry.collect()
        if f.name == "budgetguard_calls"
        for s in f.samples
    }
    assert got == {"a": 1, "b": 1, OVERFLOW: 2}


def test_budget_gauges_from_the_memory_store() -> None:
    registry = CollectorRegistry()
    bg.configure(policy=POLICY, listeners=[Prometheus(registry)])
    value = registry.get_sample_value
    global_day = {"scope": "global", "key": "", "window": "day", "tenant": "", "enforce": "refuse"}
    # the policy's global and keyed limits show before any call
    assert value("budgetguard_budget_limit_usd", global_day) == 1000.0
    assert value("budgetguard_budget_spent_usd", global_day) == 0.0
    call(123_456_789, feature="summarize", tenant="acme")
    status = bg.status("global")
    assert value("budgetguard_budget_spent_usd", global_day) == float(status.spent)
    assert value("budgetguard_budget_held_usd", global_day) == 0.0
    feature = {**global_day, "scope": "feature", "key": "summarize"}
    assert value("budgetguard_budget_limit_usd", feature) == 50.0
    assert value("budgetguard_budget_spent_usd", feature) == 0.123456789
    # tenants and users are not followed unless asked for (one series each)
    assert value("budgetguard_budget_spent_usd", {**global_day, "scope": "tenant"}) is None
    assert value("budgetguard_store_up") == 1.0


def test_budget_gauges_from_a_real_redis_store(redis_url: str) -> None:
    prefix = f"bgprom{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_url, prefix=prefix)
    try:
        registry = CollectorRegistry()
        bg.configure(
            store=store, policy=POLICY, listeners=[Prometheus(registry, include_tenant=True)]
        )
        call(250_000_001, feature="summarize", tenant="acme", user="u-1")
        call(1, feature="chat", tenant="globex", user="u-2")
        with spend_limit(tenant="acme", feature="summarize"):
            held = admit_cost(7_000_000)  # in flight: held, not spent
            value = registry.get_sample_value
            labels = {"scope": "tenant", "key": "acme", "window": "month", "tenant": ""}
            labels["enforce"] = "refuse"
            assert value("budgetguard_budget_spent_usd", labels) == 0.250000001
            assert value("budgetguard_budget_held_usd", labels) == 0.007
            assert value("budgetguard_budget_limit_usd", labels) == 1.0
            globex = {**labels, "key": "globex"}
            assert value("budgetguard_budget_spent_usd", globex) == 1e-9
            held.settle_nanos(0)
        # what another process reading the same Redis sees
        other = RedisStore.from_url(redis_url, prefix=prefix)
        try:
            reader = Prometheus(CollectorRegistry(), store=other, policy=POLICY)
            glob = {
                "scope": "global",
                "key": "",
                "window": "day",
                "tenant": "",
                "enforce": "refuse",
            }
            assert reader.registry.get_sample_value("budgetguard_budget_spent_usd", glob) == (
                0.250000002
            )
        finally:
            other.close()
    finally:
        _config.reset()
        keys = list(store.client.scan_iter(match=f"{prefix}:*"))
        if keys:
            store.client.delete(*keys)
        store.close()


class BrokenStore:
    """A store whose every read fails, as Redis going away mid-scrape does."""

    def status(self, counter: Counter) -> CounterStatus:
        raise ConnectionError("store down")

    def limit_book(self) -> Any:
        raise ConnectionError("store down")


def test_a_failing_store_never_breaks_the_scrape(served: tuple[CollectorRegistry, str]) -> None:
    registry, url = served
    prom = Prometheus(registry, store=BrokenStore(), policy=POLICY)  # type: ignore[arg-type]
    bg.configure(policy=POLICY, listeners=[prom])
    call(5, feature="summarize", tenant="acme")
    found = samples(scrape_text(url))
    assert found["budgetguard_store_up", frozenset()] == 0.0
    assert found["budgetguard_store_errors_total", frozenset()] == 1.0
    assert not pick(found, "budgetguard_budget_spent_usd")
    assert sum(pick(found, "budgetguard_calls_total").values()) == 1  # the rest is served
    assert samples(scrape_text(url))["budgetguard_store_errors_total", frozenset()] == 2.0


def test_the_listener_never_raises_into_the_call() -> None:
    registry = CollectorRegistry()
    prom = Prometheus(registry)
    prom(object())  # type: ignore[arg-type]  # not a record at all
    assert registry.get_sample_value("budgetguard_listener_errors_total") == 1
    bg.configure(listeners=[prom])
    call(10, feature="f")  # and a real one still counts
    value = registry.get_sample_value(
        "budgetguard_calls_total", {"feature": "f", "model": "gpt-4o", "outcome": "ok"}
    )
    assert value == 1


def test_registering_twice() -> None:
    registry = CollectorRegistry()
    first = Prometheus(registry, budgets=False)
    second = Prometheus(registry, budgets=False)  # re-configuring: shares the counts
    first(_record(1))
    second(_record(2))
    assert registry.get_sample_value("budgetguard_calls_total", _LABELS) == 2
    with pytest.raises(ConfigurationError, match="include_tenant"):
        Prometheus(registry, include_tenant=True)
    with pytest.raises(ConfigurationError, match="store"):  # it would read no store (review)
        Prometheus(registry, budgets=False, store=bg.MemoryStore())
    other = Prometheus(registry, namespace="other", budgets=False)  # its own metrics
    other(_record(3))
    assert registry.get_sample_value("other_calls_total", _LABELS) == 1
    clash = CollectorRegistry()
    from prometheus_client import Counter as PromCounter

    PromCounter("budgetguard_calls", "not ours", registry=clash)
    with pytest.raises(ConfigurationError, match="cannot register"):
        Prometheus(clash)


_LABELS = {"feature": "f", "model": "m", "outcome": "ok"}


def _record(nanos: int) -> CallRecord:
    return CallRecord(
        at=0.0,
        outcome="ok",
        tenant=None,
        user=None,
        feature="f",
        tags={},
        requested_model="m",
        model="m",
        usage=None,
        estimate=nanos,
        cost=nanos,
        latency_s=0.3,
        reservation_id=None,
        counters=(),
    )


def test_missing_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"budgetguard\[prometheus\]"):
        Prometheus(CollectorRegistry())


# -- the CLI ---------------------------------------------------------------------------

CONFIG = """\
store = "{store}"
prefix = "{prefix}"
ledger = "sqlite:///{ledger}"

[[policy.limits]]
scope = "global"
usd = 1000
window = "day"

[[policy.limits]]
scope = "feature"
key = "summarize"
tokens = 1000000
window = "day"

[[policy.limits]]
scope = "tenant"
usd = 100
window = "month"
"""


@pytest.fixture
def fleet(redis_url: str, tmp_path: Path) -> Iterator[tuple[Path, list[CallRecord]]]:
    """Calls made by this process on a Redis store and a ledger, and the config to find them."""
    prefix = f"bgpromcli{uuid.uuid4().hex[:8]}"
    config = tmp_path / "budgetguard.toml"
    config.write_text(CONFIG.format(store=redis_url, prefix=prefix, ledger=tmp_path / "l.db"))
    store = RedisStore.from_url(redis_url, prefix=prefix)
    ledger = SQLiteLedger(tmp_path / "l.db")
    records: list[CallRecord] = []
    from budgetguard.cli.context import load_context

    policy = load_context(config=str(config), environ={}).policy
    bg.configure(store=store, policy=policy, listeners=[ledger, records.append])
    try:
        call(120_000_000, feature="summarize", tenant="acme")
        call(30_000_001, feature="summarize", tenant="globex")
        call(7, model="claude-haiku-4-5", feature="chat", tenant="acme")
        assert ledger.flush(10)
        yield config, records
    finally:
        _config.reset()
        ledger.close()
        keys = list(store.client.scan_iter(match=f"{prefix}:*"))
        if keys:
            store.client.delete(*keys)
        store.close()


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def test_cli_once_serves_the_store_and_the_ledger(fleet: tuple[Path, list[CallRecord]]) -> None:
    config, records = fleet
    code, text = run_cli("metrics", "--once", "--config", str(config))
    assert code == 0, text
    found = samples(text)
    total = sum(r.cost for r in records) / 10**9
    glob = {"scope": "global", "key": "", "window": "day", "tenant": "", "enforce": "refuse"}
    assert pick(found, "budgetguard_budget_spent_usd", **glob) == {frozenset(glob.items()): total}
    feature = {**glob, "scope": "feature", "key": "summarize"}
    tokens = sum(r.usage.input_tokens + r.usage.output_tokens for r in records[:2] if r.usage)
    assert list(pick(found, "budgetguard_budget_spent_tokens", **feature).values()) == [tokens]
    assert list(pick(found, "budgetguard_budget_limit_tokens", **feature).values()) == [1e6]
    assert not pick(found, "budgetguard_budget_spent_usd", scope="tenant")  # not opted in
    assert found["budgetguard_store_up", frozenset()] == 1.0
    # the ledger's spend per feature and model
    assert found["budgetguard_ledger_up", frozenset()] == 1.0
    by_feature = pick(found, "budgetguard_ledger_feature_cost_usd")
    assert by_feature == {
        frozenset({("feature", "summarize")}): 150_000_001 / 10**9,
        frozenset({("feature", "chat")}): 7 / 10**9,
    }
    assert pick(found, "budgetguard_ledger_model_calls", model="gpt-4o") == {
        frozenset({("model", "gpt-4o")}): 2.0
    }

    code, text = run_cli("metrics", "--once", "--include-tenant", "--config", str(config))
    tenants = pick(samples(text), "budgetguard_budget_spent_usd", scope="tenant")
    assert {dict(k)["key"]: v for k, v in tenants.items()} == {
        "acme": 120_000_007 / 10**9,
        "globex": 30_000_001 / 10**9,
    }


def test_cli_once_with_a_dead_store(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[policy.limits]]\nscope = "global"\nusd = 1\nwindow = "day"\n')
    port = free_port()  # nothing listens there
    code, text = run_cli(
        "metrics", "--once", "--config", str(config), "--store", f"redis://127.0.0.1:{port}/0"
    )
    assert code == 1
    found = samples(text)
    assert found["budgetguard_store_up", frozenset()] == 0.0
    assert not pick(found, "budgetguard_budget_limit_usd")


def test_cli_bad_options(tmp_path: Path) -> None:
    assert run_cli("metrics", "--once", "--since", "soon")[0] == 2
    assert run_cli("metrics", "--once", "--port", "70000")[0] == 2


def test_cli_serves_over_http_until_ctrl_c(fleet: tuple[Path, list[CallRecord]]) -> None:
    config, records = fleet
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "budgetguard.cli",
            "metrics",
            "--port",
            "0",
            "--config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("budgetguard metrics: http://127.0.0.1:"), line
        url = line.split()[2]
        found = samples(scrape_text(url))
        glob = {"scope": "global", "key": "", "window": "day", "tenant": "", "enforce": "refuse"}
        total = sum(r.cost for r in records) / 10**9
        assert list(pick(found, "budgetguard_budget_spent_usd", **glob).values()) == [total]
        server.send_signal(signal.SIGINT)
        assert server.wait(20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_records_are_counted_without_a_scrape_past_the_queue_bound() -> None:
    from budgetguard.observe.prometheus import PENDING

    prom = Prometheus(CollectorRegistry(), budgets=False)
    for _ in range(PENDING):
        prom(_record(1))
    # The counting thread counts them, not the call that found them waiting (found by
    # review: a backlog of 1,024 cost that call ~1.3 ms, and others waited on its lock).
    deadline = time.monotonic() + 5
    while prom._tallies.calls.get(("f", "m", "ok")) != PENDING and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not prom._tallies.pending  # memory stays bounded with no scrape
    assert prom._tallies.calls[("f", "m", "ok")] == PENDING
    assert prom._tallies.cost[("f", "m")] == PENDING
    assert prom._tallies.counting is not None and prom._tallies.counting.is_alive()


def test_a_call_never_counts_the_backlog_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    from budgetguard.observe import prometheus

    prom = Prometheus(CollectorRegistry(), budgets=False)
    on_call: list[str] = []
    monkeypatch.setattr(prom, "_drain", lambda: on_call.append(threading.current_thread().name))
    for _ in range(prometheus.PENDING * 2):
        prom(_record(1))
    time.sleep(0.2)
    assert on_call and set(on_call) == {"budgetguard-prometheus"}


def test_cli_ledger_series_are_bounded(
    fleet: tuple[Path, list[CallRecord]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A label per feature ever used would grow without bound (found by review): past
    ``LEDGER_SERIES`` the cheaper ones are summed under ``_overflow_``."""
    from budgetguard.cli import metrics

    config, _records = fleet
    monkeypatch.setattr(metrics, "LEDGER_SERIES", 1)
    code, text = run_cli("metrics", "--once", "--config", str(config))
    assert code == 0, text
    by_feature = pick(samples(text), "budgetguard_ledger_feature_cost_usd")
    assert by_feature == {
        frozenset({("feature", "summarize")}): 150_000_001 / 10**9,
        frozenset({("feature", "_overflow_")}): 7 / 10**9,
    }
