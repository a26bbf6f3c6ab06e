"""Limits as data: plans per tenant, a requests limit set at run time, a soft token limit.

Runs offline: budgetguard's fake provider on 127.0.0.1 answers a real
``openai.OpenAI`` client. The limits live in the store - here the in-process
``MemoryStore``; with ``store="redis://..."`` every process of the fleet applies
them within a second. Run with ``python examples/limits_as_data.py``.
"""

from __future__ import annotations

from dataclasses import replace

import openai

import budgetguard as bg
from budgetguard.testing import FakeProvider

MESSAGES = [{"role": "user", "content": "Summarise our refund policy."}]


def ask(client: openai.OpenAI, **who: str) -> str:
    try:
        with bg.spend_limit(**who):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=200)
        return "answered"
    except bg.BudgetExceeded as error:
        return f"refused ({error.scope} {error.key!r}: {error.limit} {error.unit})"


def main() -> None:
    records: list[bg.CallRecord] = []
    bg.configure(
        policy=bg.Policy(
            limits=[bg.Limit(scope="tenant", requests=2, window="day")],  # the default
            plans={
                "free": [bg.Limit(scope="user", requests=1, window="day")],
                "pro": [
                    bg.Limit(scope="tenant", requests=1_000, window="day"),  # replaces the 2
                    bg.Limit(scope="tenant", usd=500, window="month"),
                ],
            },
        ),
        listeners=[records.append],
    )
    with FakeProvider() as fake:
        fake.default = replace(fake.default, input_tokens=40, output_tokens=60)  # each call
        client = bg.instrument(
            openai.OpenAI(base_url=fake.openai_base_url, api_key="not-needed", max_retries=0)
        )

        # Plans: acme pays, so its plan's 1,000 calls a day replace the code's 2 (a plan
        # or stored limit replaces the code's of the same scope, window and unit).
        bg.set_plan(tenant="acme", plan="pro")
        bg.set_plan(tenant="tiny", plan="free")
        acme = [ask(client, tenant="acme", user="u-1") for _ in range(3)]
        tiny = [ask(client, tenant="tiny", user="u-9") for _ in range(2)]
        print(f"acme (pro): {acme}")
        print(f"tiny (free): {tiny}")

        # A requests limit set at run time, with no deploy: 2 calls of "chat" a day.
        bg.set_limit(bg.Limit(scope="feature", key="chat", requests=2, window="day"))
        chat = [ask(client, tenant="acme", user="u-2", feature="chat") for _ in range(3)]
        print(f"chat: {chat}")
        print(f"chat status: {bg.status('feature', 'chat', unit='requests').spent} requests")

        # A soft token limit: shadow-run it; calls go on and are recorded.
        bg.set_limit(bg.Limit(scope="user", tokens=150, window="day", enforce="warn"))
        soft = [ask(client, tenant="acme", user="u-3") for _ in range(2)]
        print(f"soft: {soft}; outcomes {[r.outcome for r in records[-2:]]}")
        print(f"note: {records[-1].error}")
        used = bg.status("user", "u-3", tenant="acme", unit="tokens")
        print(f"u-3 used {used.spent} of a soft {used.limit} tokens ({used.enforce})")

        print("limits in force:")
        for listed in bg.limits():
            limit = listed.limit
            amounts = ", ".join(f"{unit}={getattr(limit, unit)}" for unit in limit.units)
            who = f" key={limit.key}" if limit.key else ""
            print(f"  {listed.source:10} {limit.scope}{who} {limit.resolved_window}: {amounts}")


if __name__ == "__main__":
    main()
