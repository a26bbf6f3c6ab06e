"""The pure core: counters a call touches, and the policy's decisions."""

from __future__ import annotations

import random

import pytest

import budgetguard as bg
from budgetguard._core import decide as core_decide
from budgetguard._core import plan as core_plan
from budgetguard._core.attribution import Attribution, Frame, RunTally
from budgetguard.stores import Counter, Denial, Reservation


def frame(**kw: object) -> Frame:
    base: dict[str, object] = dict(
        id="f1",
        tenant=None,
        user=None,
        feature=None,
        tags={},
        limits=(),
        on_exceed=None,
        tally=RunTally(),
    )
    base.update(kw)
    return Frame(**base)  # type: ignore[arg-type]


POLICY = bg.Policy(
    limits=[
        bg.Limit(scope="tenant", usd=100, window="month"),
        bg.Limit(scope="user", usd=5, window="day"),
        bg.Limit(scope="feature", key="summarize", usd=20, window="day"),
        bg.Limit(scope="model", key="gpt-4o", usd=50, window="day"),
        bg.Limit(scope="request", usd="0.10"),
        bg.Limit(scope="global", usd=1000, window="month"),
    ]
)


def test_a_call_touches_one_counter_per_applicable_limit() -> None:
    who = Attribution(tenant="acme", user="u-42", feature="summarize")
    counters = core_plan.plan_counters(POLICY, (), who, "gpt-4o")
    assert {(c.scope, c.subject, c.window) for c in counters} == {
        ("tenant", "acme", "month"),
        ("user", "u-42", "day"),
        ("feature", "summarize", "day"),
        ("model", "gpt-4o", "day"),
        ("global", "*", "month"),
    }
    by_scope = {c.scope: c for c in counters}
    # users are counted inside their tenant, and share its hash tag
    assert by_scope["user"].key == "tenant=acme/user=u-42:day"
    assert by_scope["user"].tag == by_scope["tenant"].tag == "acme"
    assert by_scope["feature"].tag == "global"


def test_limits_without_attribution_or_for_other_keys_do_not_apply() -> None:
    counters = core_plan.plan_counters(POLICY, (), Attribution(feature="translate"), "gpt-4o-mini")
    assert [c.scope for c in counters] == ["global"]


def test_user_ids_cannot_forge_keys_or_hash_tags() -> None:
    who = Attribution(tenant="a}{b", user="x:y/z")
    counters = core_plan.plan_counters(POLICY, (), who, None)
    for counter in counters:
        assert "{" not in counter.key and "}" not in counter.tag
    assert {c.subject for c in counters} >= {"a}{b", "x:y/z"}


def test_the_same_counter_twice_keeps_the_tighter_limit_once() -> None:
    inner = frame(limits=(bg.Limit(scope="user", usd=2, window="day"),))
    who = Attribution(user="u1")
    counters = core_plan.plan_counters(POLICY, (inner,), who, None)
    users = [c for c in counters if c.scope == "user"]
    assert len(users) == 1 and users[0].limit == 2_000_000_000


def test_every_frame_gets_its_own_run_counter() -> None:
    outer = frame(id="outer", limits=(bg.Limit(scope="run", usd=1),))
    inner = frame(id="inner", limits=(bg.Limit(scope="run", usd="0.5"),))
    counters = core_plan.plan_counters(bg.Policy(), (outer, inner), Attribution(), None)
    assert {(c.subject, c.limit) for c in counters} == {("outer", 10**9), ("inner", 5 * 10**8)}


def test_request_caps_take_the_tightest() -> None:
    inner = frame(limits=(bg.Limit(scope="request", usd="0.05"),))
    assert [c.amount for c in core_plan.plan_caps(POLICY, ())] == [100_000_000]
    assert [c.amount for c in core_plan.plan_caps(POLICY, (inner,))] == [50_000_000]
    assert core_plan.plan_caps(bg.Policy(), ()) == ()


COUNTER = Counter(key="user=u:day", limit=1000, window="day", scope="user", subject="u")


def denial(held: int = 0, requested: int = 500, resets_in: float | None = 3600) -> Denial:
    resets = None if resets_in is None else int(1000 + resets_in)
    return Denial(COUNTER, spent=800, held=held, requested=requested, resets_at=resets, now=1000.0)


