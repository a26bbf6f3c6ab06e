"""Every error budgetguard raises derives from ``BudgetError``::

    BudgetError
    ├── BudgetExceeded       a call would spend past a limit (scope, key, limit, spent,
    │                        requested, retry_after); raised by the "raise" policy, and by
    │                        "downgrade" / "block" when they run out of options
    ├── UnknownModel         a model with no known price and no fallback (never priced $0)
    ├── UnboundedInput       a call whose input no request field bounds (a server tool
    │                        with no max_uses, an unseen previous_response_id), refused
    │                        under Policy(unbounded_input="refuse")
    ├── ConfigurationError   a bad policy, price override, store URL or usage of the API
    │   (also a ValueError)
    └── StoreUnavailable     the budget store cannot be reached and fail="closed"

``UsageError`` (a ``ConfigurationError``) flags a malformed provider response.
(``describe_error``, outside ``__all__``, turns any error into a ledger row's reason.)
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

__all__ = [
    "BudgetError",
    "BudgetExceeded",
    "ConfigurationError",
    "StoreUnavailable",
    "UnboundedInput",
    "UnknownModel",
    "UsageError",
]


class BudgetError(Exception):
    """Base of every budgetguard error."""


class BudgetExceeded(BudgetError):
    """The call would push ``scope``/``key`` past its ``limit``.

    Amounts are ``Decimal`` USD, or counts of tokens or requests when ``unit`` says
    so (a ``tokens=`` / ``requests=`` limit). ``spent`` counts settled spend in the
    current window, ``held`` what concurrent calls have reserved but not settled yet,
    ``requested`` this call's worst-case estimate. ``retry_after`` (a
    ``timedelta``; ``retry_after_s`` in seconds, e.g. for a Retry-After header)
    is when the window resets, or ``None`` when waiting would not help (the
    request alone exceeds the limit, or the window never resets).
    """

    def __init__(
        self,
        *,
        scope: str,
        key: str,
        limit: Decimal,
        spent: Decimal,
        requested: Decimal,
        held: Decimal = Decimal(0),
        window: str = "total",
        retry_after: timedelta | None = None,
        model: str | None = None,
        unit: str = "usd",
    ) -> None:
        self.unit = unit
        self.scope = scope
        self.key = key
        self.limit = limit
        self.spent = spent
        self.held = held
        self.requested = requested
        self.window = window
        self.retry_after = retry_after
        self.model = model
        super().__init__(self._message())

    @property
    def retry_after_s(self) -> float | None:
        """``retry_after`` in seconds (None: waiting would not help)."""
        return None if self.retry_after is None else self.retry_after.total_seconds()

    def _message(self) -> str:
        where = f"{self.scope}={self.key!r}" if self.key else self.scope
        model = f" calling {self.model}" if self.model else ""
        unit = getattr(self, "unit", "usd")  # pickled by an older version: dollars

        def show(amount: Decimal) -> str:
            return f"${amount}" if unit == "usd" else f"{amount:,}"

        units = "" if unit == "usd" else f" {unit}"
        text = (
            f"budget exceeded for {where} ({self.window} limit {show(self.limit)}{units})"
            f"{model}: spent {show(self.spent)} + held {show(self.held)} + requested "
            f"{show(self.requested)} > {show(self.limit)}{units}"
        )
        if self.retry_after is not None:
            text += f"; resets in {int(self.retry_after.total_seconds())}s"
        return text

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only __init__: teach pickle (multiprocessing) how to rebuild us.
        return (_rebuild_exceeded, (self.__dict__.copy(),))


def _rebuild_exceeded(state: dict[str, object]) -> BudgetExceeded:
    error = BudgetExceeded.__new__(BudgetExceeded)
    error.__dict__.update(state)
    Exception.__init__(error, error._message())
    return error


class UnknownModel(BudgetError, LookupError):
    """No price is known for ``model`` and no fallback price is configured."""

    def __init__(self, model: str, detail: str = "") -> None:
        self.model = model
        hint = (
            f"add it with bg.configure(prices={{{model!r}: {{'input': ..., 'output': ...}}}}) "
            "or set a fallback price"
        )
        super().__init__(f"unknown model {model!r}: no price known{detail}; {hint}")

    def __reduce__(self) -> tuple[object, ...]:
        return (UnknownModel, (self.model,))


class UnboundedInput(BudgetError):
    """The provider may bill this call input no field of the request bounds, and the
    policy says to refuse such calls (``Policy(unbounded_input="refuse")``)."""

    def __init__(self, model: str, reasons: tuple[str, ...]) -> None:
        self.model = model
        self.reasons = reasons
        super().__init__(
            f"{model}: the input of this call has no bound ({'; '.join(reasons)}); "
            "set max_uses on server tools, or Policy(unbounded_input='allowance') to hold "
            "Policy.server_tool_tokens for it and charge what is billed"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (UnboundedInput, (self.model, self.reasons))


class ConfigurationError(BudgetError, ValueError):
    """Bad configuration or API usage; the message names the offending field."""


class UsageError(ConfigurationError):
    """A provider response whose usage block cannot be read (names the field)."""


class StoreUnavailable(BudgetError):
    """The budget store did not answer and the policy fails closed."""


_SECRET = re.compile(
    r"(?i)(?:\b(?:sk|pk|rk|xai|gsk)[-_][A-Za-z0-9_\-*]{6,}|\bAIza[A-Za-z0-9_\-*]{20,}"
    r"|\bya29\.[A-Za-z0-9._\-]{8,}|(?<=bearer )[A-Za-z0-9._\-~+/*]{8,}"
    r"|(?<=key[=:] )[^\s,;]{8,}|(?<=key=)[^\s&,;]{8,})"
)
"""Key-shaped text: OpenAI / Anthropic / xAI / Groq keys, Google API keys (``AIza`` and 35
characters, no separator) and OAuth access tokens (``ya29.``), bearer tokens, ``key=``."""


def describe_error(error: BaseException) -> str:
    """An error as a ledger row or log line may carry it: its type and message, with
    anything shaped like an API key masked (providers' 401s echo part of the key)."""
    message = _SECRET.sub("[redacted]", str(error))
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
