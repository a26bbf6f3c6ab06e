"""Would a cheaper model do? The same cases through three models, under one budget.

``bg.trial`` (and ``budgetguard trial`` on the command line) sends every case to
every model through instrumented clients built from the environment
(``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``, ``GOOGLE_GEMINI_BASE_URL`` and their
keys), and compares cost, latency and accuracy. Here the environment points at
budgetguard's fake provider, whose canned answers make one model wrong once.

Runs offline. Run with ``python examples/model_trial.py``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from budgetguard.cli import main as cli
from budgetguard.testing import FakeProvider
from budgetguard.trial import trial

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-haiku-4-5"]
CASES = [
    {"prompt": "Capital of France? One word.", "expected": "Paris"},
    {"prompt": "2 + 2? Digits only.", "expected": "4"},
    {"prompt": "Opposite of hot? One word.", "expected": "cold"},
]
# what each model answers, case by case (the trial asks each case of every model in turn)
ANSWERS = [("Paris", "Paris", "Paris"), ("4", "4", "Four"), ("Cold.", "cold", "cold")]


def script(fake: FakeProvider) -> None:
    for answers in ANSWERS:
        for text in answers:
            fake.reply(text=text, input_tokens=25, output_tokens=2)


def main() -> None:
    with FakeProvider() as fake:
        os.environ.update(
            OPENAI_BASE_URL=fake.openai_base_url,
            OPENAI_API_KEY="fake",
            ANTHROPIC_BASE_URL=fake.anthropic_base_url,
            ANTHROPIC_API_KEY="fake",
            GOOGLE_GEMINI_BASE_URL=fake.url,
            GEMINI_API_KEY="fake",
        )
        # The function: exact Decimal figures per model, and the pick.
        script(fake)
        result = trial(MODELS, CASES, check="exact", usd="0.50", concurrency=1)
        for row in result.rows:
            print(f"{row.model}: {row.correct}/{row.calls} right, ${row.cost:f}")
        print(f"pick: {result.pick}")

        # The command line, on a JSONL file: the same table for people.
        with tempfile.TemporaryDirectory() as tmp:
            cases = Path(tmp) / "cases.jsonl"
            cases.write_text("".join(json.dumps(case) + "\n" for case in CASES))
            script(fake)
            cli(
                [
                    "trial",
                    "--models",
                    ",".join(MODELS),
                    "--cases",
                    str(cases),
                    "--usd",
                    "0.50",
                    "--concurrency",
                    "1",
                ]
            )

            # A budget too small for the whole trial: it stops, with what it has.
            fake.clear()
            cli(
                [
                    "trial",
                    "--models",
                    ",".join(MODELS),
                    "--cases",
                    str(cases),
                    "--usd",
                    "0.0006",
                    "--max-tokens",
                    "16",
                    "--concurrency",
                    "1",
                ]
            )


if __name__ == "__main__":
    main()
