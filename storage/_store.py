"""The store interface. Adapters (chDB, clickhouse-connect) implement it and share
the DDL and queries; :func:`open_store` picks one by the URL's scheme and
imports its driver only then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from dashfrog._models import FlowDetail, FlowFilter, FlowList, FlowStats, StatsFilter
from dashfrog.schemas import Event
from dashfrog.storage._avro import EncodedGroup, GroupResult


class Store(Protocol):
    """Where raw events land and flows and steps are projected."""

    url: str

    def migrate(self) -> None:
        """Create or upgrade tables; safe to run any number of times."""

    def insert_events(self, events: Sequence[Event], token: str) -> None:
        """Write ``events`` durably and project them into flows and steps.

        ``token`` names the batch deterministically (e.g. topic/partition/offset
        range): writing the same batch with the same token again, after a crash,
        changes nothing that queries return.
        """

    def insert_encoded(self, groups: Sequence[EncodedGroup], token: str) -> list[GroupResult]:
        """Write the events of undecoded messages, grouped by writer schema.

        Each group is (writer schema JSON, message bodies after their 10-byte
        single-object prefix). Valid events are written under ``token`` (plus
        a per-group suffix); one result per group gives the events written and
        the indexes of messages holding invalid events (not written). Raises
        MalformedEventsError naming the first group that does not read (groups
        before it were written), StorageError when the engine fails.
        """

    def select(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a read query with bound ``{name:Type}`` parameters; rows as dicts."""

    def rebuild(self) -> None:
        """Re-project flows and steps from the raw events table."""

    def find_flows(self, flt: FlowFilter, *, now: datetime | None = None) -> FlowList:
        """Flows matching a validated filter, newest first (keyset pages by flow id)."""

    def flow(
        self, flow_id: str, tenant: str | None = None, *, now: datetime | None = None
    ) -> FlowDetail | None:
        """One flow with its step tree, errors and custom events; None if unknown."""

    def find_stats(self, flt: StatsFilter, *, now: datetime | None = None) -> FlowStats:
        """Runs, success rate, duration percentiles and failures per step."""

    def close(self) -> None: ...
