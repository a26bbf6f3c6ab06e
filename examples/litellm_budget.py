"""LiteLLM calls under a budget: ``bg_litellm.completion`` is ``litellm.completion``, guarded.

Each call's worst case is reserved before LiteLLM sends it, priced at the
provider its model prefix routes to, and settled from the usage the provider
reported (not LiteLLM's ``response_cost``); a call that does not fit raises
``bg.BudgetExceeded`` before anything is sent. Streams are settled from their
final usage chunk.

Runs offline: it starts budgetguard's fake provider on 127.0.0.1 and points
LiteLLM's own OpenAI and Anthropic code at it with ``api_base``. (The stream
is read with ``acompletion``: LiteLLM's sync streaming leaves an event loop
open on the main thread, which Python reports at exit.) Needs the ``litellm``
extra. Run with ``python examples/litellm_budget.py``.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from typing import Any

# LiteLLM fetches its model cost map over the network at import unless told not to;
# budgetguard prices calls with genai-prices and never needs it.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# LiteLLM's TypedDicts use ReadOnly items, which pydantic warns it cannot enforce.
warnings.filterwarnings("ignore", message=r".*`ReadOnly` qualifier", category=UserWarning)

import litellm  # noqa: E402

import budgetguard as bg  # noqa: E402
from budgetguard.integrations import litellm as bg_litellm  # noqa: E402
from budgetguard.testing import FakeProvider  # noqa: E402

TICKET = [{"role": "user", "content": "Summarise the ticket: the export job times out."}]


def show(record: bg.CallRecord) -> None:
    if record.usage is None:  # a refusal: nothing was sent
        print(f"  {record.model}: {record.outcome}, would have held ${record.estimate_usd}")
        return
    usage = record.usage
    print(
        f"  {record.model}: reserved ${record.estimate_usd}, charged ${record.cost_usd} for "
        f"{usage.input_tokens} in ({usage.cache_read_tokens} cached) / {usage.output_tokens} out"
    )


async def stream_answer(openai: dict[str, Any]) -> str:
    stream = await bg_litellm.acompletion(
        model="gpt-4o-mini", messages=TICKET, max_tokens=100, stream=True, **openai
    )
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    await litellm.close_litellm_async_clients()  # its cached HTTP clients, before the loop ends
    return text


def main() -> None:
    with FakeProvider() as fake:
        bg.configure(
            policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd="0.01", window="day")]),
            listeners=[show],
        )
        anthropic = {"api_base": fake.anthropic_base_url, "api_key": "x", "num_retries": 0}
        openai = {"api_base": fake.openai_base_url, "api_key": "x", "num_retries": 0}

        with bg.spend_limit(tenant="acme", feature="support"):
            print("Claude through LiteLLM, most of the prompt read from the cache:")
            fake.reply(input_tokens=3_200, cache_read_tokens=3_000, output_tokens=150)
            response = bg_litellm.completion(
                model="anthropic/claude-haiku-4-5", messages=TICKET, max_tokens=400, **anthropic
            )
            print(f"  -> {response.choices[0].message.content}")

            print("GPT-4o-mini, streamed (settled from the stream's last usage chunk):")
            fake.reply(input_tokens=25, output_tokens=12)
            print(f"  -> {asyncio.run(stream_answer(openai))}")

            print("Claude Sonnet with room for 4,000 output tokens: more than the day has left")
            sent = len(fake.requests)
            try:
                bg_litellm.completion(
                    model="anthropic/claude-sonnet-4-5",
                    messages=TICKET,
                    max_tokens=4_000,
                    **anthropic,
                )
            except bg.BudgetExceeded as error:
                print(f"  refused before sending ({len(fake.requests) - sent} requests): {error}")

        status = bg.status("tenant", "acme")
        print(f"tenant acme: spent ${status.spent} of ${status.limit}, held ${status.held}")


if __name__ == "__main__":
    main()
