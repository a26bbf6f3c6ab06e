"""The ``budgetguard`` CLI on real data: a Redis store (DB from REDIS_URL) and a SQLite ledger
filled by guarded calls through the engine, read back by ``main([...])`` in-process and
once through the installed entry point in a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from budgetguard._core.errors import BudgetExceeded
from budgetguard._core.money import nanos_to_usd
from budgetguard._core.usage import Usage
from budgetguard._engine import config as _config
from budgetguard._engine.flow import admit_cost
from budgetguard._engine.guard import spend_limit
from budgetguard._engine.status import status
from budgetguard.cli import counter_pattern, load_context, main, parse_counter_key
from budgetguard.observe.ledger import SQLiteLedger
from budgetguard.stores import RedisStore

ROOT = Path(__file__).resolve().parents[1]

POLICY_TOML = """\
store = "{store}"
prefix = "{prefix}"
ledger = "sqlite:///{ledger}"

[policy]
on_exceed = "downgrade"
downgrade = {{ "gpt-4o" = "gpt-4o-mini" }}
alerts = [{{ fraction = "0.8" }}, {{ fraction = "1.0" }}]

[[policy.limits]]
scope = "tenant"
usd = 100
window = "month"

[[policy.limits]]
scope = "user"
usd = "0.05"
window = "day"

[[policy.limits]]
scope = "feature"
key = "summarize"
usd = 20
window = "day"

