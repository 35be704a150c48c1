"""The SDK: customer-scoped flows and steps, their context across services and
the background sender of their Avro events.

>>> from dashfrog import flow, step
>>> with flow.start(name="data_import", tenant="acme-corp"):
...     with step.start("validate"):
...         ...
"""

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from dashfrog import flow, metrics, step
    from dashfrog._api import flush, setup, shutdown, stats
    from dashfrog._flow import SDK_VERSION as __version__
    from dashfrog._instrument import (
        with_celery,
        with_fastapi,
        with_flask,
        with_httpx,
        with_requests,
    )
    from dashfrog._settings import Settings

# name -> (module, attribute or None for the module itself). Imported on first
# use, so that the command line (``dashfrog --help``), which lives under this
# package, does not pay for the SDK's machinery it never touches.
_LAZY: dict[str, tuple[str, str | None]] = {
    "Settings": ("dashfrog._settings", "Settings"),
    "__version__": ("dashfrog._flow", "SDK_VERSION"),
    "flow": ("dashfrog.flow", None),
    "flush": ("dashfrog._api", "flush"),
    "metrics": ("dashfrog.metrics", None),
    "setup": ("dashfrog._api", "setup"),
    "shutdown": ("dashfrog._api", "shutdown"),
    "stats": ("dashfrog._api", "stats"),
    "step": ("dashfrog.step", None),
    "with_celery": ("dashfrog._instrument", "with_celery"),
    "with_fastapi": ("dashfrog._instrument", "with_fastapi"),
    "with_flask": ("dashfrog._instrument", "with_flask"),
    "with_httpx": ("dashfrog._instrument", "with_httpx"),
    "with_requests": ("dashfrog._instrument", "with_requests"),
}


def __getattr__(name: str) -> object:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'dashfrog' has no attribute {name!r}")
    import importlib

    module_name, attribute = target
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
