"""Anthropic and Gemini clients under one budget: cache reads, thinking and embeddings priced.

Runs offline: it starts budgetguard's fake provider on 127.0.0.1 and points real
``anthropic.Anthropic`` and ``google.genai.Client`` clients at it.
Needs the ``anthropic`` and ``gemini`` extras. Run with
``python examples/anthropic_and_gemini.py``.
"""

from __future__ import annotations

from dataclasses import asdict

import anthropic
from google import genai

import budgetguard as bg
from budgetguard.testing import FakeProvider


def show(record: bg.CallRecord) -> None:
    if record.usage is None:  # a refusal: nothing was sent
        print(f"  {record.model}: {record.outcome}, estimated ${record.estimate_usd}")
        return
    usage, details = record.usage, record.usage.details
    extras = {} if details is None else {k: v for k, v in asdict(details).items() if v}
    print(
        f"  {record.model}: reserved ${record.estimate_usd:f}, charged ${record.cost_usd:f} for "
        f"{usage.input_tokens} in ({usage.cache_read_tokens} cached) / {usage.output_tokens} "
        f"out ({usage.reasoning_tokens} reasoning)" + (f" {extras}" if extras else "")
    )


def main() -> None:
    with FakeProvider() as fake:
        claude = bg.instrument(
            anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="x", max_retries=0)
        )
        gemini = bg.instrument(genai.Client(api_key="x", http_options={"base_url": fake.url}))
        bg.configure(
            policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd="0.05", window="day")]),
            listeners=[show],
        )

        with bg.spend_limit(tenant="acme", feature="support"):
            print("Claude, reading most of its prompt from the cache:")
            # input_tokens counts all input, cache reads included (as genai-prices does)
            fake.reply(input_tokens=3_200, cache_read_tokens=3_000, output_tokens=150)
            claude.messages.create(
                model="claude-sonnet-4-5",
                max_tokens=400,
                messages=[{"role": "user", "content": "Summarise the ticket."}],
            )

            print("Gemini, thinking before it answers:")
            fake.reply(
                model="gemini-2.5-flash",
                input_tokens=800,
                output_tokens=420,  # reasoning included
                reasoning_tokens=300,
            )
            gemini.models.generate_content(
                model="gemini-2.5-flash",
                contents="Which plan fits this customer?",
                config={"max_output_tokens": 1_000},
            )

            print("Gemini embeddings, charged their input tokens:")
            fake.reply(model="gemini-embedding-001", input_tokens=4)
            gemini.models.embed_content(model="gemini-embedding-001", contents=["a", "b"])

        print(f"tenant acme has spent ${bg.status('tenant', 'acme').spent} of $0.05")

        print("gemini-2.5-pro for up to 60,000 output tokens does not fit what is left:")
        sent = len(fake.requests)
        try:
            with bg.spend_limit(tenant="acme"):
                gemini.models.generate_content(
                    model="gemini-2.5-pro",
                    contents="Write the novel.",
                    config={"max_output_tokens": 60_000},
                )
        except bg.BudgetExceeded as error:
            print(f"  refused before sending ({len(fake.requests) - sent} requests): {error}")


if __name__ == "__main__":
    main()
