"""The web UI in a real headless Chromium against a real uvicorn server over chDB.

What a support engineer relies on: the list shows a tenant's flows with the
right statuses, the filters narrow it, a click opens the failed step's error,
new flows appear live, label text from applications stays text, and a tenant
token never shows another tenant's flows (list or stream).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashfrog._settings import Settings
from dashfrog.runtime._broker import free_port
from dashfrog.schemas import Event, Kind, make_event
from dashfrog.web import create_app
from tests.web._helpers import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(
        "UI tests need Debian's chromium (/usr/bin/chromium): `make system-deps` or "
        "`apt-get install -y chromium chromium-driver`",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="UI tests need the playwright package")
expect = sync_api.expect

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
XSS = "<img src=x onerror=alert(1)>"
WAIT_MS = 10_000
expect.set_options(timeout=WAIT_MS)


class Flow:
    """The events one flow's SDK calls would emit."""

    def __init__(self, tenant: str, name: str, *, ago_s: float = 60, labels: dict[str, str] | None = None,
                 service: str = "orders") -> None:
        self.tenant, self.name, self.service = tenant, name, service
        # Relative to when the module's store is seeded, not when it was imported:
        # a long suite would otherwise age the running flow into 'stalled'.
        self.t = int(time.time() * 1_000_000) - int(ago_s * 1_000_000)
        self.flow_id = f"{self.t // 1000:012x}{uuid.uuid4().hex[:20]}"
        self.labels = labels or {}
        self.events: list[Event] = []
        self._event("flow_started", labels=dict(self.labels))

    def _event(self, kind: Kind, **fields: Any) -> None:
        self.t += 250_000
        fields = {"service": self.service, "host": "host-1", "trace_id": "ab" * 16, "span_id": "cd" * 8,
                  "sdk_version": "test", **fields}
        self.events.append(
            make_event(kind, flow_id=self.flow_id, tenant=self.tenant, flow_name=self.name, timestamp=self.t,
                       **fields)
        )

    def step(self, name: str, *, parent: str | None = None, error: str | None = None, end: bool = True,
             service: str | None = None, **attributes: str) -> str:
        step_id = uuid.uuid4().hex[:16]
        common = {"step_id": step_id, "step_name": name, "parent_step_id": parent, "service": service or self.service}
        self._event("step_started", attributes=attributes, **common)
        if end:
            self.end_step(step_id, name, error=error, parent=parent, service=service)
        return step_id

    def end_step(self, step_id: str, name: str, *, error: str | None = None, parent: str | None = None,
                 service: str | None = None) -> None:
        self._event(
            "step_ended", step_id=step_id, step_name=name, parent_step_id=parent, service=service or self.service,
            status="failed" if error else "success",
            error={"type": "ValueError", "message": error,
                   "stack": 'Traceback (most recent call last):\n  File "app.py", line 7\nValueError: ' + error}
            if error else None,
        )

    def event(self, name: str, **attributes: str) -> None:
        self._event("flow_event", event_name=name, attributes=attributes)

    def end(self, error: str | None = None) -> Flow:
        self._event("flow_ended", status="failed" if error else "success",
                    error={"type": "ValueError", "message": error, "stack": "tb"} if error else None)
        return self


def _flows() -> dict[str, Flow]:
    ok = Flow("acme-corp", "data_import", ago_s=120, labels={"env": "prod", "region": "eu"})
    process = ok.step("validate", rows="120")
    ok.step("parse", parent=process, service="parser")
    ok.event("webhook_received", source="stripe")
    ok.end()

    failed = Flow("acme-corp", "data_import", ago_s=90, labels={"env": "prod"})
    failed.step("validate")
    failed.step("process", error="Invalid data format")
    failed.end("Invalid data format")

    running = Flow("acme-corp", "webhook_processing", ago_s=30, labels={"env": "staging", "note": XSS})
    running.step("receive", end=False)

    stalled = Flow("acme-corp", "data_import", ago_s=3 * 3600, labels={"env": "prod"})
    stalled.step("read", end=False)

    other = Flow("globex", "billing", ago_s=60, labels={"env": "prod"}, service="billing")
    other.step("charge", error="card declined")
    other.end("card declined")

    other_ok = Flow("globex", "data_import", ago_s=45, labels={"env": "staging"})
    other_ok.step("validate")
    other_ok.end()
    return {"ok": ok, "failed": failed, "running": running, "stalled": stalled, "other": other, "other_ok": other_ok}


