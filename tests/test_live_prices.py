"""Live prices: genai-prices' updater fetching from a local server, followed by the engine.

The server on 127.0.0.1 serves the installed snapshot's data as JSON with
gpt-4o's prices doubled and a new model added, or a 500, or garbage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import redirect_stderr
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import budgetguard as bg
from budgetguard import LLMRequest, Usage
from budgetguard._engine.flow import aadmit, admit
from budgetguard.cli import main
from budgetguard.pricing import live

NEW_MODEL = "gpt-9-budgetguard-live"
MESSAGES = [{"role": "user", "content": "hello there"}]
USAGE = Usage(input_tokens=1000, output_tokens=100)
OLD_GPT4O = Decimal("0.0035")  # 1000 x $2.5/MTok + 100 x $10/MTok
NEW_GPT4O = Decimal("0.007")


def _raw(value: Any) -> Any:
    """genai-prices' objects back to its raw JSON data format."""
    from genai_prices.types import ModelPrice

    if isinstance(value, ModelPrice):
        return {k: _raw(v) for k, v in vars(value).items() if k[:1] != "_" and v is not None}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name.rstrip("_"): _raw(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name[:1] != "_" and getattr(value, f.name) is not None
        }
    if isinstance(value, list | tuple):
        return [_raw(v) for v in value]
    if isinstance(value, dict):
        return {k: _raw(v) for k, v in value.items()}
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, re.Pattern):
        return value.pattern
    return value


def _double(prices: dict[str, Any]) -> None:
    for key in ("input_mtok", "output_mtok"):
        prices[key] = str(Decimal(prices[key]) * 2)


def modified_data() -> bytes:
    from genai_prices.data import providers

    data = _raw(providers)
    openai = next(p for p in data if p["id"] == "openai")
    gpt4o = next(m for m in openai["models"] if m["id"] == "gpt-4o")
    assert isinstance(gpt4o["prices"], dict)
    _double(gpt4o["prices"])
    openai["models"].append(
        {
            "id": NEW_MODEL,
            "match": {"equals": NEW_MODEL},
            "context_window": 100000,
            "prices": {"input_mtok": "1", "output_mtok": "4"},
        }
    )
    return json.dumps(data).encode()


class PriceServer:
    def __init__(self) -> None:
        self.mode = "good"
        self.hits = 0
        self.body = modified_data()
        zeroed = json.loads(self.body)  # gpt-4o listed with no price: would be $0
        openai = next(p for p in zeroed if p["id"] == "openai")
        next(m for m in openai["models"] if m["id"] == "gpt-4o")["prices"] = {}
        self.zeroed = json.dumps(zeroed).encode()
        self.halves = {}  # found by review: a price dropped or set to 0 was accepted
        for name, change in (
            ("no_output", lambda prices: prices.pop("output_mtok")),
            ("zero_prices", lambda prices: prices.update(input_mtok="0", output_mtok="0")),
        ):
            data = json.loads(self.body)
            openai = next(p for p in data if p["id"] == "openai")
            change(next(m for m in openai["models"] if m["id"] == "gpt-4o")["prices"])
            self.halves[name] = json.dumps(data).encode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                if server.mode == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                body = {
                    "good": server.body,
                    "garbage": b"<html>not json",
                    "empty": b"[]",
                    "zeroed": server.zeroed,
                    **server.halves,
                }[server.mode]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server() -> Iterator[PriceServer]:
    price_server = PriceServer()
    yield price_server
    price_server.httpd.shutdown()
    price_server.httpd.server_close()


@pytest.fixture(autouse=True)
def _wheel_prices(server: PriceServer) -> Iterator[None]:
    server.mode = "good"
    live._reset_for_tests()
    yield
    bg.configure(prices_refresh=None)
    live._reset_for_tests()


def go_live(server: PriceServer, **kwargs: Any) -> None:
    before = live.attempts()
    bg.configure(prices_refresh="1h", prices_url=server.url, **kwargs)
    assert live.wait_for_fetch(*before, timeout=30)


def cost_of(model: str) -> Decimal:
    admission = admit(LLMRequest(model=model, messages=MESSAGES, max_tokens=100))
    return admission.settle(USAGE)


