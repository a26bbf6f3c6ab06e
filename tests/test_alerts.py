"""Alerts (budgetguard/observe/alerts/): thresholds deduplicated across processes on a real
Redis, request-cost and spike rules, and webhooks that can never slow an LLM call."""

from __future__ import annotations

import http.server
import json
import logging
import multiprocessing
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from budgetguard._core.errors import BudgetExceeded, ConfigurationError
from budgetguard._core.policy import Limit, Policy, Threshold
from budgetguard._engine import config as _config
from budgetguard._engine.flow import admit_cost
from budgetguard._engine.guard import spend_limit
from budgetguard.observe.alerts import (
    Alert,
    Alerts,
    LogSink,
    MemoryAlertState,
    RedisAlertState,
    RequestCost,
    Spike,
    Webhook,
)
from budgetguard.stores import MemoryStore, RedisStore

CENT = 10_000_000  # nano-USD


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    _config.reset()
    yield
    _config.reset()


def call(
    nanos: int, *, feature: str = "summarize", user: str = "u-1", tenant: str = "acme"
) -> None:
    """One guarded call through the real engine, settled at exactly ``nanos``."""
    with spend_limit(feature=feature, user=user, tenant=tenant):
        admission = admit_cost(nanos, model="gpt-4o")
        admission.settle_nanos(nanos, model="gpt-4o")


