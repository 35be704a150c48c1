"""The exceptions DashFrog raises. Every one derives from :class:`DashfrogError`.

::

    DashfrogError
     ├── ConfigurationError          a setting is invalid
     ├── UsageError                  the SDK was called the wrong way
     │    ├── InvalidArgumentError   (also a ValueError) empty name/tenant, bad label
     │    ├── LabelLimitError        too many labels, key or value too long
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


class NoActiveFlowError(UsageError):
    """A step, event or flow.end() was called with no current flow."""


class SchemaError(DashfrogError):
    """A message cannot be decoded or does not satisfy the event contract."""


class StorageError(DashfrogError):
    """The store failed to execute a statement."""


class QueryError(DashfrogError, ValueError):
    """A query's arguments are invalid."""
