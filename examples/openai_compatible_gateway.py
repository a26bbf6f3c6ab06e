"""OpenAI-compatible gateways and Azure deployments: which prices apply.

The same ``openai.OpenAI`` client can talk to OpenAI, OpenRouter, Groq, Azure or a
local server. budgetguard picks the price list from the client's base URL; where
that cannot tell (here: a local fake on 127.0.0.1), say it with ``provider=``, and
map deployment names to the model they run with ``models=``. A model nobody can
price is refused before anything is sent, never charged $0.

Runs offline against budgetguard's fake provider. Run with
``python examples/openai_compatible_gateway.py``.
"""

from __future__ import annotations

import openai

import budgetguard as bg
from budgetguard.testing import FakeProvider

MESSAGES = [{"role": "user", "content": "Classify this ticket."}]


def main() -> None:
    with FakeProvider() as fake:
        records: list[bg.CallRecord] = []
        bg.configure(
            policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd=5, window="day")]),
            listeners=[records.append],
        )

        def base(**route: object) -> openai.OpenAI:
            sdk = openai.OpenAI(base_url=fake.openai_base_url, api_key="x", max_retries=0)
            return bg.instrument(sdk, **route)  # type: ignore[arg-type]

        # OpenRouter names models "vendor/model" and has its own price list.
        router = base(provider="openrouter")
        # An Azure deployment is named by its owner; price it as the model it runs.
        azure = base(provider="azure", models={"prod-chat": "gpt-4o-mini"})
        # A model only a local server knows: no price, so refused before sending.
        local = base()

        with bg.spend_limit(tenant="acme"):
            fake.reply(model="anthropic/claude-sonnet-4.5", input_tokens=10, output_tokens=80)
            router.chat.completions.create(
                model="anthropic/claude-sonnet-4.5", messages=MESSAGES, max_tokens=200
            )
            fake.reply(model="gpt-4o-mini", input_tokens=10, output_tokens=80)
            azure.chat.completions.create(model="prod-chat", messages=MESSAGES, max_tokens=200)
            for record in records:
                print(f"{record.requested_model}: charged ${record.cost_usd:f}")

            try:
                local.chat.completions.create(model="my-finetune-v3", messages=MESSAGES)
            except bg.UnknownModel as error:
                print(f"refused: {error}")

        # Give it a price and the same call goes through.
        bg.configure(prices={"my-finetune-v3": {"input": "0.50", "output": "1.50"}})
        with bg.spend_limit(tenant="acme"):
            fake.reply(model="my-finetune-v3", input_tokens=10, output_tokens=80)
            local.chat.completions.create(model="my-finetune-v3", messages=MESSAGES, max_tokens=200)
        print(f"my-finetune-v3 with a price: charged ${records[-1].cost_usd:f}")
        for client in (router, azure, local):
            client.close()


if __name__ == "__main__":
    main()