class Collect:
    """A callback sink."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def __call__(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def kinds(self, kind: str) -> list[Alert]:
        return [a for a in self.alerts if a.kind == kind]


def fractions(alerts: list[Alert]) -> list[str]:
    return sorted(f"{a.fraction:f}" for a in alerts if a.kind == "threshold")


# -- thresholds ------------------------------------------------------------------


def test_thresholds_fire_once_each_in_process() -> None:
    sink = Collect()
    alerts = Alerts(sinks=[sink])
    _config.configure(
        policy=Policy(
            limits=[Limit("feature", usd=1, window="day")],
            alerts=[Threshold(0.5), Threshold(0.8), Threshold(1)],
        ),
        listeners=[alerts],
    )
    for n in range(14):
        try:
            call(10 * CENT)
        except BudgetExceeded:
            assert n >= 10
        assert alerts.flush(5)  # evaluate as we go: each crossing seen when it happens
    assert fractions(sink.alerts) == ["0.5", "0.8", "1"]
    first = sink.alerts[0]
    assert (first.scope, first.key, first.window) == ("feature", "summarize", "day")
    assert first.amount == Decimal("0.5") and first.limit == Decimal(1)
    assert first.resets_at is not None
    assert "feature 'summarize' reached 50% of its day budget: $0.50 of $1.00" in first.message
    alerts.close()


def test_thresholds_fire_again_in_the_next_window() -> None:
    clock = [1_790_000_000.0]
    store = MemoryStore(clock=lambda: clock[0])
    sink = Collect()
    alerts = Alerts(sinks=[sink], state=MemoryAlertState(lambda: clock[0]), clock=lambda: clock[0])
    _config.configure(
        store=store,
        policy=Policy(limits=[Limit("user", usd=1, window="minute")], alerts=[Threshold(0.5)]),
        listeners=[alerts],
    )
    for _ in range(6):
        call(10 * CENT)
    assert alerts.flush(5)
    assert len(sink.alerts) == 1
    clock[0] += 60  # the next minute: a fresh window, a fresh alert
    for _ in range(6):
        call(10 * CENT)
    assert alerts.flush(5)
    assert len(sink.alerts) == 2
    assert sink.alerts[0].resets_at != sink.alerts[1].resets_at
    alerts.close()


def test_threshold_scope_filter_and_extra_rules() -> None:
    sink = Collect()
    alerts = Alerts(sinks=[sink], rules=[Threshold(0.25, scope="user")])
    _config.configure(
        policy=Policy(
            limits=[Limit("user", usd=1, window="day"), Limit("tenant", usd=2, window="day")],
            alerts=[Threshold(0.9, scope="tenant")],
        ),
        listeners=[alerts],
    )
    for user, cents in [("u-1", 30), ("u-1", 50), ("u-2", 95), ("u-3", 10)]:
        call(cents * CENT, user=user)
        assert alerts.flush(5)
    assert [(a.scope, a.key, f"{a.fraction:f}") for a in sink.alerts] == [
        ("user", "u-1", "0.25"),
        ("user", "u-2", "0.25"),
        ("tenant", "acme", "0.9"),
    ]
    alerts.close()


def _dedupe_worker(
    redis_url: str, prefix: str, list_key: str, barrier: Any, calls: int
) -> None:  # pragma: no cover - runs in a child process
    import redis as redis_lib

    results = redis_lib.Redis.from_url(redis_url)
    store = RedisStore.from_url(redis_url, prefix=prefix)
    alerts = Alerts(
        sinks=[lambda alert: results.rpush(list_key, json.dumps(alert.to_dict()))],
        rules=[RequestCost(usd="0.015")],
    )
    _config.configure(
        store=store,
        policy=Policy(
            limits=[Limit("feature", usd=1, window="day")],
            alerts=[Threshold(0.5), Threshold(0.8), Threshold(1.0)],
        ),
        listeners=[alerts],
    )
    barrier.wait()
    for n in range(calls):
        try:
            call(2 * CENT if n == 0 else CENT)
        except BudgetExceeded as full:
            if full.held == 0:  # nothing in flight: the budget is spent to the cent
                break
        if n % 5 == 0:
            alerts.flush(5)
    alerts.close()
    store.close()


def test_threshold_alerts_are_deduplicated_across_processes(
    redis_client: Any, redis_url: str
) -> None:
    """Four processes push one feature past 50/80/100% at once: each threshold fires once."""
    prefix = f"bga{uuid.uuid4().hex[:8]}"
    list_key = f"{prefix}:results"
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(target=_dedupe_worker, args=(redis_url, prefix, list_key, barrier, 500))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    got = [json.loads(raw) for raw in redis_client.lrange(list_key, 0, -1)]
    thresholds = sorted(a["fraction"] for a in got if a["kind"] == "threshold")
    assert thresholds == ["0.5", "0.8", "1"]
    assert all(a["key"] == "summarize" for a in got if a["kind"] == "threshold")
    # the request-cost rule is per call, not deduplicated: one 2-cent call per process
    assert [a["amount"] for a in got if a["kind"] == "request_cost"] == ["0.02"] * 4
    # the first refusal says the budget is exhausted, once for the fleet
    assert [a["kind"] for a in got if a["kind"] == "exhausted"] == ["exhausted"]
    markers = list(redis_client.scan_iter(match=f"{prefix}:*:a:*"))
    assert len(markers) == 4  # three thresholds, one exhaustion
    assert {redis_client.get(m) for m in markers} == {b"sent"}
    assert all(0 < redis_client.ttl(m) <= 86_400 + 3600 for m in markers)


# -- request cost and spikes ---------------------------------------------------------


def test_request_cost_rule_names_the_call() -> None:
    sink = Collect()
    alerts = Alerts(sinks=[sink], rules=[RequestCost(usd="0.05")])
    _config.configure(listeners=[alerts])
    call(5 * CENT)  # not above
    call(5 * CENT + 1, feature="agent", user="u-9")
    assert alerts.flush(5)
    (alert,) = sink.alerts
    assert (alert.kind, alert.feature, alert.user, alert.tenant, alert.model) == (
        "request_cost",
        "agent",
        "u-9",
        "acme",
        "gpt-4o",
    )
    assert alert.amount == Decimal("0.050000001")
    assert "cost $0.050000001 (alert above $0.05) for tenant=acme, user=u-9" in alert.message
    alerts.close()


def seed_history(state: Any, *, per_slot: int, now: float) -> None:
    """Seven days of steady spend before the last hour, in 5-minute slots."""
    current = int(now) // 300 * 300
    state.add_spend({current - n * 300: per_slot for n in range(12, 12 + 7 * 24 * 12)})


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_spike_against_the_weekly_average(backend: str, redis_url: str) -> None:
    prefix = f"bgs{uuid.uuid4().hex[:8]}"
    state: Any = (
        MemoryAlertState() if backend == "memory" else RedisAlertState(redis_url, prefix=prefix)
    )
    seed_history(state, per_slot=10 * CENT, now=time.time())  # $1.20 an hour
    sink = Collect()
    alerts = Alerts(
        sinks=[sink], rules=[Spike(factor=3, min_usd="0.5", check_every_s=0)], state=state
    )
    _config.configure(listeners=[alerts])
    for _ in range(2):
        call(100 * CENT)  # $2 this hour: 1.7x the $1.20 average, no spike
    assert alerts.flush(5)
    assert sink.alerts == []
    for _ in range(2):
        call(100 * CENT)  # $4: 3.3x
    assert alerts.flush(5)
    call(100 * CENT)
    assert alerts.flush(5)
    (spike,) = sink.alerts  # once per hour, however much more is spent
    assert spike.kind == "spike" and spike.amount == Decimal(4)
    assert spike.baseline == Decimal("1.2") and spike.fraction == Decimal(3)
    assert "$4.00 in the last hour, 3.3x the 7-day hourly average ($1.20)" in spike.message
    alerts.close()
    if backend == "redis":
        keys = list(state.client.scan_iter(match=f"{prefix}:*"))
        state.client.delete(*keys)


def test_spike_needs_min_usd() -> None:
    sink = Collect()
    alerts = Alerts(sinks=[sink], rules=[Spike(factor=2, min_usd=1, check_every_s=0)])
    _config.configure(listeners=[alerts])
    call(50 * CENT)  # no history at all, but below min_usd
    assert alerts.flush(5)
    assert sink.alerts == []
    call(60 * CENT)
    assert alerts.flush(5)
    assert [a.kind for a in sink.alerts] == ["spike"]
    assert "no history" in sink.alerts[0].message
    alerts.close()


# -- sinks ---------------------------------------------------------------------------


def test_log_sink_default_and_a_failing_sink_hurts_nobody(caplog: pytest.LogCaptureFixture) -> None:
    def broken(alert: Alert) -> None:
        raise RuntimeError("sink down")

    sink = Collect()
    alerts = Alerts(sinks=[broken, LogSink(), sink], rules=[RequestCost(usd=0)])
    _config.configure(listeners=[alerts])
    with caplog.at_level(logging.WARNING):
        call(CENT)
        assert alerts.flush(5)
    assert len(sink.alerts) == 1
    assert any(
        "budgetguard alert: budgetguard: one gpt-4o call" in r.message for r in caplog.records
    )
    assert any("alert sink" in r.message and "failed" in r.message for r in caplog.records)
    alerts.close()


def test_bad_configuration_names_the_argument() -> None:
    with pytest.raises(ConfigurationError, match=r"rules\[0\]"):
        Alerts(rules=["80%"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match=r"sinks\[0\]"):
        Alerts(sinks=["#alerts"])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match=r"Spike\.factor"):
        Spike(factor=1)
    with pytest.raises(ConfigurationError, match="url"):
        Webhook("hooks.slack.com/x")
    with pytest.raises(ConfigurationError, match="state"):
        Alerts(state=42)


# -- webhooks ------------------------------------------------------------------------


class Hook:
    """A webhook endpoint on loopback: slow, failing, or fine."""

    def __init__(self, *, delay: float = 0.0, status: int = 200, location: str = "") -> None:
        self.delay = delay
        self.status = status
        self.location = location
        self.bodies: list[dict[str, Any]] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hook.requests.append(("GET", dict(self.headers)))
                self.send_response(200)
                self.end_headers()

            def do_POST(self) -> None:
                hook.requests.append(("POST", dict(self.headers)))
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                hook.release.wait(hook.delay)
                try:
                    self.send_response(hook.status)
                    if hook.location:
                        self.send_header("Location", hook.location)
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up (its timeout): that is the point

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"  # nothing listens there any more


def timed(calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call(CENT)
    return time.perf_counter() - started


@pytest.mark.parametrize("mode", ["slow", "error500", "dead"])
def test_a_slow_or_dead_webhook_never_slows_guarded_calls(mode: str) -> None:
    """20 guarded calls, each firing a webhook alert: latency as with no alerts at all."""
    hook = Hook(delay=2.0) if mode == "slow" else Hook(status=500) if mode == "error500" else None
    url = hook.url if hook else dead_url()
    webhook = Webhook(url, timeout=3.0, retries=2)
    alerts = Alerts(sinks=[webhook], rules=[RequestCost(usd=0)])
    _config.configure(policy=Policy(limits=[Limit("feature", usd=100, window="total")]))
    timed(5)  # warm up
    baseline = timed(20)
    _config.configure(listeners=[alerts])
    guarded = timed(20)
    assert alerts.flush(5)
    extra = guarded - baseline
    print(
        f"\n[{mode}] 20 calls: {baseline * 1000:.1f} ms without alerts, "
        f"{guarded * 1000:.1f} ms with a {mode} webhook (+{extra * 1000:.1f} ms)"
    )
    assert guarded < 0.5, f"20 calls took {guarded:.3f}s with a {mode} webhook"
    assert extra < 0.2, f"alerts added {extra:.3f}s to 20 calls"
    if mode == "slow":
        assert hook is not None
        time.sleep(0.3)
        assert hook.bodies[0]["text"].startswith("budgetguard: one gpt-4o call cost $0.01")
        hook.release.set()  # let the endpoint answer: every alert arrives
        assert webhook.flush(10)
        assert len(hook.bodies) == 20 and webhook.sent == 20
    started = time.perf_counter()
    alerts.close(timeout=0.5)
    assert time.perf_counter() - started < 3  # closing gives up in bounded time
    if hook:
        hook.close()


def test_webhook_retries_are_bounded_and_errors_counted() -> None:
    hook = Hook(status=500)
    webhook = Webhook(hook.url, retries=2, format="json")
    alert = Alert(kind="spike", message="hello", at=_now(), amount=Decimal("1.5"))
    webhook(alert)
    assert webhook.flush(10)
    assert len(hook.bodies) == 3  # one try + two retries
    assert webhook.failed == 1 and webhook.sent == 0
    assert hook.bodies[0] == {"text": "hello", **alert.to_dict()}
    assert hook.bodies[0]["amount"] == "1.5"
    hook.status = 404  # not retryable: one request
    webhook(alert)
    assert webhook.flush(10)
    assert len(hook.bodies) == 4 and webhook.failed == 2
    hook.status = 200
    webhook(alert)
    assert webhook.flush(10)
    assert webhook.sent == 1
    webhook.close()
    hook.close()


def test_webhook_timeout_is_honoured() -> None:
    hook = Hook(delay=5.0)
    webhook = Webhook(hook.url, timeout=0.3, retries=1)
    started = time.perf_counter()
    webhook(Alert(kind="spike", message="x", at=_now(), amount=Decimal(1)))
    assert webhook.flush(10)
    assert webhook.failed == 1
    assert time.perf_counter() - started < 2.5  # 2 tries x 0.3 s + backoff
    webhook.close()
    hook.close()


def _now() -> datetime:
    return datetime.now(UTC)


def test_redis_state_claims_once_with_expiry(redis_client: Any, redis_url: str) -> None:
    state = RedisAlertState(redis_client, prefix="bgc")
    end = time.time() + 100
    assert state.claim("acme", "k:1:0.5", 30)
    assert not state.claim("acme", "k:1:0.5", 30)  # being delivered elsewhere
    assert 0 < redis_client.ttl("bgc:{acme}:a:k:1:0.5") <= 30
    state.confirm("acme", "k:1:0.5", end)
    assert not state.claim("acme", "k:1:0.5", 30)  # delivered
    assert 100 < redis_client.ttl("bgc:{acme}:a:k:1:0.5") <= 100 + 3600
    other = RedisAlertState(redis_url, prefix="bgc")
    assert other.claim("acme", "k:1:0.8", 30)
    other.release("acme", "k:1:0.8")  # delivery failed: free for another try
    assert other.claim("acme", "k:1:0.8", 30)
    other.confirm("acme", "k:1:0.8", None)
    assert redis_client.ttl("bgc:{acme}:a:k:1:0.8") == -1
    slot = int(time.time()) // 300 * 300
    state.add_spend({slot: 5, slot - 300: 7})
    state.add_spend({slot: 1})
    assert state.spend([slot - 600, slot - 300, slot]) == [0, 7, 6]
    assert 7 * 86_400 < redis_client.ttl(f"bgc:{{spike}}:s:{slot}") <= 8 * 86_400


# -- issue 11: at-least-once, exhaustion, no starvation, no redirects ------------------


class Flaky(Collect):
    """A sink that fails its first ``failures`` deliveries."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def __call__(self, alert: Alert) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the sink is down")
        super().__call__(alert)


