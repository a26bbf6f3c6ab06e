"""A pydantic-ai agent under a budget: each model request reserved, settled, or refused.

``BudgetedModel`` wraps any pydantic-ai model. Before each request the agent
makes, its worst case is reserved on every budget in force; the response's
usage settles it; a request that does not fit raises ``bg.BudgetExceeded``
before anything is sent.

Runs offline: it starts budgetguard's fake provider on 127.0.0.1 and points a
real ``OpenAIChatModel`` at it. Needs the ``pydantic-ai`` extra (with
``pydantic-ai-slim[openai]``). Run with ``python examples/pydantic_ai_budget.py``.
"""

from __future__ import annotations

import asyncio

from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import budgetguard as bg
from budgetguard.integrations.pydantic_ai import BudgetedModel
from budgetguard.testing import FakeProvider


def show(record: bg.CallRecord) -> None:
    if record.usage is None:  # a refusal: nothing was sent
        print(f"  {record.model}: {record.outcome}, would have held ${record.estimate_usd}")
        return
    usage = record.usage
    print(
        f"  {record.model}: reserved ${record.estimate_usd}, charged ${record.cost_usd} for "
        f"{usage.input_tokens} in ({usage.cache_read_tokens} cached) / {usage.output_tokens} out"
    )


async def main() -> None:
    with FakeProvider() as fake:
        bg.configure(
            policy=bg.Policy(
                limits=[bg.Limit(scope="tenant", usd="0.02", window="day")],
                max_output_tokens=300,  # sent as each request's max_tokens
            ),
            listeners=[show],
        )
        provider = OpenAIProvider(base_url=fake.openai_base_url, api_key="x")
        agent = Agent(BudgetedModel(OpenAIChatModel("gpt-4o", provider=provider)))
        async with agent:  # closes the model's HTTP client at the end
            print("A run, settled from the usage the provider reported:")
            # The fake reports a long prompt, mostly read from the provider's cache.
            fake.reply(model="gpt-4o-2024-08-06", input_tokens=1_200, cache_read_tokens=1_024)
            async with bg.spend_limit(usd="0.05", tenant="acme", user="u-42") as run:
                result = await agent.run("What is our refund policy?")
            print(f"  answer: {result.output!r}")
            print(f"  the run spent ${run.spent} in {run.calls} model request(s)")
            print(f"  pydantic-ai's own price of the run: ${result.usage.cost}")

            print("A streamed run, settled when its stream closes:")
            async with (
                bg.spend_limit(tenant="acme", user="u-7") as run,
                agent.run_stream("Which plan fits a team of five?") as streamed,
            ):
                answer = "".join([text async for text in streamed.stream_text(delta=True)])
            print(f"  streamed {answer!r}; the run spent ${run.spent}")
            print(f"tenant acme has spent ${bg.status('tenant', 'acme').spent} of $0.02")

            print("A request for 1,500 output tokens does not fit a $0.01 run limit:")
            sent = len(fake.requests)
            try:
                async with bg.spend_limit(usd="0.01", tenant="acme"):
                    await agent.run("Write the whole manual.", model_settings={"max_tokens": 1_500})
            except bg.BudgetExceeded as error:
                print(f"  refused before sending ({len(fake.requests) - sent} requests): {error}")


if __name__ == "__main__":
    asyncio.run(main())
