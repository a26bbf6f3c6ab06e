"""budgetguard: stop surprise LLM bills before they happen.

Every guarded LLM call is estimated (worst case) before it is sent, that
amount is reserved atomically on every budget the call touches, and the
reservation is settled with the actual usage afterwards::

    import budgetguard as bg

    bg.configure(policy=bg.Policy(limits=[bg.Limit(scope="tenant", usd=50, window="day")]))
    client = bg.instrument(openai.OpenAI())

    with bg.spend_limit(usd="0.50", tenant="acme") as run:
        client.chat.completions.create(model="gpt-4o", messages=[...])
    print(run.spent)

See README.md and docs/ for the concepts, the stores and the integrations.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from ._core.errors import (
    BudgetError,
    BudgetExceeded,
    ConfigurationError,
    StoreUnavailable,
    UnboundedInput,
    UnknownModel,
    UsageError,
)
from ._core.money import Money
from ._core.policy import Limit, Policy, Threshold
from ._core.records import CallRecord, Estimate, LLMRequest
from ._core.usage import Usage
from ._engine.admission import Admission
from ._engine.config import Settings, configure, current, reset
from ._engine.estimate import estimate
from ._engine.flow import aadmit, aadmit_cost, admit, admit_cost
from ._engine.guard import Guard, Run, budget, spend_limit
from ._engine.limits import (
    ListedLimit,
    alimits,
    aremove_limit,
    aset_limit,
    aset_plan,
    limits,
    remove_limit,
    set_limit,
    set_plan,
)
from ._engine.status import BudgetStatus, astatus, status
from .observe.alerts import (
    Alert,
    Alerts,
    CostPerCall,
    Digest,
    HistoryState,
    LogSink,
    MemoryAlertState,
    RedisAlertState,
    RequestCost,
    Spike,
    Webhook,
    slack_payload,
)
from .observe.ledger import Ledger, PostgresLedger, SQLiteLedger, open_ledger
from .pricing.live import PriceStatus, price_status, refresh_prices
from .pricing.prices import Price
from .providers.instrument import instrument
from .stores import MemoryStore
from .trial import ModelRow, TrialError, TrialResult, trial

try:
    __version__ = _metadata.version("budgetguard")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "Admission",
    "Alert",
    "Alerts",
    "BudgetError",
    "BudgetExceeded",
    "BudgetStatus",
    "CallRecord",
    "ConfigurationError",
    "CostPerCall",
    "Digest",
    "Estimate",
    "Guard",
    "HistoryState",
    "LLMRequest",
    "Ledger",
    "Limit",
    "ListedLimit",
    "LogSink",
    "MemoryAlertState",
    "MemoryStore",
    "ModelRow",
    "Money",
    "Policy",
    "PostgresLedger",
    "Price",
    "PriceStatus",
    "RedisAlertState",
    "RequestCost",
    "Run",
    "SQLiteLedger",
    "Settings",
    "Spike",
    "StoreUnavailable",
    "Threshold",
    "TrialError",
    "TrialResult",
    "UnboundedInput",
    "UnknownModel",
    "Usage",
    "UsageError",
    "Webhook",
    "__version__",
    "aadmit",
    "aadmit_cost",
    "admit",
    "admit_cost",
    "alimits",
    "aremove_limit",
    "aset_limit",
    "aset_plan",
    "astatus",
    "budget",
    "configure",
    "current",
    "estimate",
    "instrument",
    "limits",
    "open_ledger",
    "price_status",
    "refresh_prices",
    "remove_limit",
    "reset",
    "set_limit",
    "set_plan",
    "slack_payload",
    "spend_limit",
    "status",
    "trial",
]
