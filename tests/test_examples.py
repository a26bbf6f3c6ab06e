"""Every example in examples/ runs offline, to the end, without a warning on stderr:
the docs point users at them, so a broken or noisy example is a defect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))

EXPECTED = {
    "anthropic_and_gemini.py": ["charged $0.00375", "refused before sending (0 requests)"],
    "tight_holds.py": [
        "sent with max_tokens=500",
        "fitted: output cap",
        "contention_wait_s=0.0: 12 answered",
        "contention_wait_s=10.0: 20 answered",
    ],
    "instrumented_openai.py": ["the provider got 'gpt-4o-mini'", "refused:"],
    "langchain_budget.py": [
        "gpt-4o-mini for u-42: reserved",
        "charged $0.000054 for 120 in",
        "claude-sonnet-4-5 for u-42: reserved",
        "charged $0.00315 for 2100 in (2000 cached)",
        "refused before sending (0 requests)",
    ],
    "litellm_budget.py": [
        "claude-haiku-4-5: reserved $0.002027, charged $0.00125",
        "gpt-4o-mini: reserved $0.0000633, charged $0.00001095",
        "refused before sending (0 requests)",
    ],
    "pydantic_ai_budget.py": [
        "charged $0.00182 for 1200 in (1024 cached)",
        "pydantic-ai's own price of the run: $0.00182",
        "refused before sending (0 requests)",
    ],
    "limits_as_data.py": [
        "acme (pro): ['answered', 'answered', 'answered']",
        "tiny (free): ['answered', \"refused (user 'u-9': 1 requests)\"]",
        "chat: ['answered', 'answered', \"refused (feature 'chat': 2 requests)\"]",
        "chat status: 2 requests",
        "outcomes ['over_soft_limit', 'over_soft_limit']",
        "u-3 used 200 of a soft 150 tokens (warn)",
        "store      feature key=chat day: requests=2",
    ],
    "model_trial.py": [
        "gpt-4o: 2/3 right, $0.0002475",
        "gpt-4o-mini: 3/3 right, $0.00001485",
        "claude-haiku-4-5: 2/3 right, $0.000105",
        "pick: gpt-4o-mini",
        "cheapest within 2 points of the best accuracy: gpt-4o-mini",
        "spent $0.00036735 of $0.50 on 9 of 9 calls",
        "stopped: the next call would have passed the $0.0006 limit; 6 of 9 calls made",
    ],
    "openai_compatible_gateway.py": [
        "anthropic/claude-sonnet-4.5: charged $0.00123",
        "refused: unknown model 'my-finetune-v3'",
        "my-finetune-v3 with a price: charged $0.000125",
    ],
}


def test_every_example_is_checked() -> None:
    assert {path.name for path in EXAMPLES} >= set(EXPECTED)
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_example_runs_cleanly(example: Path) -> None:
    pytest.importorskip("google.genai")
    done = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "default"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    for expected in EXPECTED.get(example.name, []):
        assert expected in done.stdout
