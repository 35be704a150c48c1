"""``metrics``: per-customer counters, histograms and gauges.

>>> from dashfrog import metrics
>>> api_calls = metrics.Counter("api_calls", labels=["method", "status"], pretty_name="API Calls", unit="count")
>>> api_calls.add(1, tenant="acme-corp", method="POST", status="200")
>>> duration = metrics.Histogram("request_duration_seconds", labels=["endpoint"], unit="seconds")
>>> duration.record(0.234, tenant="acme-corp", endpoint="/api/users")

Values are aggregated in the process and sent every DASHFROG_METRICS_INTERVAL_S
through the same sender and topic as flow events; query them with
``dashfrog.query.metric(...)``.
"""

from dashfrog._exceptions import (
    EmptyTenantError,
    MetricConflictError,
    MetricLabelError,
    MetricValueError,
    MissingLabelError,
    NegativeIncrementError,
    UndeclaredLabelError,
)
from dashfrog._metrics import Counter, Gauge, GaugeValue, Histogram

__all__ = [
    "Counter",
    "EmptyTenantError",
    "Gauge",
    "GaugeValue",
    "Histogram",
    "MetricConflictError",
    "MetricLabelError",
    "MetricValueError",
    "MissingLabelError",
    "NegativeIncrementError",
    "UndeclaredLabelError",
]
