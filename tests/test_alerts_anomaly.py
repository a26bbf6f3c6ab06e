"""Alerts the seeds name (budgetguard/observe/alerts/{anomaly,digest,history,slack}.py):
a feature's cost per call jumping, spikes per tenant / user / feature, the daily digest
(once per day across the fleet, at least once) and Slack Block Kit messages.

Synthetic and deterministic: the clock is injected and ``CallRecord``s are fed to the
listener directly; every test runs on ``MemoryAlertState`` and on a real Redis (a
unique key prefix, deleted afterwards). Times are a day or two ahead of the real
clock, so Redis TTLs computed from them lie in the future.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from budgetguard._core.errors import ConfigurationError
from budgetguard._core.policy import Limit, Policy
from budgetguard._core.records import CallRecord
from budgetguard._engine import config as _config
from budgetguard.observe.alerts import (
    Alert,
    Alerts,
    CostPerCall,
    Digest,
    MemoryAlertState,
    RedisAlertState,
    Spike,
    Webhook,
    slack_payload,
)

MILLI = 1_000_000  # nano-USD
USD = 1_000_000_000
HOUR = 3600
# Tomorrow at 12:30 UTC: half past an hour, in the future of the real clock.
NOW = float((int(time.time()) // 86_400 + 1) * 86_400 + 12 * HOUR + 1800)


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    _config.reset()
    yield
    _config.reset()


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Collect:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def __call__(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def kinds(self, kind: str) -> list[Alert]:
        return [a for a in self.alerts if a.kind == kind]


class Flaky(Collect):
    """Fails its first ``failures`` deliveries."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.tries = 0

    def __call__(self, alert: Alert) -> None:
        self.tries += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the sink is down")
        super().__call__(alert)


def record(
    at: float,
    cost: int,
    *,
    feature: str | None = "document_analysis",
    tenant: str | None = "acme",
    user: str | None = "u-1",
) -> CallRecord:
    return CallRecord(
        at=at,
        outcome="ok",
        tenant=tenant,
        user=user,
        feature=feature,
        tags={},
        requested_model="gpt-4o",
        model="gpt-4o",
        usage=None,
        estimate=cost,
        cost=cost,
        latency_s=0.1,
        reservation_id=None,
        counters=(),
    )


