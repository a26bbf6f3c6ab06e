"""An instrumented OpenAI client: a downgrade, then a BudgetExceeded.

Runs offline: it starts budgetguard's fake provider on 127.0.0.1 and points a
real ``openai.OpenAI`` client at it. Run with ``python examples/instrumented_openai.py``.
"""

from __future__ import annotations

import openai

import budgetguard as bg
from budgetguard.testing import FakeProvider

MESSAGES = [{"role": "user", "content": "Write a haiku about budgets."}]


def main() -> None:
    with FakeProvider() as fake:
        client = bg.instrument(
            openai.OpenAI(base_url=fake.openai_base_url, api_key="not-needed", max_retries=0)
        )

        # gpt-4o's worst case for 1000 output tokens (~$0.01) does not fit in
        # $0.005; gpt-4o-mini's (~$0.0006) does, so the call is downgraded.
        bg.configure(
            policy=bg.Policy(
                limits=[bg.Limit(scope="user", usd="0.005", window="day")],
                on_exceed="downgrade",
                downgrade={"gpt-4o": "gpt-4o-mini"},
            )
        )
        with bg.spend_limit(user="u-42") as run:
            response = client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, max_tokens=1000
            )
        print(f"asked for gpt-4o, the provider got {fake.requests[-1].body['model']!r}")
        print(f"answer: {response.choices[0].message.content!r}; spent ${run.spent}")

        # With "raise", the same call is refused before any request is sent.
        bg.configure(
            policy=bg.Policy(
                limits=[bg.Limit(scope="user", usd="0.001", window="day")], on_exceed="raise"
            )
        )
        sent = len(fake.requests)
        try:
            with bg.spend_limit(user="u-43"):
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1000)
        except bg.BudgetExceeded as error:
            print(f"refused: {error}")
        print(f"requests sent for the refused call: {len(fake.requests) - sent}")


if __name__ == "__main__":
    main()
