"""``bg.trial`` overhead per call, against calling the fake provider directly.

    .venv/bin/python bench/bench_trial.py [--calls N] [--rounds R] [--json]

Both sides make the same OpenAI chat-completions calls, one at a time, to the
local fake provider: "direct" with a plain ``openai.OpenAI`` client, "trial" with
``trial(["gpt-4o"], cases, concurrency=1)`` (instrumented client, estimate,
hold and settle under the trial's ``spend_limit``, the check, the bookkeeping).
The figure is the median over rounds of (trial time - direct time) / calls;
rounds alternate which side runs first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault(
    "TIKTOKEN_CACHE_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "tiktoken")
)

import openai

from budgetguard.testing import FakeProvider
from budgetguard.trial import trial


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="50 calls x 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.rounds = 50, 3
    cases = [{"prompt": f"question {n}?", "expected": "Hello"} for n in range(args.calls)]
    with FakeProvider() as fake:
        os.environ.update(OPENAI_BASE_URL=fake.openai_base_url, OPENAI_API_KEY="bench")
        plain = openai.OpenAI()

        def direct() -> float:
            start = time.perf_counter()
            for case in cases:
                plain.chat.completions.create(
                    model="gpt-4o",
                    messages=[{"role": "user", "content": case["prompt"]}],
                    max_completion_tokens=1024,
                )
            return time.perf_counter() - start

        def trialled() -> float:
            start = time.perf_counter()
            result = trial(["gpt-4o"], cases, concurrency=1, progress=False)
            assert result.made == args.calls
            return time.perf_counter() - start

        direct(), trialled()  # warm up: connections, tokenizer, price cache
        overheads, directs = [], []
        for n in range(args.rounds):
            if n % 2:
                t, d = trialled(), direct()
            else:
                d, t = direct(), trialled()
            overheads.append((t - d) / args.calls)
            directs.append(d / args.calls)
    figures = {
        "calls": args.calls,
        "rounds": args.rounds,
        "direct_us_per_call": round(statistics.median(directs) * 1e6, 1),
        "trial_overhead_us_per_call": round(statistics.median(overheads) * 1e6, 1),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"direct call to the fake: {figures['direct_us_per_call']} us; "
            f"trial overhead: {figures['trial_overhead_us_per_call']} us per call "
            f"(median of {args.rounds} rounds of {args.calls} calls)"
        )


if __name__ == "__main__":
    main()
