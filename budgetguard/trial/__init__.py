"""``bg.trial``: the same cases through several models, under one budget, side by side.

Every case goes to every model through instrumented clients (so each call is
estimated, held and settled like any other, under one ``spend_limit``), and
each model gets one row: calls, tokens, exact cost, latency, accuracy, cost
per correct answer; ``TrialResult.pick`` is the cheapest model within
``within`` points of the best accuracy. See docs/choosing-a-model.md.
"""

from __future__ import annotations

from .cases import Case, Check, TrialError, load_cases, resolve_check
from .results import ModelRow, TrialResult
from .run import trial

__all__ = [
    "Case",
    "Check",
    "ModelRow",
    "TrialError",
    "TrialResult",
    "load_cases",
    "resolve_check",
    "trial",
]