[[policy.limits]]
scope = "request"
usd = "0.10"
"""


@dataclass
class World:
    config: Path
    store: RedisStore
    ledger: SQLiteLedger
    spent: dict[tuple[str, str], int]  # (tenant, user) -> nanos settled

    def run(self, *argv: str) -> tuple[int, str, str]:
        out = io.StringIO()
        err = io.StringIO()
        old = sys.stderr
        sys.stderr = err
        try:
            code = main([*argv, "--config", str(self.config)], out=out)
        finally:
            sys.stderr = old
        return code, out.getvalue(), err.getvalue()


def call(nanos: int, *, tenant: str, user: str, feature: str, model: str = "gpt-4o") -> None:
    with spend_limit(tenant=tenant, user=user, feature=feature):
        admission = admit_cost(nanos + 1000, model=model)
        admission.settle_nanos(nanos, model=model, usage=Usage(input_tokens=500, output_tokens=100))


@pytest.fixture
def world(redis_url: str, tmp_path: Path) -> Iterator[World]:
    prefix = f"bgcli{uuid.uuid4().hex[:8]}"
    config = tmp_path / "budgetguard.toml"
    config.write_text(
        POLICY_TOML.format(store=redis_url, prefix=prefix, ledger=tmp_path / "ledger.db")
    )
    ctx = load_context(config=str(config), environ={})
    store = RedisStore.from_url(redis_url, prefix=prefix)
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    _config.configure(store=store, policy=ctx.policy, listeners=[ledger])
    spent: dict[tuple[str, str], int] = {}
    plan = [
        ("acme", "u-1", "summarize", 12_345_678),
        ("acme", "u-1", "chat", 3_000_001),
        ("acme", "u-2", "summarize", 7),
        ("globex", "u-1", "summarize", 20_000_000),
        ("globex", "u-3", "chat", 999_999_999),  # above the user's $0.05: denied
    ]
    for tenant, user, feature, nanos in plan:
        try:
            call(nanos, tenant=tenant, user=user, feature=feature)
        except BudgetExceeded:
            continue
        spent[tenant, user] = spent.get((tenant, user), 0) + nanos
    assert ledger.flush(10)
    try:
        yield World(config, store, ledger, spent)
    finally:
        _config.reset()
        ledger.close()
        keys = list(store.client.scan_iter(match=f"{prefix}:*"))
        if keys:
            store.client.delete(*keys)
        store.close()


# -- limits ----------------------------------------------------------------------


def test_limits_table_and_json(world: World) -> None:
    code, out, _ = world.run("limits")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SCOPE", "KEY", "WINDOW", "LIMIT"]
    assert lines[2].split() == ["tenant", "*", "month", "$100.00"]
    assert "feature  summarize  day" in out and "$0.10" in out
    assert "on_exceed: downgrade" in out and "gpt-4o -> gpt-4o-mini" in out
    assert "alerts: 80%, 100%" in out

    code, out, _ = world.run("limits", "--json")
    data = json.loads(out)
    assert data["on_exceed"] == "downgrade"
    assert [(x["scope"], x["usd"]) for x in data["limits"]][:2] == [
        ("tenant", "100"),
        ("user", "0.05"),
    ]


# -- status ----------------------------------------------------------------------


def test_status_lists_every_counter_with_exact_amounts(world: World) -> None:
    code, out, _ = world.run("status", "--json")
    assert code == 0
    rows = json.loads(out)
    users = {(r["tenant"], r["key"]): r for r in rows if r["scope"] == "user"}
    assert set(users) == set(world.spent)
    for who, nanos in world.spent.items():
        assert users[who]["spent_nanos"] == nanos
        assert Decimal(users[who]["spent_usd"]) == nanos_to_usd(nanos)
        assert users[who]["held_nanos"] == 0
        assert Decimal(users[who]["remaining_usd"]) == Decimal("0.05") - nanos_to_usd(nanos)
        assert users[who]["resets_at"].endswith("+00:00")
    tenants = {r["key"]: r["spent_nanos"] for r in rows if r["scope"] == "tenant"}
    assert tenants == {"acme": 15_345_686, "globex": 20_000_000}
    feature = next(r for r in rows if r["scope"] == "feature")
    assert (feature["key"], feature["spent_nanos"]) == ("summarize", 32_345_685)
    # bg.status, what the application sees, agrees
    assert status("user", "u-1", tenant="acme").spent == nanos_to_usd(world.spent["acme", "u-1"])


def test_status_table_and_filters(world: World) -> None:
    code, out, _ = world.run("status", "--scope", "user", "--tenant", "acme")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["SCOPE", "KEY", "TENANT", "WINDOW"]
    body = [line.split() for line in lines[2:]]
    assert [(b[1], b[2]) for b in body] == [("u-1", "acme"), ("u-2", "acme")]
    assert body[0][4:8] == ["$0.05", "$0.015345679", "$0.00", "$0.034654321"]
    assert body[0][8] == "30.7%"

    code, out, _ = world.run("status", "--scope", "tenant", "--key", "nobody", "--csv")
    assert next(csv.DictReader(io.StringIO(out)))["spent_usd"] == "0"


# -- report ----------------------------------------------------------------------


def test_report_by_feature_user_tenant_model(world: World) -> None:
    code, out, _ = world.run("report", "--by", "feature", "--since", "1d", "--json")
    assert code == 0
    rows = {r["key"]: r for r in json.loads(out)}
    assert rows["summarize"]["cost_nanos"] == 12_345_678 + 7 + 20_000_000
    assert rows["chat"]["cost_nanos"] == 3_000_001
    assert rows["chat"]["denied"] == 1 and rows["chat"]["calls"] == 2
    total = sum(r["cost_nanos"] for r in rows.values())
    assert total == sum(world.spent.values())

    code, out, _ = world.run("report", "--by", "user", "--csv")
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert [r["key"] for r in parsed] == ["u-1", "u-2", "u-3"]
    assert Decimal(parsed[0]["cost_usd"]) == nanos_to_usd(12_345_678 + 3_000_001 + 20_000_000)

    code, out, _ = world.run("report", "--by", "tenant")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "TENANT",
        "CALLS",
        "DENIED",
        "ERRORS",
        "DOWNGRADED",
        "INPUT",
        "TOK",
        "OUTPUT",
        "TOK",
        "COST",
        "SHARE",
    ]
    assert lines[2].split()[0] == "globex" and lines[2].split()[-2:] == ["$0.02", "56.6%"]
    assert "total $0.035345686 over 5 calls" in out

    code, out, _ = world.run("report", "--by", "model", "--top", "1", "--json")
    assert [r["key"] for r in json.loads(out)] == ["gpt-4o"]


# -- reset -----------------------------------------------------------------------


def test_reset_one_user_with_yes(world: World) -> None:
    marker = counter_pattern(world.store.prefix, "user", key="u-1", tenant="acme", kind="a")
    marker_key = marker.replace("*", "day", 1).replace(":*", ":123:0.8")
    world.store.client.set(marker_key, 1)
    code, out, _ = world.run("reset", "--scope", "user", "--key", "u-1", "--tenant", "acme", "-y")
    assert code == 0, out
    assert "reset 1 counter bucket(s): 1 deleted" in out and "1 alert marker(s)" in out
    assert not world.store.client.exists(marker_key)
    code, out, _ = world.run("status", "--scope", "user", "--json")
    spent = {(r["tenant"], r["key"]): r["spent_nanos"] for r in json.loads(out)}
    assert ("acme", "u-1") not in spent  # no spend left in this window
    assert spent["globex", "u-1"] == 20_000_000 and spent["acme", "u-2"] == 7
    # the tenant counter is untouched: only what was named is reset
    code, out, _ = world.run("status", "--scope", "tenant", "--key", "acme", "--json")
    assert json.loads(out)[0]["spent_nanos"] == 15_345_686


def test_reset_keeps_holds_of_calls_in_flight(world: World) -> None:
    with spend_limit(tenant="acme", user="u-9", feature="x"):
        admission = admit_cost(1_000_000)
        call(5, tenant="acme", user="u-9", feature="x")
        code, out, _ = world.run("reset", "--scope", "user", "--key", "u-9", "--yes")
        assert code == 0 and "1 zeroed with calls in flight" in out
        code, out, _ = world.run("status", "--scope", "user", "--key", "u-9", "--json")
        row = json.loads(out)[0]
        assert (row["spent_nanos"], row["held_nanos"]) == (0, 1_000_000)
        admission.settle_nanos(400)
    code, out, _ = world.run("status", "--scope", "user", "--key", "u-9", "--json")
    row = json.loads(out)[0]
    assert (row["spent_nanos"], row["held_nanos"]) == (400, 0)


def test_reset_asks_and_refuses_without_a_terminal(world: World) -> None:
    code, _, err = world.run("reset", "--scope", "tenant")
    assert code == 2 and "pass --yes" in err
    code, out, _ = world.run("status", "--scope", "tenant", "--key", "acme", "--json")
    assert json.loads(out)[0]["spent_nanos"] == 15_345_686
    code, _, err = world.run("reset")
    assert code == 2 and "--scope" in err and "--all" in err


def test_reset_all(world: World) -> None:
    code, out, _ = world.run("reset", "--all", "--yes")
    assert code == 0 and "every counter" in out
    assert list(world.store.client.scan_iter(match=f"{world.store.prefix}:*:c:*")) == []


def test_reset_refuses_an_in_process_store(tmp_path: Path) -> None:
    err = io.StringIO()
    old, sys.stderr = sys.stderr, err
    try:
        code = main(["reset", "--all", "--yes", "--store", "memory://"], out=io.StringIO())
    finally:
        sys.stderr = old
    assert code == 2 and "in-process" in err.getvalue() and "--store" in err.getvalue()


# -- configuration and errors ------------------------------------------------------


def run_main(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old, sys.stderr = sys.stderr, err
    saved = dict(os.environ)
    try:
        os.environ.update(env or {})
        code = main(list(argv), out=out)
    finally:
        sys.stderr = old
        os.environ.clear()
        os.environ.update(saved)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("content", "suffix", "expected"),
    [
        ('{"limits": [{"scope": "user", "usd": -1}]}', ".json", "policy: limits.0.usd"),
        ("colour = 1\n", ".toml", "unknown key(s) colour"),
        ("store = [", ".toml", "not valid TOML"),
        ('{"store": "mysql://x"}', ".json", ": store: unsupported store URL"),
        ('{"ledger": 3, "limits": []}', ".json", "ledger: expected a URL"),
    ],
)
def test_config_errors_name_the_field(
    tmp_path: Path, content: str, suffix: str, expected: str
) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    code, _, err = run_main("status", "--config", str(path))
    assert code == 2
    assert expected in err
    assert str(path) in err


def test_option_errors(tmp_path: Path) -> None:
    code, _, err = run_main("status", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "--config: cannot read" in err
    code, _, err = run_main("limits", "--app", "nocolon")
    assert code == 2 and "--app: expected module:attr" in err
    code, _, err = run_main("limits", "--app", "no_such_module_xyz:setup")
    assert code == 2 and "--app: cannot import 'no_such_module_xyz'" in err
    code, _, err = run_main("report", "--store", "memory://")
    assert code == 2 and "no ledger configured" in err
    code, _, err = run_main("report", "--ledger", f"sqlite:///{tmp_path}/x.db", "--by", "colour")
    assert code == 2 and "--by: expected one of" in err
    code, _, err = run_main("report", "--ledger", f"sqlite:///{tmp_path}/x.db", "--since", "soon")
    assert code == 2 and "--since: expected a duration" in err
    code, _, err = run_main("status", "--ledger", "x.db", env={"BUDGETGUARD_STORE": "ftp://x"})
    assert code == 2 and "BUDGETGUARD_STORE: unsupported store URL" in err
    code, _, _ = run_main("frobnicate")
    assert code == 2


def test_env_vars_and_flag_precedence(world: World, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()  # a database with no ledger table yet: reads as empty
    env = {"BUDGETGUARD_LEDGER": f"sqlite:///{other}", "BUDGETGUARD_CONFIG": str(world.config)}
    code, out, _ = run_main("report", "--json", env=env)
    assert code == 0 and json.loads(out) == []  # the env var beats the config file
    code, out, _ = run_main("report", "--json", "--ledger", str(world.ledger.path), env=env)
    assert len(json.loads(out)) == 2  # the flag beats the env var


def test_budgetguard_toml_in_the_current_directory_is_read(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(world.config.parent)
    code, out, _ = run_main("status", "--json")
    assert code == 0 and json.loads(out)  # the world's counters, found without --config
    monkeypatch.chdir(world.config.parent.parent)
    code, _, err = run_main("status")
    assert code == 2 and "no limits configured" in err


def test_app_callable_configures_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--app module:attr`` runs the application's own bg.configure(...)."""
    (tmp_path / "bg_cli_app.py").write_text(
        textwrap.dedent(
            f"""
            from budgetguard._engine import config as _config
            from budgetguard.observe.ledger import SQLiteLedger
            from budgetguard._core.policy import Limit, Policy
            from budgetguard.stores import MemoryStore

            STORE = MemoryStore()
            LEDGER = SQLiteLedger({str(tmp_path / "app.db")!r})

            def setup():
                _config.configure(
                    store=STORE,
                    policy=Policy(limits=[Limit("feature", usd=5, window="week")]),
                    listeners=[LEDGER],
                )
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import bg_cli_app  # type: ignore[import-not-found]

    bg_cli_app.setup()
    call(250_000_000, tenant="t", user="u", feature="ocr")
    code, out, _ = run_main("status", "--app", "bg_cli_app:setup", "--json")
    assert code == 0
    assert [(r["scope"], r["key"], r["spent_usd"]) for r in json.loads(out)] == [
        ("feature", "ocr", "0.25")
    ]
    code, out, _ = run_main("report", "--app", "bg_cli_app:setup", "--by", "feature", "--json")
    assert json.loads(out)[0]["cost_usd"] == "0.25"
    code, out, _ = run_main("limits", "--app", "bg_cli_app:setup")
    assert "feature  *    week    $5.00" in out
    _config.reset()
    bg_cli_app.LEDGER.close()


def test_the_installed_command(world: World) -> None:
    """Once for real: the console script, in a subprocess, reading the same data."""
    exe = shutil.which("budgetguard", path=os.path.dirname(sys.executable))
    argv = [exe] if exe else [sys.executable, "-m", "budgetguard.cli"]
    done = subprocess.run(
        [*argv, "report", "--by", "tenant", "--json", "--config", str(world.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert {r["key"]: r["cost_nanos"] for r in json.loads(done.stdout)} == {
        "globex": 20_000_000,
        "acme": 15_345_686,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "budgetguard.cli",
            "status",
            "--scope",
            "tenant",
            "--config",
            str(world.config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "acme" in done.stdout and "$0.015345686" in done.stdout
    done = subprocess.run(
        [*argv, "reset", "--scope", "user", "--config", str(world.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2 and "pass --yes" in done.stderr


def test_counter_keys_round_trip() -> None:
    assert parse_counter_key("tenant=acme/user=u%2F1:day") == ("user", "u/1", "acme", "day")
    assert parse_counter_key("feature=summarize:week") == ("feature", "summarize", None, "week")
    assert parse_counter_key("tenant=a%3Ab:month") == ("tenant", "a:b", "a:b", "month")
    assert parse_counter_key("garbage") is None
    assert counter_pattern("bg", "user", key="u 1") == "bg:{*}:c:*user=u%201:*:*"
    assert counter_pattern("b*g", "feature", window="day") == "b\\*g:{global}:c:feature=*:day:*"


# -- issue 11: hostile ids, secrets, bad options, read commands that create ---------------


def test_control_characters_in_ids_cannot_forge_table_rows(world: World) -> None:
    forged = "evil\n\x1b[31macme  $0.00\x07"
    call(1_000, tenant=forged, user="u-9", feature="chat")
    assert world.ledger.flush(10)
    code, out, _ = world.run("report", "--by", "tenant")
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\n\\x1b[31macme  $0.00\\x07" in out
    assert all(not line.startswith("\x1b") for line in out.splitlines())
    code, out, _ = world.run("status", "--scope", "tenant", "--key", forged)
    assert code == 0 and "\x1b" not in out and "evil\\n" in out
    code, out, _ = world.run("report", "--by", "tenant", "--json")
    assert forged in {row["key"] for row in json.loads(out)}  # machine output stays exact


def test_limits_never_prints_a_secret_of_the_store_url(tmp_path: Path) -> None:
    url = "redis://admin:hunter2@127.0.0.1:6379/0?password=hunter3&socket_timeout=2"
    code, out, _ = run_main("limits", "--store", url)
    assert code == 0
    assert "hunter" not in out
    assert "redis://admin:***@127.0.0.1:6379/0?password=***&socket_timeout=2" in out


def test_an_absurd_since_is_an_option_error(tmp_path: Path) -> None:
    db = tmp_path / "l.db"
    sqlite3.connect(db).close()
    code, _, err = run_main("report", "--ledger", str(db), "--since", "99999999d")
    assert code == 2 and "--since: '99999999d' reaches before the year 1" in err


def test_read_commands_never_create_a_database(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong" / "path.db"
    code, _, err = run_main("report", "--ledger", f"sqlite:///{wrong}")
    assert code == 2 and "no SQLite database" in err
    assert not wrong.exists() and not wrong.parent.exists()
