"""Hold tightness: how much of a budget contended callers get, how close holds are to
bills, how fast a waiter wakes, how long an estimate stalls an event loop.

    python bench/bench_holds.py [--quick] [--url redis://127.0.0.1:6379/13]

The database named by ``--url`` is FLUSHED: give the bench one of its own.

1. Contention (the issue's case): 16 threads share a $0.05 budget; each makes
   25 gpt-4o calls (a short prompt, ``max_tokens=400``) through ``bg.admit``;
   the "LLM" takes 1-20 ms and replies with N output tokens (at most the cap it was
   sent with), then the call settles at its real cost; a refused call is
   counted and the thread goes on to its next call (400 attempts in all).
   Policy ``raise``, with and without the contention wait, and with
   ``fit_output``; on the embedded store and on Redis. Measured: the share of
   the limit spent, overshoot (spend past the limit), refusals.
2. Hold / bill: ``bg.estimate`` of 4 prompt shapes x 10 models, with
   ``Policy(max_output_tokens=1000)`` and with an exact cap of 300, against the
   cost of the same prompt with a 300-token reply (``--shapes`` for the table).
   The bill's input tokens are the provider's own count where we can compute it
   offline (OpenAI: tiktoken plus the documented per-message tokens), else the
   calibrated expectation of ``pricing/calibration.py`` (Claude, Gemini; see
   docs/pricing.md for its evidence); image tokens by each provider's formula.
3. Wake-up: a call waiting on a contended budget, woken by another call's
   settle; the delay from the settle's return to the waiter's admission, median
   and p90 over many rounds, on the embedded store and on Redis (pub/sub).
4. Event-loop stall: the largest gap of a 1 ms ticker task while ``aadmit``
   estimates a 100k-token prompt, against the same estimate run on the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import header, table

import budgetguard as bg
from budgetguard.stores import MemoryStore, RedisStore

PROMPT = [{"role": "user", "content": "Summarise our refund policy for a customer in two lines."}]
LIMIT = Decimal("0.05")


# -- 1. contention ------------------------------------------------------------------------
def contention(store: Any, reply_tokens: int, **policy: Any) -> tuple[Decimal, int, int]:
    """(share of the limit spent, calls made, calls refused) for 16 threads."""
    bg.configure(
        store=store,
        policy=bg.Policy(limits=[bg.Limit(scope="global", usd=LIMIT, window="total")], **policy),
    )
    request = bg.LLMRequest("gpt-4o", PROMPT, max_tokens=400)
    made = refused = 0
    lock = threading.Lock()
    start = threading.Barrier(16)

    def caller() -> None:
        nonlocal made, refused
        start.wait()
        for _ in range(25):  # 400 attempts in all; a refused attempt goes on to the next
            try:
                admission = bg.admit(request)
            except bg.BudgetExceeded:
                with lock:
                    refused += 1
                continue
            time.sleep(random.uniform(0.001, 0.02))  # the LLM call
            cap = admission.output_cap or 400
            admission.settle(bg.Usage(input_tokens=20, output_tokens=min(reply_tokens, cap)))
            with lock:
                made += 1

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = bg.status("global")
    assert status.held == 0, status
    return status.spent / LIMIT, made, refused


def burst(store: Any, callers: int, **policy: Any) -> tuple[int, Decimal]:
    """``callers`` requests at once, one 50-token-reply call each, on a $0.05 budget that
    all of them fit at their real cost (not at their holds): (refused, spent)."""
    bg.configure(
        store=store,
        policy=bg.Policy(limits=[bg.Limit(scope="global", usd=LIMIT, window="total")], **policy),
    )
    request = bg.LLMRequest("gpt-4o", PROMPT, max_tokens=400)
    refused = 0
    lock = threading.Lock()
    start = threading.Barrier(callers)

    def request_handler() -> None:
        nonlocal refused
        start.wait()
        try:
            admission = bg.admit(request)
        except bg.BudgetExceeded:
            with lock:
                refused += 1
            return
        time.sleep(random.uniform(0.2, 0.5))  # a real LLM call
        admission.settle(bg.Usage(input_tokens=20, output_tokens=50))

    threads = [threading.Thread(target=request_handler) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return refused, bg.status("global").spent


def burst_table(redis_url: str | None) -> str:
    stores: list[tuple[str, Callable[[], Any]]] = [("embedded", MemoryStore)]
    if redis_url:
        stores.append(("Redis", lambda: RedisStore(redis_url, prefix="bench-burst")))
    rows = []
    for callers in (16, 20):
        for store_name, make in stores:
            for label, policy in (("before: no wait", {"contention_wait_s": 0}), ("now", {})):
                store = make()
                if isinstance(store, RedisStore):
                    store.client.flushdb()
                refused, spent = burst(store, callers, **policy)
                rows.append(
                    (
                        f"{store_name}, {callers} at once, {label}",
                        f"{callers - refused} / {callers}",
                        refused,
                        f"${spent}",
                    )
                )
                if isinstance(store, RedisStore):
                    store.close()
    return table(("case", "admitted", "refused", "spent of $0.05"), rows)


def contention_table(redis_url: str | None) -> str:
    stores: list[tuple[str, Callable[[], Any]]] = [("embedded", MemoryStore)]
    if redis_url:
        stores.append(("Redis", lambda: RedisStore(redis_url, prefix="bench-holds")))
    variants = [
        ("raise, contention_wait_s=0", {"contention_wait_s": 0}),
        ("raise, contention wait (default)", {}),
        ("raise, contention wait + fit_output", {"fit_output": True, "min_output_tokens": 50}),
    ]
    rows = []
    for reply in (300, 150, 50):
        for store_name, make in stores:
            for label, policy in variants:
                store = make()
                if isinstance(store, RedisStore):
                    store.client.flushdb()
                share, made, refused = contention(store, reply, **policy)
                rows.append(
                    (
                        f"{store_name}, {reply}-token replies, {label}",
                        f"{share:.1%}",
                        f"{max(Decimal(0), share - 1):.1%}",
                        made,
                        refused,
                    )
                )
                if isinstance(store, RedisStore):
                    store.close()
    return table(("case", "limit used", "overshoot", "calls", "refused"), rows)


# -- 2. hold / bill -------------------------------------------------------------------------
HOLD_MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-5",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    "claude-opus-4-7",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
)
REPLY = 300


def hold_ratios(model: str) -> dict[str, list[float]]:
    """hold / bill per shape: with no cap (the model's maximum), with
    ``max_output_tokens=1000``, with an exact cap of 300."""
    from bench_estimate import SHAPES, expected, openai_real

    rates = bg.current().prices.rates(model)
    ratios: dict[str, list[float]] = {"none": [], "policy": [], "exact": []}
    for system, messages, tools in SHAPES.values():
        if model.startswith("gpt"):
            chat = ([{"role": "system", "content": system}] if system else []) + messages
            real = openai_real(model, system, messages, tools)
            request = bg.LLMRequest(model, chat, tools=tools)
        else:
            real = expected(model, system, messages, tools)
            request = bg.LLMRequest(model, messages, system=system, tools=tools)
        bill = rates.cost(bg.Usage(input_tokens=real, output_tokens=REPLY))
        for label, policy, cap in (
            ("none", bg.Policy(), None),
            ("policy", bg.Policy(max_output_tokens=1_000), None),
            ("exact", bg.Policy(), REPLY),
        ):
            bg.configure(policy=policy)
            capped = (
                request if cap is None else bg.LLMRequest(**{**vars_of(request), "max_tokens": cap})
            )
            ratios[label].append(bg.estimate(capped).nanos / bill)
    return ratios


def vars_of(request: bg.LLMRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in request.__dataclass_fields__}


def hold_table() -> str:
    rows = []
    medians: dict[str, list[float]] = {"none": [], "policy": [], "exact": []}
    for model in HOLD_MODELS:
        ratios = hold_ratios(model)
        row: list[object] = [model]
        for label in ("none", "policy", "exact"):
            median = statistics.median(ratios[label])
            medians[label].extend(ratios[label])
            row.append(f"{median:.2f}x (max {max(ratios[label]):.2f}x)")
        rows.append(row)
    rows.append(
        [
            "**all 40**",
            *(f"**{statistics.median(medians[k]):.2f}x**" for k in ("none", "policy", "exact")),
        ]
    )
    estimated = len([m for m in HOLD_MODELS if not m.startswith("gpt")]) * 4
    rows.append(
        [
            f"**Claude and Gemini ({estimated})**",
            *(
                f"**{statistics.median(medians[k][-estimated:]):.2f}x**"
                for k in ("none", "policy", "exact")
            ),
        ]
    )
    return table(
        (
            "model (4 shapes: short chat, 2k RAG, 50-message agent + 5 tools, one image)",
            "no cap: hold / bill, median",
            "max_output_tokens=1000",
            "exact cap (300)",
        ),
        rows,
    )


# -- 3. wake-up ----------------------------------------------------------------------------
def _waiter(ready: threading.Event, admitted: list[float]) -> None:
    ready.set()
    second = bg.admit_cost(20)  # fits once the first call settles for less
    admitted.append(time.perf_counter())
    second.settle_nanos(0)


def wake_delays(store: Any, rounds: int) -> list[float]:
    bg.configure(
        store=store,
        policy=bg.Policy(limits=[bg.Limit(scope="global", usd=1_000_000, window="total")]),
    )
    delays = []
    for n in range(rounds):
        bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="global", usd=n + 1, window="total")]))
        spent = bg.status("global").spent
        room = bg.Money.usd(Decimal(n + 1) - spent).nanos
        first = bg.admit_cost(room - 10)
        ready = threading.Event()
        admitted: list[float] = []
        thread = threading.Thread(target=_waiter, args=(ready, admitted))
        thread.start()
        ready.wait()
        time.sleep(0.02)  # let it reach its wait
        first.settle_nanos(1)
        settled = time.perf_counter()
        thread.join()
        delays.append(admitted[0] - settled)
    return delays


def wake_table(redis_url: str | None, rounds: int) -> str:
    rows = []
    stores: list[tuple[str, Callable[[], Any]]] = [("embedded", MemoryStore)]
    if redis_url:
        stores.append(("Redis (pub/sub)", lambda: RedisStore(redis_url, prefix="bench-wake")))
    for name, make in stores:
        store = make()
        if isinstance(store, RedisStore):
            store.client.flushdb()
        delays = sorted(wake_delays(store, rounds))
        rows.append(
            (
                name,
                rounds,
                f"{statistics.median(delays) * 1000:.2f}",
                f"{delays[int(len(delays) * 0.9)] * 1000:.2f}",
                f"{delays[-1] * 1000:.2f}",
            )
        )
        if isinstance(store, RedisStore):
            store.close()
    return table(("store", "rounds", "median ms", "p90 ms", "max ms"), rows)


# -- 4. event-loop stall ------------------------------------------------------------------
async def largest_gap(work: Callable[[], Any]) -> tuple[float, float]:
    """(largest gap between 1 ms ticks, ms; how long ``work`` took, ms)."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    gaps.clear()
    started = time.perf_counter()
    result = work()
    if asyncio.iscoroutine(result):
        await result
    took = time.perf_counter() - started
    await asyncio.sleep(0.005)
    stop.set()
    await task
    return max(gaps) * 1000, took * 1000


def stall_table(rounds: int) -> str:
    bg.configure(
        store=MemoryStore(),
        policy=bg.Policy(limits=[bg.Limit(scope="global", usd=1_000, window="total")]),
    )
    rows = []
    for n in range(rounds):
        # A fresh text each round: nothing memoised helps the first count.
        clause = "of the contract applies to the parties"
        text = " ".join(f"clause {n}-{i} {clause}" for i in range(11_000))
        request = bg.LLMRequest("gpt-4o", [{"role": "user", "content": text}], max_tokens=100)
        on_loop = asyncio.run(largest_gap(lambda r=request: bg.estimate(r)))
        text2 = text.replace("contract", "agreement")
        request2 = bg.LLMRequest("gpt-4o", [{"role": "user", "content": text2}], max_tokens=100)
        off_loop = asyncio.run(largest_gap(lambda r=request2: bg.aadmit(r)))
        tokens = bg.estimate(request).input_tokens
        rows.append(
            (
                f"round {n + 1}, {tokens:,}-token prompt",
                f"{on_loop[0]:.1f} ({on_loop[1]:.0f} ms)",
                f"{off_loop[0]:.1f} ({off_loop[1]:.0f} ms)",
            )
        )
    return table(
        (
            "prompt",
            "estimate on the loop: largest tick gap ms (work ms)",
            "`await bg.aadmit`: largest tick gap ms (work ms)",
        ),
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/13", help="'' to skip Redis")
    parser.add_argument("--only", choices=("contention", "holds", "wake", "stall"), default=None)
    args = parser.parse_args()
    url = args.url or None
    if url:
        try:
            RedisStore(url).client.ping()
        except Exception as error:
            print(f"no Redis at {url} ({error}); Redis rows skipped", file=sys.stderr)
            url = None
    sections = [header("Hold tightness", ["budgetguard " + bg.__version__]), ""]
    if args.only in (None, "contention"):
        sections += ["### 1. Contention: 16 threads, $0.05, gpt-4o, max_tokens=400", ""]
        sections.append(contention_table(url))
    if args.only in (None, "contention"):
        sections += ["", "### 1b. A burst: every call fits at its real cost, not at its hold", ""]
        sections.append(burst_table(url))
    if args.only in (None, "holds"):
        sections += ["", f"### 2. Hold / bill with a {REPLY}-token reply", ""]
        sections.append(hold_table())
    if args.only in (None, "wake"):
        sections += ["", "### 3. Wake-up delay: settle -> waiting call admitted", ""]
        sections.append(wake_table(url, 20 if args.quick else 100))
    if args.only in (None, "stall"):
        sections += ["", "### 4. Event-loop stall while estimating a ~100k-token prompt", ""]
        sections.append(stall_table(2 if args.quick else 5))
    print("\n".join(sections))


if __name__ == "__main__":
    main()