def wait_for(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_threshold_alert_that_failed_to_deliver_is_retried_until_it_is() -> None:
    """The dedupe marker used to be claimed before delivery: one failure lost the alert."""
    sink = Flaky(failures=2)
    alerts = Alerts(sinks=[sink], retry_base_s=0.05)
    _config.configure(
        policy=Policy(limits=[Limit("feature", usd=1, window="day")], alerts=[Threshold(0.5)]),
        listeners=[alerts],
    )
    call(60 * CENT)
    assert wait_for(lambda: sink.kinds("threshold"))
    call(CENT)  # crosses nothing new: still exactly one alert
    assert alerts.flush(5)
    assert fractions(sink.alerts) == ["0.5"]
    alerts.close()


def test_a_failed_delivery_is_picked_up_by_another_process(
    redis_client: Any, redis_url: str
) -> None:
    store = RedisStore(redis_url, prefix="bgr")
    state = RedisAlertState(redis_client, prefix="bgr")
    dead, alive = Flaky(failures=100), Collect()
    first = Alerts(sinks=[dead], state=state, store=store, retry_base_s=60)
    second = Alerts(sinks=[alive], state=state, store=store, retry_base_s=60)
    _config.configure(
        store=store,
        policy=Policy(limits=[Limit("feature", usd=1, window="day")], alerts=[Threshold(0.5)]),
        listeners=[first],
    )
    call(60 * CENT)
    assert first.flush(5) and dead.alerts == []  # failed, released for another try
    _config.configure(listeners=[second])
    call(CENT)
    assert second.flush(5)
    assert fractions(alive.alerts) == ["0.5"]  # the fleet still hears about it
    first.close()
    second.close()
    store.close()


def test_a_refused_call_raises_an_exhausted_alert_once() -> None:
    """Spend that stops at $0.299 of $0.30 never reaches Threshold(1.0): every next call is
    refused. A refusal now says the budget is exhausted, once per counter and window."""
    sink = Collect()
    alerts = Alerts(sinks=[sink])
    _config.configure(
        policy=Policy(limits=[Limit("feature", usd="0.30", window="day")], alerts=[Threshold(1)]),
        listeners=[alerts],
    )
    call(29 * CENT + 9 * CENT // 10)
    for _ in range(3):
        with pytest.raises(BudgetExceeded):
            call(2 * CENT)
    assert alerts.flush(5)
    assert sink.kinds("threshold") == []
    (exhausted,) = sink.kinds("exhausted")
    assert exhausted.scope == "feature" and exhausted.key == "summarize"
    assert exhausted.amount == Decimal("0.299") and exhausted.limit == Decimal("0.3")
    assert "out of its day budget" in exhausted.message
    alerts.close()


def test_per_call_alerts_never_hold_back_a_threshold_alert() -> None:
    """50 per-call alerts wait in a slow webhook's queue; the threshold alert does not."""
    hook = Hook(delay=0.2)
    webhook = Webhook(hook.url, timeout=5.0)
    alerts = Alerts(sinks=[webhook], rules=[RequestCost(usd=0)])
    _config.configure(
        policy=Policy(limits=[Limit("feature", usd=1, window="day")], alerts=[Threshold(0.5)]),
        listeners=[alerts],
    )
    for _ in range(50):
        call(CENT // 10)
    call(60 * CENT)
    assert wait_for(lambda: any(b["text"].find("50%") >= 0 for b in hook.bodies), timeout=3.0)
    assert len(hook.bodies) < 25  # the queue of per-call alerts is still draining
    alerts.close(timeout=0.5)
    hook.close()


def test_the_webhook_never_follows_a_redirect() -> None:
    """A 302 used to be followed as a GET carrying the Authorization header to another
    host, and the alert counted as sent."""
    elsewhere = Hook()
    redirecting = Hook(status=302, location=elsewhere.url)
    webhook = Webhook(redirecting.url, headers={"Authorization": "Bearer secret"}, retries=2)
    alert = Alert(kind="spike", message="hello", at=_now(), amount=Decimal(1))
    assert webhook.deliver(alert) is False
    webhook(alert)
    assert webhook.flush(10)
    assert elsewhere.requests == []  # the secret never left for another host
    assert len(redirecting.bodies) == 2  # one per delivery: a redirect is not retried
    assert (webhook.sent, webhook.failed) == (0, 2)
    webhook.close()
    elsewhere.close()
    redirecting.close()


def test_a_listener_sees_its_own_call_in_the_store() -> None:
    """The record used to reach listeners before the settle reached the store, so a
    listener reading the counter (the threshold check) could miss the call that crossed."""
    seen: list[tuple[int, int]] = []

    def listener(record: Any) -> None:
        status = _config.current().require_store().status(record.counters[0])
        seen.append((status.spent, status.held))

    _config.configure(
        policy=Policy(limits=[Limit("feature", usd=1, window="day")]), listeners=[listener]
    )
    call(3 * CENT)
    assert seen == [(3 * CENT, 0)]


# -- soft limits and limits in tokens or requests (issue 15) ----------------------------


def test_a_soft_limit_passed_alerts_once_per_window_and_the_calls_go_on() -> None:
    sink = Collect()
    alerts = Alerts(sinks=[sink])
    soft = Limit(scope="tenant", usd="0.05", window="day", enforce="warn")
    _config.configure(policy=Policy(limits=[soft]), listeners=[alerts])
    for _ in range(4):  # 4 x $0.02: the 3rd and 4th pass the $0.05 soft limit
        call(2 * CENT)
        alerts.flush()  # evaluated call by call: the alert reads the spend at the 3rd
    passed = sink.kinds("over_soft_limit")
    assert len(passed) == 1, [a.message for a in sink.alerts]
    alert = passed[0]
    assert (alert.scope, alert.key, alert.window, alert.unit) == ("tenant", "acme", "day", "usd")
    assert alert.limit == Decimal("0.05") and alert.amount == Decimal("0.06")
    assert "soft day limit" in alert.message and "$0.06 of $0.05" in alert.message
    assert not sink.kinds("exhausted")  # nothing was refused


def test_a_soft_request_cap_alerts_per_call() -> None:
    sink = Collect()
    alerts = Alerts(sinks=[sink])
    cap = Limit(scope="request", usd="0.01", enforce="warn")
    _config.configure(policy=Policy(limits=[cap]), listeners=[alerts])
    call(2 * CENT)
    call(CENT // 2)  # under the cap: no alert
    call(3 * CENT)
    alerts.flush()
    passed = sink.kinds("over_soft_limit")
    assert [a.amount for a in passed] == [Decimal("0.02"), Decimal("0.03")]
    assert all(a.scope == "request" and a.limit == Decimal("0.01") for a in passed)


def test_threshold_and_exhaustion_alerts_speak_the_limits_unit() -> None:
    sink = Collect()
    alerts = Alerts(sinks=[sink])
    requests = Limit(scope="feature", key="summarize", requests=4, window="day")
    _config.configure(
        policy=Policy(limits=[requests], alerts=[Threshold("0.5")]), listeners=[alerts]
    )
    for _ in range(4):
        call(CENT)
        alerts.flush()
    with pytest.raises(BudgetExceeded) as refused:
        call(CENT)
    assert refused.value.unit == "requests" and refused.value.limit == 4
    assert "4 requests" in str(refused.value)
    alerts.flush()
    [threshold] = sink.kinds("threshold")
    assert threshold.unit == "requests" and threshold.limit == 4 and threshold.amount == 2
    assert "2 requests of 4 requests" in threshold.message
    [gone] = sink.kinds("exhausted")
    assert gone.unit == "requests" and "4 requests of 4 requests" in gone.message


def test_a_soft_limit_alert_waits_for_the_spend_not_the_hold() -> None:
    """A call is over a soft limit by its worst case; if it settles below, no alert yet
    - and the window's one alert is still there for the spend that really passes."""
    sink = Collect()
    alerts = Alerts(sinks=[sink])
    soft = Limit(scope="tenant", usd="0.05", window="day", enforce="warn")
    _config.configure(policy=Policy(limits=[soft]), listeners=[alerts])
    with spend_limit(tenant="acme", user="u-1", feature="f"):
        admit_cost(6 * CENT).settle_nanos(CENT)  # held $0.06 > $0.05, spent $0.01
    alerts.flush()
    assert not sink.kinds("over_soft_limit")
    for _ in range(5):  # $0.01 each: the spend passes $0.05 at the 5th
        call(CENT)
        alerts.flush()
    [passed] = sink.kinds("over_soft_limit")
    assert passed.amount == Decimal("0.06") and passed.limit == Decimal("0.05")
