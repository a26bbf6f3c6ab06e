"""A runaway agent loop, stopped by a $0.50 spend_limit.

The agent keeps "thinking" (calling gpt-4o through budgetguard's built-in fake
model, so no API key and no network are needed), its context growing every
step, the way a real agent that never reaches its goal burns money overnight.
budgetguard reserves each call's worst case before it is sent and stops the
loop at the first call that could push the run past $0.50.

    python examples/runaway_agent.py
"""

from __future__ import annotations

import budgetguard as bg
from budgetguard.testing import FakeChatModel


def main() -> None:
    model = FakeChatModel(seed=7)
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a research agent. Never give up."},
        {"role": "user", "content": "Find the cheapest flight to Lisbon next week."},
    ]
    step = 0
    with bg.spend_limit(usd="0.50", user="u-42", feature="agent") as run:
        try:
            while True:  # the agent never decides it is done
                step += 1
                reply = model.complete("gpt-4o", messages, max_tokens=1000)
                text = reply["choices"][0]["message"]["content"]
                messages.append({"role": "assistant", "content": text})
                messages.append({"role": "user", "content": "Keep going, check again."})
                print(
                    f"step {step:3d}  prompt {reply['usage']['prompt_tokens']:6d} tok  "
                    f"spent {bg.Money.usd(run.spent)}  left {bg.Money.usd(run.remaining or 0)}"
                )
        except bg.BudgetExceeded as stop:
            print(f"\nstopped before step {step}: {stop}")
    print(f"agent made {run.calls} calls and spent {bg.Money.usd(run.spent)} of $0.50")


if __name__ == "__main__":
    main()