@pytest.fixture(params=["memory", "redis"])
def make_state(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Builds states that share one memory (or one Redis prefix): a fleet of one or more."""
    prefix = f"bga{uuid.uuid4().hex[:10]}"
    shared: list[Any] = []
    clients: list[Any] = []

    def make(clock: Clock) -> Any:
        if request.param == "memory":
            if not shared:
                shared.append(MemoryAlertState(clock))
            return shared[0]
        state = RedisAlertState(request.getfixturevalue("redis_url"), prefix=prefix)
        clients.append(state.client)
        return state

    yield make
    if clients:
        keys = list(clients[0].scan_iter(match=f"{prefix}:*"))
        if keys:
            clients[0].delete(*keys)
        for client in clients:
            client.close()


def feed(alerts: Alerts, records: list[CallRecord]) -> None:
    for item in records:
        alerts(item)
    assert alerts.flush(10)


# -- cost per call ---------------------------------------------------------------------


def test_cost_per_call_fires_at_the_ratio_and_not_below_min_calls(make_state: Any) -> None:
    clock = Clock()
    sink = Collect()
    rule = CostPerCall(ratio=3, window="24h", baseline="7d", min_calls=20, check_every_s=0)
    alerts = Alerts(rules=[rule], sinks=[sink], state=make_state(clock), clock=clock)
    before = NOW - 2 * 86_400
    feed(alerts, [record(before - n * 600, 23 * MILLI) for n in range(40)])  # $0.023
    feed(alerts, [record(before - n * 600, 20 * MILLI, feature="chat") for n in range(40)])
    feed(alerts, [record(before, 20 * MILLI, feature="new") for _ in range(19)])
    now = [record(NOW - n * 60, 108 * MILLI) for n in range(19)]  # $0.108, 4.7x
    now += [record(NOW - n * 60, 50 * MILLI, feature="chat") for n in range(30)]  # 2.5x
    now += [record(NOW - n * 60, 90 * MILLI, feature="new") for n in range(30)]  # 19 before
    feed(alerts, now)
    assert sink.alerts == []  # 19 calls: below min_calls; chat: below the ratio
    feed(alerts, [record(NOW - 5, 108 * MILLI)])
    (alert,) = sink.alerts
    assert alert.kind == "cost_per_call" and alert.feature == "document_analysis"
    assert alert.message == (
        "budgetguard: document_analysis average cost per call increased 4.7x, "
        "from $0.023 to $0.108, in the last 24 hours (20 calls; 40 in the 7 days before)"
    )
    assert alert.amount == Decimal("0.108") and alert.baseline == Decimal("0.023")
    assert alert.fraction == Decimal("4.70") and alert.calls == 20 and alert.window == "24h"
    clock.now += HOUR  # still anomalous, but said once per feature and window
    feed(alerts, [record(clock.now, 108 * MILLI)])
    assert len(sink.alerts) == 1
    alerts.close()


def test_cost_per_call_ratio_is_configurable() -> None:
    clock = Clock()
    sink = Collect()
    rule = CostPerCall(ratio=5, window="1h", baseline="2d", min_calls=3, check_every_s=0)
    alerts = Alerts(rules=[rule], sinks=[sink], state=MemoryAlertState(clock), clock=clock)
    feed(alerts, [record(NOW - 5 * HOUR, 10 * MILLI) for _ in range(3)])
    feed(alerts, [record(NOW, 49 * MILLI) for _ in range(3)])  # 4.9x
    assert sink.alerts == []
    feed(alerts, [record(NOW, 53 * MILLI) for _ in range(3)])  # (147 + 159) / 6 = 5.1x
    (alert,) = sink.alerts
    assert "increased 5.1x, from $0.01 to $0.051, in the last hour (6 calls" in alert.message
    alerts.close()


# -- spikes per scope --------------------------------------------------------------------

WHO = {
    "tenant": ({"tenant": "acme"}, {"tenant": "globex"}),
    "user": ({"user": "u-1"}, {"user": "u-2"}),
    "feature": ({"feature": "agent"}, {"feature": "chat"}),
}


@pytest.mark.parametrize("scope", ["tenant", "user", "feature"])
def test_spike_per_scope_fires_for_the_spiking_one_only(make_state: Any, scope: str) -> None:
    clock = Clock()
    sink = Collect()
    rules = [
        Spike(factor=3, min_usd=1, check_every_s=0, scope=scope),  # type: ignore[arg-type]
        Spike(factor=3, min_usd=1, check_every_s=0),  # the fleet-wide one still works
    ]
    alerts = Alerts(rules=rules, sinks=[sink], state=make_state(clock), clock=clock)
    spiking, steady = WHO[scope]
    hour = int(NOW) // HOUR * HOUR
    history = [
        record(hour - (k + 2) * HOUR + 600, USD, **who)  # $1 an hour each, for 7 days
        for k in range(7 * 24)
        for who in (spiking, steady)
    ]
    feed(alerts, history)
    feed(alerts, [record(NOW - 60, USD, **spiking) for _ in range(2)])  # 2x
    feed(alerts, [record(NOW - 60, USD // 2, **steady) for _ in range(3)])  # 1.5x
    assert sink.alerts == []
    feed(alerts, [record(NOW - 30, USD, **spiking) for _ in range(3)])  # 5x
    scoped = [a for a in sink.kinds("spike") if a.scope == scope]
    (alert,) = scoped
    name = next(iter(spiking.values()))
    assert alert.key == name and getattr(alert, scope) == name
    assert alert.amount == Decimal(5) and alert.baseline == Decimal(1)
    assert f"spend spike for {scope} {name!r}" in alert.message
    if scope == "user":
        assert alert.tenant == "acme" and "of tenant 'acme'" in alert.message
    assert "$5.00 in the last hour, 5.0x its 7-day hourly average ($1.00)" in alert.message
    (fleet,) = [a for a in sink.kinds("spike") if a.scope is None]
    assert fleet.amount == Decimal("6.5")  # $6.50 vs $2/h: 3.25x
    feed(alerts, [record(NOW - 20, 4 * USD, **spiking), record(NOW, 9 * USD, **steady)])
    scoped = [a for a in sink.kinds("spike") if a.scope == scope]
    assert [a.key for a in scoped] == [name, next(iter(steady.values()))]  # once each
    alerts.close()


def test_a_spike_per_feature_through_the_real_engine() -> None:
    from budgetguard._engine.flow import admit_cost
    from budgetguard._engine.guard import spend_limit

    sink = Collect()
    alerts = Alerts(
        rules=[Spike(factor=2, min_usd="1.2", check_every_s=0, scope="feature")], sinks=[sink]
    )
    _config.configure(listeners=[alerts])
    for feature, nanos in (("agent", USD), ("chat", USD // 2), ("agent", USD // 2)):
        with spend_limit(feature=feature, user="u-1", tenant="acme"):
            admission = admit_cost(nanos, model="gpt-4o")
            admission.settle_nanos(nanos, model="gpt-4o")
    assert alerts.flush(10)
    (alert,) = sink.alerts  # no history: the first hour above min_usd, agent only
    assert alert.feature == "agent" and alert.amount == Decimal("1.5")
    assert "no history" in alert.message
    alerts.close()


# -- the daily digest --------------------------------------------------------------------

DAY = datetime.fromtimestamp(NOW, UTC).date()  # the records' day; the digest comes next day


def at(day_offset: int, hour: int, minute: int = 0) -> float:
    moment = datetime(DAY.year, DAY.month, DAY.day, hour, minute, tzinfo=UTC)
    return (moment + timedelta(days=day_offset)).timestamp()


def day_records() -> list[CallRecord]:
    found = [record(at(0, 10), 3 * USD, feature="document_analysis", user="u-1")]
    found += [record(at(0, 11), USD, feature="chat", user="u-2") for _ in range(2)]
    found += [record(at(0, 23, 59), USD // 2, feature="chat", user="u-1", tenant="globex")]
    found += [record(at(0, 12), USD // 4, feature=None, user=None)]
    found += [record(at(-1, 23), 7 * USD, feature="chat")]  # the day before: not in it
    return found


def test_digest_once_per_day_across_two_instances(make_state: Any) -> None:
    clock = Clock(at(0, 8))  # before 9: no digest of the day before yet
    sinks = Collect(), Collect()
    fleet = [
        Alerts(
            rules=[Digest(hour=9, top=2, budget_usd=10, check_every_s=3600)],
            sinks=[sink],
            state=make_state(clock),
            clock=clock,
        )
        for sink in sinks
    ]
    records = day_records()
    feed(fleet[0], records[:3])  # each process feeds its calls; the day's totals are shared
    feed(fleet[1], records[3:])
    for moment in (at(1, 8, 59), at(1, 9, 0), at(1, 9, 0) + 2, at(1, 15)):
        clock.now = moment + 0.5
        for alerts in fleet:
            alerts.check()
            assert alerts.flush(10)
        expected = 0 if moment < at(1, 9) else 1
        assert len(sinks[0].alerts) + len(sinks[1].alerts) == expected
    (digest,) = sinks[0].alerts + sinks[1].alerts
    assert digest.kind == "digest" and digest.key == DAY.isoformat()
    assert digest.amount == Decimal("5.75") and digest.calls == 5
    assert digest.limit == Decimal(10) and digest.fraction == Decimal("0.575")
    assert digest.top_features == (("document_analysis", Decimal(3)), ("chat", Decimal("2.5")))
    assert digest.top_users == (("u-1 (acme)", Decimal(3)), ("u-2 (acme)", Decimal(2)))
    assert digest.message == (
        f"budgetguard: daily digest for {DAY.isoformat()} (UTC): $5.75 spent in 5 calls, "
        "58% of the $10.00 daily budget. Top features: document_analysis $3.00, chat $2.50. "
        "Top users: u-1 (acme) $3.00, u-2 (acme) $2.00"
    )
    clock.now = at(2, 9, 1)  # the next day: a new digest (of an empty day)
    fleet[1].check()
    assert fleet[1].flush(10)
    assert len(sinks[0].alerts) + len(sinks[1].alerts) == 2
    for alerts in fleet:
        alerts.close()


def test_digest_is_redelivered_when_a_sink_fails(make_state: Any) -> None:
    clock = Clock(at(0, 6))  # before 9 in Paris: no digest of the day before yet
    rule = Digest(hour=9, check_every_s=3600, timezone="Europe/Paris")
    down, up = Flaky(failures=100), Collect()
    first = Alerts(
        rules=[rule], sinks=[down], state=make_state(clock), clock=clock, retry_base_s=60
    )
    second = Alerts(rules=[rule], sinks=[up], state=make_state(clock), clock=clock)
    feed(first, day_records())
    clock.now = at(1, 8, 30)  # 09:30 in Paris (UTC+1 in winter, +2 in summer: after 9)
    if datetime.fromtimestamp(clock.now, rule.zone).hour < 9:
        clock.now += HOUR
    first.check()
    assert first.flush(10)
    assert down.tries == 1 and down.alerts == []  # failed: released for another try
    second.check()
    assert second.flush(10)
    (digest,) = up.alerts  # another process picked it up: at least once
    assert "(Europe/Paris)" in digest.message and digest.amount > 0
    first.close()
    second.close()

    flaky = Flaky(failures=2)  # one process, a sink down twice: its own retries deliver
    clock.now = at(2, 9, 30)
    alerts = Alerts(
        rules=[rule], sinks=[flaky], state=make_state(clock), clock=clock, retry_base_s=0.05
    )
    alerts.check()
    deadline = time.monotonic() + 10
    while not flaky.alerts and time.monotonic() < deadline:
        time.sleep(0.02)
    assert flaky.tries == 3 and len(flaky.kinds("digest")) == 1
    alerts.check()
    assert alerts.flush(10)
    assert flaky.tries == 3  # confirmed: not again
    alerts.close()


def test_the_digest_goes_out_on_a_timer_without_any_call() -> None:
    clock = Clock(at(0, 8))
    sink = Collect()
    state = MemoryAlertState(clock)
    feeder = Alerts(rules=[Digest(check_every_s=3600)], sinks=[sink], state=state, clock=clock)
    feed(feeder, day_records())
    feeder.close()
    clock.now = at(1, 9, 5)
    idle = Alerts(rules=[Digest(check_every_s=0.05)], sinks=[sink], state=state, clock=clock)
    deadline = time.monotonic() + 10
    while not sink.alerts and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [a.kind for a in sink.alerts] == ["digest"]
    idle.close()


def test_digest_budget_comes_from_the_policy_daily_global_limit() -> None:
    clock = Clock(at(0, 8))  # before 9: no digest of the day before yet
    sink = Collect()
    policy = Policy(limits=[Limit("global", usd=20, window="day")])
    alerts = Alerts(
        rules=[Digest(check_every_s=3600)],
        sinks=[sink],
        state=MemoryAlertState(clock),
        clock=clock,
        policy=policy,
    )
    feed(alerts, day_records())
    clock.now = at(1, 9)
    alerts.check()
    assert alerts.flush(10)
    (digest,) = sink.alerts
    assert digest.limit == Decimal(20) and "29% of the $20.00 daily budget" in digest.message
    assert digest.to_dict()["top_features"][0] == ["document_analysis", "3"]
    alerts.close()


# -- Slack -----------------------------------------------------------------------------


class Hook:
    """A local HTTP server that records the JSON bodies posted to it."""

    def __init__(self) -> None:
        bodies: list[Any] = []
        self.bodies = bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_slack_payload_has_blocks_and_the_text_fallback() -> None:
    hook = Hook()
    webhook = Webhook(hook.url)
    clock = Clock(at(0, 8))  # before 9: no digest of the day before yet
    rules = [Digest(top=3, budget_usd=10, check_every_s=3600)]
    alerts = Alerts(rules=rules, sinks=[webhook], state=MemoryAlertState(clock), clock=clock)
    feed(alerts, [*day_records(), record(at(0, 13), USD, feature="a<b>&c")])
    clock.now = at(1, 9)
    alerts.check()
    assert alerts.flush(10) and webhook.flush(10)
    (body,) = hook.bodies
    assert body["text"].startswith("budgetguard: daily digest for")  # notifications, Mattermost
    header, message, fields, features, users, context = body["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Daily LLM spend digest"},
    }
    assert message["type"] == "section" and message["text"]["type"] == "mrkdwn"
    assert "a&lt;b&gt;&amp;c" in message["text"]["text"]  # mrkdwn's reserved characters
    shown = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in fields["fields"]}
    assert shown["*Spent*"] == "$6.75" and shown["*Daily budget*"] == "$10.00"
    assert shown["*Calls*"] == "6" and shown["*Day*"] == DAY.isoformat()
    assert all(f["type"] == "mrkdwn" for f in fields["fields"]) and len(fields["fields"]) <= 10
    assert features["text"]["text"].startswith("*Top features*\n• document_analysis: $3.00")
    assert users["text"]["text"].startswith("*Top users*\n• u-1 (acme): $4.00")
    assert context["type"] == "context"
    alerts.close()
    hook.close()


def test_slack_blocks_for_a_cost_per_call_alert() -> None:
    alert = Alert(
        kind="cost_per_call",
        message="budgetguard: document_analysis average cost per call increased 4.7x",
        at=datetime.fromtimestamp(NOW, UTC),
        amount=Decimal("0.108"),
        baseline=Decimal("0.023"),
        fraction=Decimal("4.70"),
        scope="feature",
        key="document_analysis",
        feature="document_analysis",
        window="24h",
        calls=20,
    )
    blocks = slack_payload(alert)["blocks"]
    assert blocks[0]["text"]["text"] == "Cost per call anomaly"
    texts = [f["text"] for f in blocks[2]["fields"]]
    assert texts == [
        "*Average cost per call*\n$0.108",
        "*Before*\n$0.023",
        "*Calls*\n20",
        "*Feature*\ndocument_analysis",
        "*Window*\n24h",
    ]


# -- configuration -----------------------------------------------------------------------


def test_bad_rules_name_the_argument() -> None:
    with pytest.raises(ConfigurationError, match=r"CostPerCall\.window"):
        CostPerCall(window="5m")
    with pytest.raises(ConfigurationError, match=r"CostPerCall\.ratio"):
        CostPerCall(ratio=1)
    with pytest.raises(ConfigurationError, match=r"CostPerCall\.min_calls"):
        CostPerCall(min_calls=0)
    with pytest.raises(ConfigurationError, match=r"Spike\.scope"):
        Spike(scope="model")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"Digest\.timezone"):
        Digest(timezone="Mars/Olympus_Mons")
    with pytest.raises(ConfigurationError, match=r"Digest\.hour"):
        Digest(hour=24)
    with pytest.raises(ConfigurationError, match="one Spike rule per scope"):
        Alerts(rules=[Spike(scope="user"), Spike(factor=5, scope="user")])
    Alerts(rules=[Spike(), Spike(scope="user"), Spike(scope="tenant")]).close()
    # Two would share one history of cost per call and count every call twice (review).
    with pytest.raises(ConfigurationError, match="at most one CostPerCall rule"):
        Alerts(rules=[CostPerCall(window="24h"), CostPerCall(window="1h", ratio=2)])