async def acost_of(model: str) -> Decimal:
    admission = await aadmit(LLMRequest(model=model, messages=MESSAGES, max_tokens=100))
    return await admission.asettle(USAGE)


def test_the_next_call_is_priced_at_fetched_prices(server: PriceServer) -> None:
    assert cost_of("gpt-4o") == OLD_GPT4O  # cached at the wheel's price
    with pytest.raises(bg.UnknownModel):
        cost_of(NEW_MODEL)
    go_live(server)
    assert cost_of("gpt-4o") == NEW_GPT4O
    assert cost_of(NEW_MODEL) == Decimal("0.0014")  # 1000 x $1 + 100 x $4 per MTok
    status = live.price_status()
    assert status.source == "fetched" and status.url == server.url
    assert status.refresh == 3600 and status.fetched_at is not None


def test_async_calls_follow_too(server: PriceServer) -> None:
    assert asyncio.run(acost_of("gpt-4o")) == OLD_GPT4O
    go_live(server)
    assert asyncio.run(acost_of("gpt-4o")) == NEW_GPT4O
    assert asyncio.run(acost_of(NEW_MODEL)) == Decimal("0.0014")


@pytest.mark.parametrize("mode", ["500", "garbage", "empty", "zeroed", "no_output", "zero_prices"])
def test_a_failed_fetch_keeps_the_last_good_prices(
    server: PriceServer, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    go_live(server)
    server.mode = mode
    with caplog.at_level(logging.WARNING, logger="budgetguard"):
        assert not live.refresh_prices(timeout=30)
        assert not live.refresh_prices(timeout=30)
    ours = [r for r in caplog.records if r.name == "budgetguard" and "failed" in r.message]
    assert len(ours) == 1  # logged once per run of failures
    assert cost_of("gpt-4o") == NEW_GPT4O
    assert cost_of(NEW_MODEL) == Decimal("0.0014")
    assert live.price_status().last_error is not None
    server.mode = "good"
    assert live.refresh_prices(timeout=30)
    assert live.price_status().last_error is None


def test_a_first_fetch_failing_keeps_the_wheel_prices(server: PriceServer) -> None:
    server.mode = "500"
    before = live.attempts()
    bg.configure(prices_refresh="1h", prices_url=server.url)
    assert not live.wait_for_fetch(*before, timeout=30)
    assert cost_of("gpt-4o") == OLD_GPT4O  # never $0
    assert live.price_status().source == "snapshot"


def test_overrides_win_over_fetched_prices(server: PriceServer) -> None:
    go_live(server, prices={"gpt-4o": {"input": "1", "output": "1"}})
    assert cost_of("gpt-4o") == Decimal("0.0011")
    assert live.refresh_prices(timeout=30)
    assert cost_of("gpt-4o") == Decimal("0.0011")


def test_a_call_reserved_before_an_update_settles_at_its_estimate_prices(
    server: PriceServer,
) -> None:
    admission = admit(LLMRequest(model="gpt-4o", messages=MESSAGES, max_tokens=100))
    go_live(server)
    assert admission.settle(USAGE) == OLD_GPT4O  # one price version per call
    assert cost_of("gpt-4o") == NEW_GPT4O


def test_stopping_keeps_the_prices_fetched(server: PriceServer) -> None:
    go_live(server)
    bg.configure(prices_refresh=None)
    assert live.price_status().refresh is None
    assert cost_of("gpt-4o") == NEW_GPT4O
    with pytest.raises(bg.ConfigurationError):
        live.refresh_prices()


@pytest.mark.parametrize("value", ["soon", "0s", -5, True, "0.5"])
def test_bad_refresh_values_are_refused(value: object) -> None:
    with pytest.raises(bg.ConfigurationError, match="prices_refresh"):
        bg.configure(prices_refresh=value)  # type: ignore[arg-type]


def test_refresh_values() -> None:
    assert live.parse_refresh("1h") == 3600
    assert live.parse_refresh("30m") == 1800
    assert live.parse_refresh("90s") == live.parse_refresh(90) == 90
    assert live.parse_refresh("1d") == 86400
    assert live.parse_refresh(None) is None


# -- the CLI --------------------------------------------------------------------------


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stderr(err):
        code = main([*argv, "--store", "memory://"], out=out)
    return code, out.getvalue(), err.getvalue()


def test_cli_table_and_json(server: PriceServer) -> None:
    code, out, _ = run("prices", "gpt-4o", "claude-sonnet-4-5")
    assert code == 0
    assert "gpt-4o" in out and "2.5" in out and "snapshot of" in out
    assert ">200000" in out  # Sonnet's long-context tier
    go_live(server)
    code, out, _ = run("prices", "gpt-4o", NEW_MODEL, "--json")
    assert code == 0
    rows = {row["model"]: row for row in json.loads(out)}
    assert rows["gpt-4o"]["input"] == "5" and rows["gpt-4o"]["output"] == "20"
    assert rows["gpt-4o"]["cached_input"] == "1.25"
    assert rows[NEW_MODEL]["source"].startswith("fetched at ")


def test_cli_shows_overrides_and_provider_filter() -> None:
    bg.configure(prices={"my-model": {"input": "0.5", "output": "1.5"}})
    code, out, _ = run("prices", "my-model", "--json")
    assert code == 0 and json.loads(out)[0]["source"] == "override"
    code, out, _ = run("prices", "--provider", "anthropic", "--json")
    rows = json.loads(out)
    assert code == 0 and rows and all(row["provider"] == "anthropic" for row in rows[1:])


def test_cli_unknown_model_exits_2_naming_it() -> None:
    code, _, err = run("prices", "gpt-4o", "no-such-model-xyz")
    assert code == 2 and "no-such-model-xyz" in err


def test_cli_warns_when_data_is_old(monkeypatch: pytest.MonkeyPatch) -> None:
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    monkeypatch.setattr(live, "_snapshot_date", lambda: old)
    code, _, err = run("prices", "gpt-4o")
    assert code == 0 and "2020-01-01" in err and "days old" in err
    monkeypatch.setattr(live, "_snapshot_date", lambda: dt.datetime.now(dt.UTC))
    code, _, err = run("prices", "gpt-4o")
    assert code == 0 and "days old" not in err


def test_cli_diff(server: PriceServer) -> None:
    code, out, _ = run("prices", "--diff", "--url", server.url, "--json")
    assert code == 0
    rows = json.loads(out)
    changed = {(r["model"], r["field"]): r for r in rows if r["change"] == "changed"}
    assert changed["gpt-4o", "input_mtok"]["old"] == "2.5"
    assert changed["gpt-4o", "input_mtok"]["new"] == "5.0"
    assert {r["model"] for r in rows if r["change"] == "added"} == {NEW_MODEL}
    assert len(rows) == 3
    code, out, _ = run("prices", "--diff", "--url", server.url, "claude-sonnet-4-5")
    assert code == 0 and "no price changes" in out
    server.mode = "garbage"
    code, _, err = run("prices", "--diff", "--url", server.url)
    assert code == 1 and "cannot fetch prices" in err


def test_cli_shows_live_prices_an_app_turns_on(
    server: PriceServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "live_prices_app.py").write_text(
        "import budgetguard as bg\n\n\ndef setup():\n"
        f"    bg.configure(prices_refresh='1h', prices_url={server.url!r})\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run("prices", "gpt-4o", "--app", "live_prices_app:setup", "--json")
    assert code == 0, err
    row = json.loads(out)[0]
    assert row["input"] == "5" and row["source"].startswith("fetched at ")


def test_cli_shows_live_prices_the_config_file_turns_on(server: PriceServer, tmp_path: Any) -> None:
    """``prices_refresh`` / ``prices_url`` in budgetguard.toml: ``prices`` shows the
    rates a process configured from that file would use (fetched from the mirror)."""
    config = tmp_path / "budgetguard.toml"
    config.write_text(f'prices_refresh = "1h"\nprices_url = "{server.url}"\n')
    code, out, err = run("prices", "gpt-4o", "--config", str(config), "--json")
    assert code == 0, err
    row = json.loads(out)[0]
    assert row["input"] == "5" and row["source"].startswith("fetched at ")
    config.write_text("prices_refresh = true\n")
    code, _, err = run("prices", "--config", str(config))
    assert code == 2 and "prices_refresh" in err
