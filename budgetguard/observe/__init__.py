"""Seeing where the money goes, off the request path: alerts, the usage ledger,
OpenTelemetry and Prometheus listeners, what-if repricing and the dashboard.

Each listener imports its own library only when it is made (``budgetguard[otel]``,
``budgetguard[prometheus]``), so importing this package needs neither."""

from .otel import OpenTelemetry
from .prometheus import Prometheus
from .whatif import Comparison, Excluded, ModelCalls, Repriced, WhatIf, reprice

__all__ = [
    "Comparison",
    "Excluded",
    "ModelCalls",
    "OpenTelemetry",
    "Prometheus",
    "Repriced",
    "WhatIf",
    "reprice",
]
