from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from budgetguard import Usage, UsageError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_tokens": -1}, "usage.input_tokens: must be >= 0, got -1"),
        ({"output_tokens": True}, "usage.output_tokens: expected an int, got True"),
        ({"cache_read_tokens": 1.0}, "usage.cache_read_tokens: expected an int, got 1.0"),
        ({"reasoning_tokens": "3"}, "usage.reasoning_tokens: expected an int, got '3'"),
        ({"input_tokens": 5, "cache_write_tokens": 6}, "exceeds usage.input_tokens (5)"),
        ({"output_tokens": 1, "reasoning_tokens": 2}, "exceeds usage.output_tokens (1)"),
    ],
)
def test_bad_usage_names_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as error:
        Usage(**kwargs)  # type: ignore[arg-type]
    assert message in str(error.value)


counts = st.integers(min_value=0, max_value=10**12)


@given(counts, counts, counts, counts)
def test_valid_usage_adds_up(inp: int, out: int, cached: int, reasoning: int) -> None:
    usage = Usage(
        inp + cached, out + reasoning, cache_read_tokens=cached, reasoning_tokens=reasoning
    )
    twice = usage + usage
    assert twice.total_tokens == 2 * usage.total_tokens == 2 * (inp + cached + out + reasoning)
    assert twice.cache_read_tokens == 2 * cached
