"""Live updates for the UI: one shared poller of the store, fanned out to subscribers.

Every ``interval_s`` (while anyone listens) the poller asks the store which
flows received events since its previous poll, by the events' ``inserted_at``
(when the store wrote them, so a lagging processor or a skewed client clock
cannot hide an update), re-reads those flows and hands each subscriber the
ones its tenant scope allows. A flow is re-read only when its event count or
last event time changed, so the overlap between poll windows costs nothing.

Bounded everywhere: one poll per interval whatever the number of
subscribers, at most ``max_flows`` flows re-read per poll, a bounded queue per
subscriber and a bounded number of subscribers. When a bound is hit,
subscribers get a ``resync`` message and reload their page through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from dashfrog._models import FlowSummary
from dashfrog.storage._base import SqlStore

log = logging.getLogger("dashfrog.web.live")

# inserted_at has one-second resolution and an insert is stamped when it
# starts, not when it becomes visible: each window reaches this far back.
OVERLAP_S = 5

_NOW = "SELECT toInt64(toUnixTimestamp(now())) AS now"

# Flows with events written since {since}, with what identifies their state.
_CHANGED = """
SELECT tenant, flow_id, toInt64(count()) AS n, toInt64(toUnixTimestamp64Micro(max(timestamp))) AS last_us
FROM events
WHERE (tenant, flow_id) IN (
    SELECT DISTINCT tenant, flow_id FROM events
    WHERE inserted_at >= toDateTime({since:Int64}) AND {scope}
)
GROUP BY tenant, flow_id
ORDER BY last_us DESC
LIMIT {limit:UInt32}
"""

_SUMMARY_FIELDS = set(FlowSummary.model_fields)
CLOSE = "close"  # the message that ends a stream


@dataclass(eq=False)
class Subscriber:
    """One stream: the tenant it may see (None: every tenant) and its queue."""

    tenant: str | None
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(maxsize=500))

    def offer(self, message: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            # Too slow a reader: drop what is queued, ask it to reload instead.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait({"type": "resync"})


class TooManySubscribers(Exception):
    pass


class LiveHub:
    """The shared poller and its subscribers, on the event loop serving the API."""

    def __init__(
        self,
        store: SqlStore,
        run: Any,
        *,
        interval_s: float = 1.0,
        max_flows: int = 100,
        max_subscribers: int = 200,
    ) -> None:
        self.store = store
        self.run = run
        self.interval_s = interval_s
        self.max_flows = max_flows
        self.max_subscribers = max_subscribers
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        # (tenant, flow_id) -> ((event count, last event µs), server second last seen)
        self._seen: dict[tuple[str, str], tuple[tuple[int, int], int]] = {}
        self._since: int | None = None
        self.polls = 0

    def subscribe(self, tenant: str | None) -> Subscriber:
        if len(self.subscribers) >= self.max_subscribers:
            raise TooManySubscribers(f"{self.max_subscribers} live streams are open already")
        sub = Subscriber(tenant)
        self.subscribers.add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="dashfrog-live")
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def close(self) -> None:
        """End every stream (so a server can stop) and the poller."""
        for sub in list(self.subscribers):
            while not sub.queue.empty():
                sub.queue.get_nowait()
            sub.queue.put_nowait({"type": CLOSE})
        self.subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _loop(self) -> None:
        # Ends (without awaiting in between) as soon as nobody listens;
        # subscribe() starts a new one.
        failures = 0
        while self.subscribers:
            started = time.monotonic()
            try:
                await self.poll()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                log.warning("live poll failed (%d in a row)", failures, exc_info=failures == 1)
            delay = self.interval_s * min(2**failures, 30)
            await asyncio.sleep(max(0.0, delay - (time.monotonic() - started)))
        self._since = None

    def _scope(self, params: dict[str, Any]) -> str:
        tenants: set[str] = set()
        for sub in self.subscribers:
            if sub.tenant is None:
                return "1"
            tenants.add(sub.tenant)
        names = []
        for i, tenant in enumerate(sorted(tenants)):
            params[f"t{i}"] = tenant
            names.append(f"{{t{i}:String}}")
        return f"tenant IN ({', '.join(names)})" if names else "0"

    async def poll(self) -> None:
        """One round: find changed flows, re-read them, hand them out."""
        now = int((await self.run(self.store.select, _NOW, None))[0]["now"])
        since = (self._since if self._since is not None else now) - OVERLAP_S
        self._since = now
        params: dict[str, Any] = {"since": since, "limit": self.max_flows * 20}
        sql = _CHANGED.replace("{scope}", self._scope(params))
        rows = await self.run(self.store.select, sql, params)
        self.polls += 1

        changed: list[tuple[str, str]] = []
        for row in rows:
            key = (row["tenant"], row["flow_id"])
            mark = (int(row["n"]), int(row["last_us"]))
            before = self._seen.get(key)
            self._seen[key] = (mark, now)
            if before is None or before[0] != mark:
                changed.append(key)
        # Forget flows that left the window; if they change again they come back.
        horizon = now - 2 * OVERLAP_S - 2
        for key in [k for k, (_, at) in self._seen.items() if at < horizon]:
            del self._seen[key]

        overflow = len(rows) >= params["limit"] or len(changed) > self.max_flows
        if overflow:
            # Those not re-read now must count as changed next time.
            for key in changed[self.max_flows :]:
                self._seen.pop(key, None)
        flows = []
        for tenant, flow_id in changed[: self.max_flows]:
            detail = await self.run(self.store.flow, flow_id, tenant)
            if detail is not None:
                flows.append(detail.model_dump(mode="json", include=_SUMMARY_FIELDS))
        self._publish(flows, resync=overflow)

    def _publish(self, flows: list[dict[str, Any]], *, resync: bool) -> None:
        for sub in list(self.subscribers):
            mine = [f for f in flows if sub.tenant is None or f["tenant"] == sub.tenant]
            if mine:
                sub.offer({"type": "flows", "flows": mine})
            if resync:
                sub.offer({"type": "resync"})