def decide(outcome: object, **kw: object) -> core_decide.Step:
    args: dict[str, object] = dict(
        on_exceed="raise",
        model="gpt-4o",
        next_model=None,
        waited_s=0.0,
        block_timeout=30.0,
        attempt=0,
        rng=random.Random(1),
    )
    args.update(kw)
    return core_decide.decide(outcome, **args)  # type: ignore[arg-type]


def test_granted_reservations_are_admitted() -> None:
    granted = Reservation("r", 5, (), 0.0)
    assert decide(granted) == core_decide.Admit(granted)
    assert decide(None) == core_decide.Admit(None)


def test_raise_names_scope_key_limit_spent_and_requested() -> None:
    step = decide(denial())
    assert isinstance(step, core_decide.Refuse)
    error = step.error
    assert (error.scope, error.key, error.window) == ("user", "u", "day")
    assert error.limit == bg.Money(1000).usd_amount
    assert error.spent == bg.Money(800).usd_amount
    assert error.requested == bg.Money(500).usd_amount
    assert error.retry_after is not None and error.retry_after.total_seconds() == 3600
    assert "u" in str(error) and "gpt-4o" in str(error)


def test_a_request_bigger_than_the_limit_has_no_retry_after() -> None:
    step = decide(denial(requested=5000))
    assert isinstance(step, core_decide.Refuse) and step.error.retry_after is None


def test_downgrade_tries_the_next_model_then_gives_up() -> None:
    assert decide(
        denial(), on_exceed="downgrade", next_model="gpt-4o-mini"
    ) == core_decide.TryModel("gpt-4o-mini")
    assert isinstance(decide(denial(), on_exceed="downgrade"), core_decide.Refuse)
    cap = core_decide.CapDenial(cap=100, requested=200)
    assert decide(cap, on_exceed="downgrade", next_model="m") == core_decide.TryModel("m")
    refused = decide(cap)
    assert isinstance(refused, core_decide.Refuse) and refused.error.scope == "request"


def test_block_waits_for_holds_with_jittered_backoff_and_gives_up_after_the_timeout() -> None:
    first = decide(denial(held=300), on_exceed="block", attempt=0)
    later = decide(denial(held=300), on_exceed="block", attempt=10)
    assert isinstance(first, core_decide.Wait) and 0.025 <= first.seconds <= 0.05
    assert isinstance(later, core_decide.Wait) and 0.5 <= later.seconds <= 1.0
    assert isinstance(
        decide(denial(held=300), on_exceed="block", waited_s=30.0), core_decide.Refuse
    )


def test_block_waits_for_the_window_only_when_it_resets_in_time() -> None:
    soon = decide(denial(resets_in=2), on_exceed="block")
    assert isinstance(soon, core_decide.Wait) and 2 <= soon.seconds <= 2.1
    assert isinstance(decide(denial(resets_in=3600), on_exceed="block"), core_decide.Refuse)
    assert isinstance(decide(denial(resets_in=None), on_exceed="block"), core_decide.Refuse)
    assert isinstance(
        decide(denial(requested=5000, held=10), on_exceed="block"), core_decide.Refuse
    )


def test_the_hot_paths_record_constructor_equals_the_dataclasss() -> None:
    """``record_of`` (every call with a listener builds one) must stay field for field
    what ``CallRecord(...)`` builds, if a field is ever added or moved."""
    from dataclasses import fields

    from budgetguard._core.records import CallRecord, record_of

    values = [
        1.5,
        "ok",
        "acme",
        "u-1",
        "chat",
        {"team": "x"},
        "gpt-4o",
        "gpt-4o-mini",
        None,
        7,
        5,
        0.25,
        "r-1",
        (),
        None,
        None,
        300,
        (),
        "openai",
    ]
    assert len(values) == len(fields(CallRecord))
    built = record_of(*values)
    assert built == CallRecord(*values)  # type: ignore[arg-type]
    assert [getattr(built, f.name) for f in fields(CallRecord)] == values
    with pytest.raises(TypeError, match="19 fields"):
        record_of(*values[:-1])
