"""The exceptions DashFrog raises. Every one derives from :class:`DashfrogError`.

::

    DashfrogError
     ├── ConfigurationError          a setting is invalid
     ├── UsageError                  the SDK was called the wrong way
     │    ├── InvalidArgumentError   (also a ValueError) empty name/tenant, bad label
     │    │    ├── LabelLimitError        too many labels, key or value too long
     │    │    ├── EmptyTenantError       a metric recorded without a tenant
     │    │    ├── MetricLabelError       labels that do not match the metric's declaration
     │    │    │    ├── UndeclaredLabelError   a label the metric did not declare
     │    │    │    └── MissingLabelError      a declared label not given
     │    │    ├── MetricValueError       a metric value that is not a finite number
     │    │    │    └── NegativeIncrementError  a counter given a negative increment
     │    │    └── MetricConflictError    a metric name declared twice, differently
     │    └── NoActiveFlowError      step/event/end with no current flow
     ├── SchemaError                 a message is not a readable DashFrog event
     ├── StorageError                ClickHouse refused or failed
     └── QueryError                  (also a ValueError) a query's filters are invalid

Transport trouble (broker down, queue full) is never raised into application
code: it is counted in ``dashfrog.stats()`` and logged at a bounded rate.
"""

from __future__ import annotations


class DashfrogError(Exception):
    """Root of every DashFrog exception."""


class ConfigurationError(DashfrogError):
    """A setting has a value DashFrog cannot use."""


class UsageError(DashfrogError):
    """The SDK was called in a way it does not support."""


class InvalidArgumentError(UsageError, ValueError):
    """An argument's value is invalid (empty name or tenant, unconvertible label)."""


class LabelLimitError(InvalidArgumentError):
    """Labels or attributes exceed the configured count or length limits."""


class EmptyTenantError(InvalidArgumentError):
    """A metric value was recorded with no tenant (or an empty one)."""


class MetricLabelError(InvalidArgumentError):
    """A metric was given labels that do not match the ones it declared."""


class UndeclaredLabelError(MetricLabelError):
    """A label the metric did not declare in ``labels=[...]``."""


class MissingLabelError(MetricLabelError):
    """A label the metric declared was not given."""


class MetricValueError(InvalidArgumentError):
    """A metric value is not a finite number (a str, None, a bool, NaN, infinity)."""


class NegativeIncrementError(MetricValueError):
    """A counter only goes up: ``add()`` was given a negative number."""


class MetricConflictError(InvalidArgumentError):
    """A metric name is already declared in this process with another kind,
    labels, pretty name or unit."""


class NoActiveFlowError(UsageError):
    """A step, event or flow.end() was called with no current flow."""


class SchemaError(DashfrogError):
    """A message cannot be decoded or does not satisfy the event contract."""


class StorageError(DashfrogError):
    """The store failed to execute a statement."""


class QueryError(DashfrogError, ValueError):
    """A query's arguments are invalid."""
