"""The SDK: customer-scoped flows and steps, their context across services and
the background sender of their Avro events.

>>> from dashfrog import flow, step
>>> with flow.start(name="data_import", tenant="acme-corp"):
...     with step.start("validate"):
...         ...
"""

from dashfrog import flow, metrics, step
from dashfrog._api import flush, setup, shutdown, stats
from dashfrog._exceptions import (
    ConfigurationError,
    DashfrogError,
    EmptyTenantError,
    InvalidArgumentError,
    LabelLimitError,
    MetricConflictError,
    MetricLabelError,
    MetricValueError,
    MissingLabelError,
    NegativeIncrementError,
    NoActiveFlowError,
    QueryError,
    SchemaError,
    StorageError,
    UndeclaredLabelError,
    UsageError,
)
from dashfrog._flow import SDK_VERSION as __version__
from dashfrog._instrument import with_celery, with_fastapi, with_flask, with_httpx, with_requests
from dashfrog._settings import Settings

__all__ = [
    "ConfigurationError",
    "DashfrogError",
    "EmptyTenantError",
    "InvalidArgumentError",
    "LabelLimitError",
    "MetricConflictError",
    "MetricLabelError",
    "MetricValueError",
    "MissingLabelError",
    "NegativeIncrementError",
    "NoActiveFlowError",
    "QueryError",
    "SchemaError",
    "Settings",
    "StorageError",
    "UndeclaredLabelError",
    "UsageError",
    "__version__",
    "flow",
    "flush",
    "metrics",
    "setup",
    "shutdown",
    "stats",
    "step",
    "with_celery",
    "with_fastapi",
    "with_flask",
    "with_httpx",
    "with_requests",
]
