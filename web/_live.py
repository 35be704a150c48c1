"""Live updates for the UI: one shared poller of the store, fanned out to subscribers.

Every ``interval_s`` (while anyone listens) the poller asks the store which
flows received events since its previous poll, by the events' ``inserted_at``
(when the store wrote them, so a lagging processor or a skewed client clock
cannot hide an update), reads their summaries in the same query and hands each
subscriber those that changed and that its tenant scope allows. A flow is
handed out only when its summary differs from the last one sent, so the
overlap between poll windows costs nothing.

Bounded everywhere: one poll per interval whatever the number of
subscribers, at most ``max_flows`` flows handed out per poll, a bounded queue per
subscriber and a bounded number of subscribers. When a bound is hit,
subscribers get a ``resync`` message and reload their page through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from dashfrog.storage import Store

log = logging.getLogger("dashfrog.web.live")

# inserted_at has one-second resolution and an insert is stamped when it
# starts, not when it becomes visible: each window reaches this far back.
OVERLAP_S = 5

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
        store: Store,
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
        # (tenant, flow_id) -> (fingerprint of its summary, server second last seen)
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}
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

    def _tenants(self) -> list[str] | None:
        """The tenants someone is watching; None when a viewer sees every tenant."""
        tenants: set[str] = set()
        for sub in self.subscribers:
            if sub.tenant is None:
                return None
            tenants.add(sub.tenant)
        return sorted(tenants)

    async def poll(self) -> None:
        """One round: read the flows with new events, hand out those that changed."""
        limit = self.max_flows * 10
        if self._since is None:  # the first window ends at the server's clock, not ours
            self._since, _ = await self.run(self.store.changed_flows, None, [], 0)
        now, summaries = await self.run(
            self.store.changed_flows, self._since - OVERLAP_S, self._tenants(), limit
        )
        self._since = now
        self.polls += 1

        changed: list[dict[str, Any]] = []
        for summary in summaries:
            flow = summary.model_dump(mode="json")
            key = (flow["tenant"], flow["flow_id"])
            # Anything a viewer could see changed (late events with old
            # timestamps included): the summary itself is the fingerprint.
            mark = hash(json.dumps(flow, sort_keys=True))
            before = self._seen.get(key)
            self._seen[key] = (mark, now)
            if before is None or before[0] != mark:
                changed.append(flow)
        # Forget flows that left the window; if they change again they come back.
        horizon = now - 2 * OVERLAP_S - 2
        for key in [k for k, (_, at) in self._seen.items() if at < horizon]:
            del self._seen[key]

        overflow = len(summaries) >= limit or len(changed) > self.max_flows
        for flow in changed[self.max_flows :]:
            # Not handed out now: they count as changed next time.
            self._seen.pop((flow["tenant"], flow["flow_id"]), None)
        self._publish(changed[: self.max_flows], resync=overflow)

    def _publish(self, flows: list[dict[str, Any]], *, resync: bool) -> None:
        for sub in list(self.subscribers):
            mine = [f for f in flows if sub.tenant is None or f["tenant"] == sub.tenant]
            if mine:
                sub.offer({"type": "flows", "flows": mine})
            if resync:
                sub.offer({"type": "resync"})
