"""Pricing with live prices on vs off: the hot path must not slow down (target <= 1.05x).

    .venv/bin/python bench/bench_live_prices.py [--quick] [--json]

The timed operation is what the engine does per call: ``PriceBook.rates(model)``
(a cache hit once resolved) then ``ModelRates.cost(usage)``, over three models.
"off": the wheel's genai-prices snapshot, no updater. "on": ``configure(
prices_refresh="1h", prices_url=...)`` with genai-prices' updater running and
a fetched snapshot (served from 127.0.0.1, the tests' modified data) in use.
Rounds alternate off/on (order shuffled per round); each round switches mode,
forces a fresh fetch for "on" (so every "on" round starts on a just-installed
snapshot and an emptied rate cache), warms up, then times. Times are medians
over rounds, the ratio the median of per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _report import header, machine, table
from test_live_prices import PriceServer

import budgetguard as bg
from budgetguard._core.usage import Usage
from budgetguard._engine import config
from budgetguard.pricing import live

MODELS = ("gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro")
USAGE = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=400)


def _op() -> None:
    book = config.current().prices
    for model in MODELS:
        book.rates(model).cost(USAGE)


def _mode(on: bool, server: PriceServer) -> None:
    if on:
        if config.current().prices_refresh is None:
            before = live.attempts()
            bg.configure(prices_refresh="1h", prices_url=server.url)
            assert live.wait_for_fetch(*before, timeout=30)
        else:
            assert live.refresh_prices(timeout=30)
        assert live.price_status().source == "fetched"
    else:
        bg.configure(prices_refresh=None)
        live._reset_for_tests()
        assert live.price_status().source == "snapshot"


def run(rounds: int, number: int) -> dict[str, float]:
    server = PriceServer()
    times: dict[bool, list[float]] = {False: [], True: []}
    ratios: list[float] = []
    for _ in range(rounds):
        got: dict[bool, float] = {}
        for on in random.sample([False, True], 2):
            _mode(on, server)
            for _ in range(200):
                _op()
            got[on] = timeit.timeit(_op, number=number) / number / len(MODELS) * 1e9
            times[on].append(got[on])
        ratios.append(got[True] / got[False])
    bg.configure(prices_refresh=None)
    live._reset_for_tests()
    server.httpd.shutdown()
    server.httpd.server_close()
    return {
        "off_ns": statistics.median(times[False]),
        "on_ns": statistics.median(times[True]),
        "ratio": statistics.median(ratios),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(5 if args.quick else 15, 5_000 if args.quick else 20_000)
    if args.json:
        print(json.dumps({"machine": machine(), **result}, indent=2))
        return
    print(header("Pricing with live prices on vs off", [f"{result['rounds']} rounds"]))
    print()
    print(
        table(
            ["pricing (rates + cost, per call)", "off", "on", "on / off"],
            [
                [
                    "PriceBook.rates(model).cost(usage)",
                    f"{result['off_ns']:.0f} ns",
                    f"{result['on_ns']:.0f} ns",
                    f"{result['ratio']:.3f}x",
                ]
            ],
        )
    )
    print("\ntarget: on / off <= 1.05x")


if __name__ == "__main__":
    main()
