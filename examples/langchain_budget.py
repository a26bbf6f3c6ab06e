"""LangChain chat models under one budget: each call reserved, settled, or refused unsent.

Runs offline: it starts budgetguard's fake provider on 127.0.0.1 and points real
``ChatOpenAI`` and ``ChatAnthropic`` models at it, with a ``BudgetCallbackHandler``
in their callbacks. Needs the ``langchain`` extra and langchain-openai /
langchain-anthropic. Run with ``python examples/langchain_budget.py``.
"""

from __future__ import annotations

import logging

from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI

import budgetguard as bg
from budgetguard.integrations.langchain import BudgetCallbackHandler
from budgetguard.testing import FakeProvider

# LangChain logs every error a callback raises (a refusal too) before re-raising it.
logging.getLogger("langchain_core.callbacks.manager").setLevel(logging.ERROR)


def show(record: bg.CallRecord) -> None:
    if record.usage is None:  # a refusal: nothing was sent
        print(f"  {record.model}: {record.outcome}, would hold ${record.estimate_usd}")
        return
    usage = record.usage
    print(
        f"  {record.model} for {record.user}: reserved ${record.estimate_usd:f}, charged "
        f"${record.cost_usd:f} for {usage.input_tokens} in ({usage.cache_read_tokens} cached) "
        f"/ {usage.output_tokens} out"
    )


def main() -> None:
    with FakeProvider() as fake:
        budget = BudgetCallbackHandler(feature="support")
        gpt = ChatOpenAI(
            model="gpt-4o-mini",
            max_tokens=300,  # the hold is priced at the cap the model sends
            stream_usage=True,
            base_url=fake.openai_base_url,
            api_key="x",
            max_retries=0,
            callbacks=[budget],
        )
        claude = ChatAnthropic(
            model="claude-sonnet-4-5",
            max_tokens=400,
            base_url=fake.anthropic_base_url,
            api_key="x",
            max_retries=0,
            callbacks=[budget],
        )
        bg.configure(
            policy=bg.Policy(limits=[bg.Limit(scope="user", usd="0.01", window="day")]),
            listeners=[show],
        )
        for_user = {"metadata": {"user": "u-42"}}  # attribution from the run's metadata

        print("gpt-4o-mini, invoked:")
        fake.reply(input_tokens=120, output_tokens=60)
        gpt.invoke("Summarise the ticket in one line.", config=for_user)

        print("claude-sonnet-4-5, streamed, reading most of its prompt from the cache:")
        # input_tokens counts all input, cache reads included (as genai-prices does)
        fake.reply(input_tokens=2_100, cache_read_tokens=2_000, output_tokens=150)
        answer = "".join(chunk.text for chunk in claude.stream("Draft a reply.", config=for_user))
        print(f"  answer: {answer!r}")

        spent = bg.status("user", "u-42", tenant=None).spent
        print(f"user u-42 has spent ${spent} of $0.01")

        print("claude-opus-4-1 for up to 32,000 output tokens does not fit what is left:")
        opus = claude.model_copy(update={"model": "claude-opus-4-1", "max_tokens": 32_000})
        sent = len(fake.requests)
        try:
            opus.invoke("Write the whole manual.", config=for_user)
        except bg.BudgetExceeded as error:
            print(f"  refused before sending ({len(fake.requests) - sent} requests): {error}")


if __name__ == "__main__":
    main()