EXPECTED = {"ok": "success", "failed": "failed", "running": "running", "stalled": "stalled",
            "other": "failed", "other_ok": "success"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from dashfrog.storage import open_store

    store = open_store(f"chdb://{tmp_path_factory.mktemp('ui') / 'db'}", stalled_after_s=600)
    store.migrate()
    flows = _flows()
    store.insert_events([e for f in flows.values() for e in f.events], "ui-seed")
    store.seeded = flows
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module")
def open_server(store: Any) -> Iterator[Server]:
    with Server(create_app(store, Settings(), live_interval_s=0.25)) as server:
        yield server


@pytest.fixture(scope="module")
def secured_server(store: Any) -> Iterator[Server]:
    settings = Settings(admin_token="root-secret", tenant_tokens="acme-corp:acme-secret,globex:globex-secret")
    with Server(create_app(store, settings, live_interval_s=0.25)) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.js_errors = []
    page.on("pageerror", lambda e: page.js_errors.append(str(e)))
    try:
        yield page
    finally:
        context.close()


def rows(page: Any) -> Any:
    return page.locator("#flows tbody tr")


def row(page: Any, flow: Flow) -> Any:
    return page.locator(f'#flows tbody tr[data-flow-id="{flow.flow_id}"]')


def shown_ids(page: Any) -> set[str]:
    return set(page.eval_on_selector_all("#flows tbody tr", "rs => rs.map(r => r.dataset.flowId)"))


def expect_ids(page: Any, expected: set[str]) -> None:
    """Wait (with the page's deadline) until the list shows exactly ``expected``."""
    try:
        page.wait_for_function(
            """want => JSON.stringify([...document.querySelectorAll('#flows tbody tr')]
                       .map(r => r.dataset.flowId).sort()) === JSON.stringify(want)""",
            arg=sorted(expected),
        )
    except sync_api.TimeoutError:
        raise AssertionError(f"list shows {sorted(shown_ids(page))}, expected {sorted(expected)}") from None


def ids(store: Any, *names: str) -> set[str]:
    return {store.seeded[n].flow_id for n in names}


def wait_live(page: Any) -> None:
    expect(page.locator("#live")).to_have_attribute("data-state", "on")


def test_list_shows_flows_newest_first_with_statuses(page: Any, store: Any, open_server: Server) -> None:
    page.goto(open_server.url + "/")
    expect(rows(page)).to_have_count(len(store.seeded))
    for name, status in EXPECTED.items():
        flow = store.seeded[name]
        expect(row(page, flow)).to_have_attribute("data-status", status)
        expect(row(page, flow).locator("td.status")).to_have_text(status)
    failed = row(page, store.seeded["failed"])
    expect(failed.locator("td.step")).to_contain_text("process")
    expect(failed.locator("td.step")).to_contain_text("Invalid data format")
    expect(row(page, store.seeded["running"]).locator("td.step")).to_have_text("receive")
    expect(row(page, store.seeded["ok"]).locator("td.labels")).to_contain_text("region=eu")
    order = page.eval_on_selector_all("#flows tbody tr", "rs => rs.map(r => r.dataset.flowId)")
    assert order == sorted(order, reverse=True)
    # Stats for everything on screen: 6 runs, 2 of 4 finished ones succeeded.
    expect(page.locator("#stats .card").first).to_contain_text("6")
    expect(page.locator("#stats")).to_contain_text("50.0 %")
    assert page.js_errors == []


def test_filters_narrow_the_list(page: Any, store: Any, open_server: Server) -> None:
    page.goto(open_server.url + "/")
    expect(rows(page)).to_have_count(len(store.seeded))
    form = page.locator("#filters")

    form.locator("input[name=tenant]").fill("globex")
    form.locator("button[type=submit]").click()
    expect_ids(page, ids(store, "other", "other_ok"))
    expect(page.locator("#stats")).to_contain_text("globex")

    form.locator("input[name=tenant]").fill("acme-corp")
    form.locator("select[name=status]").select_option("failed")
    form.locator("button[type=submit]").click()
    expect_ids(page, ids(store, "failed"))

    form.locator("select[name=status]").select_option("stalled")
    form.locator("button[type=submit]").click()
    expect_ids(page, ids(store, "stalled"))

    form.locator("select[name=status]").select_option("")
    form.locator("input[name=labels]").fill("env=prod")
    form.locator("button[type=submit]").click()
    expect_ids(page, ids(store, "ok", "failed", "stalled"))

    form.locator("input[name=labels]").fill("env=prod, region=eu")
    form.locator("button[type=submit]").click()
    expect_ids(page, ids(store, "ok"))

    # The filters live in the URL: a link opens the same view; the time range drops the 3 h old flow.
    page.goto(open_server.url + "/#/?name=data_import&range=3600")
    expect_ids(page, ids(store, "ok", "failed", "other_ok"))

    page.locator("#filters-clear").click()
    expect(rows(page)).to_have_count(len(store.seeded))


def test_paging_by_cursor(page: Any, store: Any, open_server: Server) -> None:
    page.goto(open_server.url + "/#/?limit=4")
    expect(rows(page)).to_have_count(4)
    first_page = shown_ids(page)
    page.locator("#more").click()
    expect(rows(page)).to_have_count(len(store.seeded))
    expect(page.locator("#more")).to_be_hidden()
    assert first_page < shown_ids(page) == ids(store, *store.seeded)
    order = page.eval_on_selector_all("#flows tbody tr", "rs => rs.map(r => r.dataset.flowId)")
    assert order == sorted(order, reverse=True)


def test_click_opens_detail_with_the_failed_steps_error(page: Any, store: Any, open_server: Server) -> None:
    page.goto(open_server.url + "/")
    row(page, store.seeded["failed"]).locator("td.tenant").click()
    detail = page.locator("#detail-view")
    expect(detail).to_be_visible()
    expect(page.locator("#list-view")).to_be_hidden()
    failed_step = detail.locator('li.step[data-step="process"]')
    expect(failed_step.locator(".badge").first).to_have_text("failed")
    expect(failed_step.locator(".error-message")).to_have_text("Invalid data format")
    stack = failed_step.locator("details.stack")
    expect(stack.locator("pre")).to_be_hidden()  # collapsed until asked for
    stack.locator("summary").click()
    expect(stack.locator("pre")).to_contain_text("Traceback (most recent call last)")
    expect(detail.locator('li.step[data-step="validate"] .badge').first).to_have_text("success")
    expect(detail.locator("dl.meta")).to_contain_text("acme-corp")
    text = detail.inner_text()
    assert "[object" not in text and "null" not in text and "undefined" not in text

    # The nested step tree, attributes, services and custom events of the successful flow.
    page.locator("a.back").click()
    row(page, store.seeded["ok"]).locator("td.name a").click()
    parent = detail.locator('li.step[data-step="validate"]')
    expect(parent.locator('ul.steps > li.step[data-step="parse"]')).to_be_visible()
    expect(parent.locator(".chip.attr").first).to_contain_text("rows=120")
    expect(parent.locator('li[data-step="parse"] .step-svc')).to_have_text("parser")
    expect(detail.locator("table.events")).to_contain_text("webhook_received")
    expect(detail.locator("table.events")).to_contain_text("source=stripe")
    assert page.js_errors == []


def test_label_markup_is_shown_as_text(page: Any, store: Any, open_server: Server) -> None:
    page.goto(open_server.url + "/")
    labels = row(page, store.seeded["running"]).locator("td.labels")
    expect(labels).to_contain_text(XSS)
    assert page.locator("#flows img").count() == 0
    row(page, store.seeded["running"]).locator("td.name a").click()
    expect(page.locator("#detail-view .chips")).to_contain_text(XSS)
    assert page.locator("img").count() == 0
    assert page.dialogs == []


def test_new_flows_and_changes_appear_live(page: Any, store: Any, open_server: Server) -> None:
    page.goto(open_server.url + "/#/?tenant=acme-corp")
    expect(rows(page)).to_have_count(4)
    wait_live(page)
    page.evaluate("() => { window.__sameDocument = true; }")

    fresh = Flow("acme-corp", "live_import", ago_s=0, labels={"env": "prod"})
    fresh.step("read", end=False)
    stranger = Flow("globex", "live_import", ago_s=0)
    store.insert_events(fresh.events + stranger.events, "ui-live-1")
    expect(row(page, fresh)).to_have_attribute("data-status", "running")
    expect(rows(page).first).to_have_attribute("data-flow-id", fresh.flow_id)  # newest first

    # The same flow finishing updates its row in place.
    before = len(fresh.events)
    fresh.end_step(fresh.events[1]["step_id"], "read", error="boom")
    fresh.end("boom")
    store.insert_events(fresh.events[before:], "ui-live-2")
    expect(row(page, fresh)).to_have_attribute("data-status", "failed")
    expect(row(page, fresh).locator("td.step")).to_contain_text("boom")
    expect(row(page, fresh)).to_have_count(1)
    assert page.evaluate("() => window.__sameDocument") is True  # no reload
    assert row(page, stranger).count() == 0  # filtered to acme-corp


def test_tenant_token_sees_only_its_tenant(page: Any, store: Any, secured_server: Server) -> None:
    page.goto(secured_server.url + "/")
    expect(page.locator("#notice")).to_contain_text("token")
    expect(rows(page)).to_have_count(0)

    page.locator("#token").fill("acme-secret")
    page.locator("#token-form button[type=submit]").click()
    expect(page.locator("#who")).to_have_text("tenant acme-corp")
    expect(page.locator("#notice")).to_be_hidden()
    expect(page.locator("#filters input[name=tenant]")).to_be_disabled()
    wait_live(page)
    acme_now = {r.flow_id for r in store.seeded.values() if r.tenant == "acme-corp"}
    expect(rows(page)).not_to_have_count(0)
    assert shown_ids(page) >= acme_now
    assert all(t == "acme-corp" for t in page.eval_on_selector_all("#flows td.tenant", "cs => cs.map(c => c.textContent)"))
    assert stored_token(page) == "acme-secret"

    # Asking for another tenant in the URL does not widen it.
    page.goto(secured_server.url + "/#/?tenant=globex")
    expect(page.locator("#who")).to_have_text("tenant acme-corp")
    expect(rows(page)).not_to_have_count(0)
    assert {t for t in page.eval_on_selector_all("#flows td.tenant", "cs => cs.map(c => c.textContent)")} == {"acme-corp"}
    wait_live(page)

    # Live: another tenant's new flow never shows; our own does (same poll).
    theirs = Flow("globex", "secret_job", ago_s=0, labels={"env": "prod"}).end()
    ours = Flow("acme-corp", "visible_job", ago_s=0).end()
    store.insert_events(theirs.events + ours.events, "ui-token-live")
    expect(row(page, ours)).to_have_attribute("data-status", "success")
    assert row(page, theirs).count() == 0
    expect(page.locator("body")).not_to_contain_text("secret_job")

    # A foreign flow's detail is not found with this token.
    page.goto(secured_server.url + f"/#/flow/{store.seeded['other'].flow_id}?tenant=globex")
    expect(page.locator("#detail-view")).to_contain_text("No flow")
    expect(page.locator("#detail-view")).not_to_contain_text("card declined")


def stored_token(page: Any) -> Any:
    return page.evaluate("() => sessionStorage.getItem('dashfrog.token')")


def _stream_until(url: str, token: str | None, params: dict[str, str], want: str, deadline_s: float,
                  on_open: Any = None) -> list[dict[str, Any]]:
    """Read /api/stream until a flows message carries flow ``want``; every flow seen."""
    seen: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + deadline_s
    with httpx.stream("GET", url + "/api/stream", params=params, headers=headers, timeout=deadline_s) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in resp.iter_lines():
            assert time.monotonic() < deadline, f"no update for {want} within {deadline_s}s"
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event == "hello" and on_open:
                    on_open()
            elif line.startswith("data:") and event == "flows":
                seen += json.loads(line.split(":", 1)[1])["flows"]
                if any(f["flow_id"] == want for f in seen):
                    return seen
    raise AssertionError("stream ended")


def test_stream_is_scoped_to_the_token_tenant(store: Any, secured_server: Server) -> None:
    url = secured_server.url
    assert httpx.get(url + "/api/stream").status_code == 401
    assert httpx.get(url + "/api/stream", params={"token": "acme-secret"}).status_code == 401  # header only
    forbidden = httpx.get(url + "/api/stream", params={"tenant": "globex"}, headers={"Authorization": "Bearer acme-secret"})
    assert forbidden.status_code == 403

    theirs = Flow("globex", "stream_job", ago_s=0).end()
    # Written now with two-hour-old timestamps (a lagging processor): still news.
    ours = Flow("acme-corp", "stream_job", ago_s=2 * 3600).end()
    seen = _stream_until(url, "acme-secret", {}, ours.flow_id, 10,
                         on_open=lambda: store.insert_events(theirs.events + ours.events, "ui-stream"))
    assert {f["tenant"] for f in seen} == {"acme-corp"}
    assert theirs.flow_id not in {f["flow_id"] for f in seen}
    mine = next(f for f in seen if f["flow_id"] == ours.flow_id)
    assert mine["status"] == "success" and mine["name"] == "stream_job"

    # The admin sees both tenants' updates.
    late = Flow("globex", "stream_job", ago_s=0).end()
    seen = _stream_until(url, "root-secret", {}, late.flow_id, 10,
                         on_open=lambda: store.insert_events(late.events, "ui-stream-2"))
    assert late.flow_id in {f["flow_id"] for f in seen}


def test_dashfrog_api_stops_promptly_with_streams_open(store: Any) -> None:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from dashfrog.web._commands import serve_api_until

    settings = Settings(api_port=free_port())
    url = f"http://127.0.0.1:{settings.api_port}"

    async def main() -> tuple[list[str], float]:
        stop = asyncio.Event()
        server = asyncio.create_task(serve_api_until(stop, store, settings))
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(200):
                try:
                    if (await client.get(url + "/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            async with client.stream("GET", url + "/api/stream") as stream:
                lines = stream.aiter_lines()
                assert await anext(lines) == "event: hello"
                started = time.monotonic()
                stop.set()
                rest = [line async for line in lines]  # the server ends the stream
                await asyncio.wait_for(server, 10)
        return rest, time.monotonic() - started

    # Its own thread and loop: Playwright's sync API holds this thread's loop.
    with ThreadPoolExecutor(1) as pool:
        rest, took = pool.submit(asyncio.run, main()).result(30)
    assert "event: close" not in rest
    # Under the 3 s graceful-shutdown timeout an open stream would otherwise hold it for.
    assert took < 2.5, f"the API took {took:.1f}s to stop with a stream open"


def test_page_is_served_with_a_strict_content_security_policy(open_server: Server) -> None:
    page = httpx.get(open_server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(open_server.url + "/static/app.js").status_code == 200
    assert httpx.get(open_server.url + "/static/../_app.py").status_code == 404


# -- issue 13: timeline, live detail, charts, export -------------------------------------------------

def _at(flow: Flow, offset_ms: float) -> Flow:
    """Place the flow's next event ``offset_ms`` after its start (``_event`` adds 250 ms first)."""
    flow.t = flow.start_us + int(offset_ms * 1000) - 250_000
    return flow


def _timed_flow(tenant: str = "initech") -> Flow:
    """checkout: call_payments runs 10..361 ms, its children 18 ms of it; one retried attempt."""
    flow = Flow(tenant, "checkout", ago_s=20, service="web")
    flow.start_us = flow.events[0]["timestamp"]
    pay = {"step_id": "pay", "step_name": "call_payments", "service": "payments"}
    _at(flow, 2)._event("step_started", step_id="cart", step_name="validate_cart")
    _at(flow, 8)._event("step_ended", step_id="cart", step_name="validate_cart", status="success")
    _at(flow, 10)._event("step_started", **pay)
    for step_id, name, start, end, status in (("fraud", "fraud_check", 20, 28, "success"),
                                              ("try1", "charge_card", 30, 34, "retried"),
                                              ("try2", "charge_card", 36, 42, "success")):
        common = {"step_id": step_id, "step_name": name, "parent_step_id": "pay", "service": "payments"}
        _at(flow, start)._event("step_started", **common)
        error = {"type": "Retry", "message": "gateway timeout", "stack": ""} if status == "retried" else None
        _at(flow, end)._event("step_ended", status=status, error=error, **common)
    _at(flow, 361)._event("step_ended", status="success", **pay)
    _at(flow, 400)._event("flow_ended", status="success")
    return flow


def test_detail_timeline_shows_where_the_time_went(browser: Any, store: Any, open_server: Server) -> None:
    flow = _timed_flow()
    store.insert_events(flow.events, "ui-timeline")
    # A viewer in Paris: times in their zone, 24-hour, with the zone written out.
    context = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id="Europe/Paris")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{open_server.url}/#/flow/{flow.flow_id}?tenant=initech")
        timeline = page.locator("#detail-view .timeline")
        pay = timeline.locator('.tl-row[data-step="call_payments"]')
        expect(pay).to_have_attribute("data-offset-ms", "10.000")
        expect(pay).to_have_attribute("data-duration-ms", "351.000")
        expect(pay).to_have_attribute("data-gap-ms", "333.000")  # 351 ms, children ran 8 + 4 + 6 ms
        expect(pay.locator(".tl-gap")).to_have_text("333.0 ms not in child steps")
        expect(pay.locator(".tl-offset")).to_have_text("+10.0 ms")
        expect(pay.locator(".tl-svc")).to_have_text("payments")
        flow_row = timeline.locator('.tl-row[data-kind="flow"]')
        expect(flow_row).to_have_attribute("data-duration-ms", "400.000")

        # Nesting: children one level deeper, their bars inside the parent's, in start order.
        fraud = timeline.locator('.tl-row[data-step="fraud_check"]')
        expect(fraud).to_have_attribute("data-depth", str(int(pay.get_attribute("data-depth")) + 1))
        tries = timeline.locator('.tl-row[data-step="charge_card"]')
        expect(tries).to_have_count(2)
        boxes = {name: timeline.locator(f'.tl-row[data-step="{name}"] .tl-bar').first.bounding_box()
                 for name in ("call_payments", "fraud_check", "validate_cart")}
        retry_box = tries.nth(0).locator(".tl-bar").bounding_box()
        parent = boxes["call_payments"]
        for child in (boxes["fraud_check"], retry_box):
            assert parent["x"] - 1 <= child["x"] and child["x"] + child["width"] <= parent["x"] + parent["width"] + 1
        assert boxes["validate_cart"]["x"] < boxes["fraud_check"]["x"] < retry_box["x"]
        # 351 ms of a 400 ms flow: the bar's width is to scale.
        whole = timeline.locator('.tl-row[data-kind="flow"] .tl-bar').bounding_box()
        assert parent["width"] / whole["width"] == pytest.approx(351 / 400, abs=0.01)
        assert (parent["x"] - whole["x"]) / whole["width"] == pytest.approx(10 / 400, abs=0.01)

        # The retried attempt reads as retried, not failed; a flow that then succeeded has no error box.
        expect(tries.nth(0)).to_have_attribute("data-status", "retried")
        expect(tries.nth(0).locator(".tl-bar")).to_have_class(re.compile(r"\btl-retried\b"))
        expect(tries.nth(1)).to_have_attribute("data-status", "success")
        expect(page.locator("#detail-view h2", has_text=re.compile("^Error$"))).to_have_count(0)
        expect(page.locator("#detail-view .error:not(.retried)")).to_have_count(0)

        # Each service has its own colour.
        colour = "el => getComputedStyle(el).getPropertyValue('--svc').trim()"
        web = timeline.locator('.tl-row[data-step="validate_cart"] .tl-bar').evaluate(colour)
        payments = timeline.locator('.tl-row[data-step="fraud_check"] .tl-bar').evaluate(colour)
        assert web and payments and web != payments
        expect(timeline.locator(".tl-legend")).to_contain_text("payments")

        # Times: ISO order, 24-hour clock, milliseconds, the zone shown.
        started = page.locator("dl.meta dt", has_text="Started").locator("xpath=following-sibling::dd[1]")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(flow.start_us / 1e6 + 3600))  # Paris is UTC+1 in winter
        expect(started).to_have_text(f"{when}.{flow.start_us // 1000 % 1000:03d} UTC+01:00")
        assert "AM" not in page.locator("#detail-view").inner_text() and "PM" not in page.locator("#detail-view").inner_text()
        assert errors == []
    finally:
        context.close()


def test_linked_detail_page_updates_live(page: Any, store: Any, open_server: Server) -> None:
    flow = Flow("initech", "provisioning", ago_s=5, service="provisioner")
    step_id = flow.step("create_vm", end=False)
    store.insert_events(flow.events, "ui-detail-live-1")
    page.goto(f"{open_server.url}/#/flow/{flow.flow_id}?tenant=initech")  # opened from a link, not the list
    expect(page.locator("#detail-view .detail-title .badge")).to_have_text("running")
    wait_live(page)
    page.evaluate("() => { window.__sameDocument = true; }")

    before = len(flow.events)
    flow.end_step(step_id, "create_vm")
    flow.step("attach_disk", service="storage")
    flow.end()
    store.insert_events(flow.events[before:], "ui-detail-live-2")
    started = time.monotonic()
    expect(page.locator("#detail-view .detail-title .badge")).to_have_text("success", timeout=5000)
    expect(page.locator('#detail-view .tl-row[data-step="attach_disk"]')).to_have_attribute("data-status", "success")
    expect(page.locator('#detail-view .tl-row[data-step="create_vm"]')).to_have_attribute("data-status", "success")
    assert time.monotonic() - started < 5
    assert page.evaluate("() => window.__sameDocument") is True  # updated in place, no reload
    assert page.js_errors == []


def _overview(url: str, **params: str) -> dict[str, Any]:
    return httpx.get(url + "/api/stats/overview", params=params).json()


def test_stats_and_charts_follow_every_filter(page: Any, store: Any, open_server: Server) -> None:
    elsewhere: list[str] = []  # the page must work offline: the chart library is served with it
    page.on("request", lambda r: None if r.url.startswith((open_server.url, "blob:", "data:")) else elsewhere.append(r.url))
    page.goto(open_server.url + "/#/?tenant=acme-corp&status=failed")
    want = _overview(open_server.url, tenant="acme-corp", status="failed")
    assert want["runs"] >= 1 and want["runs"] == want["failed"]
    expect(page.locator("#stats")).to_have_attribute("data-runs", str(want["runs"]))
    expect(page.locator("#stats .card").first).to_have_text(f"{want['runs']}runs")
    expect(rows(page)).to_have_count(want["runs"])
    charts = page.locator("#charts")
    expect(charts).to_have_attribute("data-total", str(want["runs"]))
    expect(charts).to_have_attribute("data-failed", str(want["runs"]))
    expect(charts).to_have_attribute("data-success", "0")
    expect(page.locator("#chart-runs canvas")).to_have_count(1)
    expect(page.locator("#chart-durations canvas")).to_have_count(1)
    bars = page.locator("#stats .histogram .hist-col")
    expect(bars.first).to_be_visible()
    counts = [int(c) for c in bars.evaluate_all("cs => cs.map(c => c.dataset.count)")]
    assert sum(counts) == want["failed"]  # every failed flow has a duration

    # Labels too: the cards and charts change with them.
    page.goto(open_server.url + "/#/?tenant=acme-corp&labels=env%3Dstaging")
    want = _overview(open_server.url, tenant="acme-corp", labels=json.dumps({"env": "staging"}))
    expect(page.locator("#stats")).to_have_attribute("data-runs", str(want["runs"]))
    expect(charts).to_have_attribute("data-total", str(want["runs"]))
    expect(rows(page)).to_have_count(want["runs"])
    assert page.js_errors == [] and elsewhere == []


def test_export_buttons_download_the_current_view(page: Any, store: Any, open_server: Server) -> None:
    # Earlier tests in this module add flows; wait until the page shows all of
    # globex's, not a first render that the live stream is still filling in.
    listed = httpx.get(f"{open_server.url}/api/flows", params={"tenant": "globex", "limit": 500}, timeout=10)
    expected = {f["flow_id"] for f in listed.json()["flows"]}
    page.goto(open_server.url + "/#/?tenant=globex")
    expect(rows(page)).to_have_count(len(expected))
    shown = shown_ids(page)
    assert shown == expected
    with page.expect_download() as info:
        page.locator('[data-export="csv"]').click()
    download = info.value
    assert download.suggested_filename.startswith("flows-") and download.suggested_filename.endswith(".csv")
    import csv
    import io

    exported = list(csv.DictReader(io.StringIO(Path(download.path()).read_text())))
    assert {r["flow_id"] for r in exported} == shown and {r["tenant"] for r in exported} == {"globex"}

    with page.expect_download() as info:
        page.locator('[data-export="ndjson"]').click()
    lines = Path(info.value.path()).read_text().splitlines()
    assert {json.loads(line)["flow_id"] for line in lines} == shown

    failed = store.seeded["other"]
    page.goto(f"{open_server.url}/#/flow/{failed.flow_id}?tenant=globex")
    with page.expect_download() as info:
        page.locator("#export-flow").click()
    body = json.loads(Path(info.value.path()).read_text())
    assert body["flow_id"] == failed.flow_id and body["status"] == "failed"
    assert {e["event_id"] for e in body["raw_events"]} == {e["event_id"] for e in failed.events}
    assert page.js_errors == []
