"""ClickHouse storage: DDL and migrations, the store interface, its chDB and
clickhouse-connect adapters and the read queries they share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dashfrog._exceptions import ConfigurationError
from dashfrog.storage._avro import (
    EncodedGroup,
    GroupResult,
    MalformedEventsError,
    UnsupportedSchema,
    group_suffix,
)
from dashfrog.storage._base import SchemaOutdatedError, SqlStore
from dashfrog.storage._dead_letters import DeadLetter
from dashfrog.storage._metrics import list_metrics, metric_info, metric_ratio, metric_series
from dashfrog.storage._sqlcheck import QueryLimitError, SqlLimits
from dashfrog.storage._store import Progress, Store

if TYPE_CHECKING:

    def _adapters_are_stores(store: SqlStore) -> Store:
        return store  # mypy checks SqlStore against the Store protocol here


def open_store(
    url: str | None = None,
    *,
    retention_days: int | None = None,
    stalled_after_s: float | None = None,
) -> Store:
    """Open the store at ``url`` (default: DASHFROG_CLICKHOUSE_URL).

    ``chdb://PATH`` is the embedded engine (one owning process);
    ``clickhouse://user:pass@host:8123/db`` (``clickhouses://`` for TLS) is a
    server or cluster. The driver is imported only for the scheme used.
    Call ``migrate()`` before the first write.
    """
    if url is None:
        from dashfrog._settings import get_settings

        url = get_settings().clickhouse_url
    options = {"retention_days": retention_days, "stalled_after_s": stalled_after_s}
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "chdb":
        from dashfrog.storage._chdb import ChdbStore

        return ChdbStore(url, **options)  # type: ignore[arg-type]
    if scheme in ("clickhouse", "clickhouses", "http", "https"):
        from dashfrog.storage._clickhouse import ClickhouseStore

        return ClickhouseStore(url, **options)  # type: ignore[arg-type]
    raise ConfigurationError(
        f"unsupported store URL {url!r}: use chdb://PATH or clickhouse://user:pass@host:8123/db"
    )


def chdb_owner(url: str) -> int | None:
    """The pid of another process holding the chDB database at ``url``
    (``chdb://PATH``), or None; see ``dashfrog up``."""
    from dashfrog.storage._chdb import chdb_owner as owner

    return owner(url)


__all__ = [
    "DeadLetter",
    "EncodedGroup",
    "GroupResult",
    "MalformedEventsError",
    "Progress",
    "QueryLimitError",
    "SchemaOutdatedError",
    "SqlLimits",
    "SqlStore",
    "Store",
    "UnsupportedSchema",
    "chdb_owner",
    "group_suffix",
    "list_metrics",
    "metric_info",
    "metric_ratio",
    "metric_series",
    "open_store",
]
