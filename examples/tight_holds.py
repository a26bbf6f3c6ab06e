"""Tight holds: an output cap the provider enforces, a call fitted to what is left, a
burst that waits for calls in flight instead of failing, and ``bg.estimate``.

Runs offline: it starts budgetguard's fake provider on 127.0.0.1 and points a real
``openai.OpenAI`` client at it. Run with ``python examples/tight_holds.py``.
"""

from __future__ import annotations

import threading
import time

import openai

import budgetguard as bg
from budgetguard.testing import FakeProvider

MESSAGES = [{"role": "user", "content": "Draft a reply to this support ticket."}]


def main() -> None:
    with FakeProvider() as fake:
        client = bg.instrument(
            openai.OpenAI(base_url=fake.openai_base_url, api_key="not-needed", max_retries=0)
        )

        # 1. No max_tokens in the call: held (and sent) at the policy's cap, not at
        #    gpt-4o's 16,384-token maximum.
        day = bg.Limit(scope="user", usd="0.05", window="day")
        bg.configure(policy=bg.Policy(limits=[day], max_output_tokens=500))
        print(f"at most ${bg.estimate(bg.LLMRequest('gpt-4o', MESSAGES)).usd} per call")
        with bg.spend_limit(user="u-1"):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        print(f"sent with max_tokens={fake.requests[-1].body['max_tokens']}")

        # 2. Not enough left for 8,000 output tokens ($0.08): sent with the cap that fits.
        bg.configure(
            policy=bg.Policy(limits=[day], fit_output=True, min_output_tokens=200),
            listeners=[lambda r: print(f"  {r.outcome}: output cap {r.output_cap}")],
        )
        with bg.spend_limit(user="u-1"):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=8_000)

        # 3. Twenty requests at once whose holds ($0.004 each) do not all fit in $0.05,
        #    but whose bills do: the ones that do not fit yet wait for others to settle
        #    (contention_wait_s, 10 s by default; 0 refuses them at once, as before).
        for wait, user in ((0.0, "u-2"), (10.0, "u-3")):
            bg.configure(policy=bg.Policy(limits=[day], contention_wait_s=wait), listeners=[])
            answered, took = burst(client, fake, user)
            spent = bg.status("user", user, tenant=None).spent
            print(
                f"20 at once, contention_wait_s={wait}: {answered} answered in {took:.1f} s, "
                f"${spent} spent"
            )


def burst(client: openai.OpenAI, fake: FakeProvider, user: str) -> tuple[int, float]:
    for _ in range(20):
        fake.reply(delay_s=0.2)  # the LLM takes a moment
    answered: list[bool] = []

    def request() -> None:
        try:
            with bg.spend_limit(user=user):
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=400)
            answered.append(True)
        except bg.BudgetExceeded:
            pass

    started = time.monotonic()
    threads = [threading.Thread(target=request) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    fake.clear()
    return len(answered), time.monotonic() - started


if __name__ == "__main__":
    main()
