"""The Metrics view in a real headless Chromium against a real uvicorn server over chDB."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dashfrog._settings import Settings
from dashfrog.web import create_app
from tests.storage.test_metrics_store import counter_point, event, gauge_point, histogram_point
from tests.web._helpers import Server
from tests.web.test_ui import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, sync_api

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from dashfrog.storage import open_store

    store = open_store(f"chdb://{tmp_path_factory.mktemp('metrics-ui') / 'db'}")
    store.migrate()
    minutes = [NOW - timedelta(minutes=m) for m in (20, 10, 5)]
    store.insert_events(
        [
            event("api_calls", "counter", [counter_point("acme-corp", 60 * (i + 1), at, status="200") for i, at in enumerate(minutes)]
                  + [counter_point("globex", 6000, minutes[0], status="200")], ["status"], pretty_name="API Calls", unit="count"),
            event("request_duration_seconds", "histogram",
                  [histogram_point("acme-corp", [0.1, 0.2, 0.3, 2.0], at, endpoint="/api") for at in minutes], ["endpoint"],
                  pretty_name="Request Duration", unit="seconds"),
            event("monthly_quota", "gauge", [gauge_point("acme-corp", 420, 400, 450, minutes[-1], env="prod")], ["env"],
                  pretty_name="Monthly Quota", unit="requests"),
        ],
        "ui-metrics",
    )  # fmt: skip
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module")
def server(store: Any) -> Iterator[Server]:
    settings = Settings(
        admin_token="root-secret", tenant_tokens="acme-corp:acme-secret,globex:globex-secret"
    )
    with Server(create_app(store, settings, live_interval_s=0.25)) as running:
        yield running


@pytest.fixture
def page(server: Server) -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.js_errors = []
        page.on("pageerror", lambda e: page.js_errors.append(str(e)))
        try:
            yield page
        finally:
            context.close()
            browser.close()


def use_token(page: Any, server: Server, token: str) -> None:
    page.goto(server.url + "/#/metrics")
    page.fill("#token", token)
    page.click("#token-form button[type=submit]")


def test_metrics_view_draws_a_chart_per_metric(page: Any, server: Server) -> None:
    use_token(page, server, "root-secret")
    cards = page.locator("#metrics-cards .metric-card")
    cards.nth(2).wait_for()
    assert cards.count() == 3
    counter = page.locator('.metric-card[data-metric="api_calls"]')
    page.wait_for_function(
        """() => document.querySelector('.metric-card[data-metric="api_calls"] canvas')"""
    )
    # Every tenant: acme's 60 + 120 + 180 and globex's 6000.
    assert counter.locator(".metric-value").inner_text() == "total 6360 count"
    assert counter.locator(".chart-title").text_content() == "API Calls (count)"
    histogram = page.locator('.metric-card[data-metric="request_duration_seconds"]')
    page.wait_for_function(
        """() => document.querySelector('.metric-card[data-metric="request_duration_seconds"]').dataset.rows === '3'"""
    )
    assert histogram.locator(".metric-value").inner_text().startswith("12 values")
    assert "percentiles ±" in histogram.locator(".metric-meta").inner_text()
    assert histogram.locator(".u-legend").inner_text().count("p9") == 2  # p95 and p99 lines
    gauge = page.locator('.metric-card[data-metric="monthly_quota"]')
    page.wait_for_function(
        """() => document.querySelector('.metric-card[data-metric="monthly_quota"]').dataset.rows === '1'"""
    )
    assert gauge.locator(".metric-value").inner_text() == "last 420 requests"
    # Back to flows and again: the view is rebuilt, not duplicated.
    page.click("#nav-flows")
    page.locator("#list-view").wait_for(state="visible")
    assert page.locator("#metrics-view").is_hidden()
    page.click("#nav-metrics")
    cards.nth(2).wait_for()
    assert cards.count() == 3
    assert page.js_errors == []


def test_a_tenant_token_sees_its_own_points(page: Any, server: Server) -> None:
    use_token(page, server, "acme-secret")
    counter = page.locator('.metric-card[data-metric="api_calls"]')
    page.wait_for_function(
        """() => { const c = document.querySelector('.metric-card[data-metric="api_calls"] .metric-value');
                   return c && c.textContent.startsWith('total'); }"""
    )
    assert counter.locator(".metric-value").inner_text() == "total 360 count"
    tenant = page.locator("#metrics-filters input[name=tenant]")
    assert tenant.input_value() == "acme-corp" and tenant.evaluate("e => e.readOnly")
    assert page.js_errors == []
