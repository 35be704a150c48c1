"""Open alert incidents in the UI: a header badge and a list, in a real headless Chromium
against a real uvicorn server whose evaluator (the app's lifespan) opens and resolves them."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashfrog._settings import Settings
from dashfrog.web import create_app
from tests.web._helpers import Server
from tests.web.test_alerts import MIN_US, RULES, SECRET, Receiver, _run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip("UI tests need Debian's chromium (/usr/bin/chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="UI tests need the playwright package")
expect = sync_api.expect
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, Any]]:
    from dashfrog.storage import open_store

    store = open_store(f"chdb://{tmp_path / 'db'}")
    store.migrate()
    receiver = Receiver()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(url=receiver.url))
    settings = Settings(alert_rules=str(rules), alert_webhook_secret=SECRET, alert_interval_s=0.2)  # type: ignore[call-arg]
    # lifespan on, as `dashfrog api` runs it: the evaluator lives as long as the server.
    try:
        with Server(create_app(store, settings), lifespan="on") as server:
            yield {"store": store, "url": server.url, "receiver": receiver}
    finally:
        receiver.close()
        store.close()


def test_badge_and_list_show_open_incidents_live(served: dict[str, Any]) -> None:
    store, receiver = served["store"], served["receiver"]
    now = time.time_ns() // 1000
    store.insert_events(_run("acme", "checkout", now - MIN_US, fail=True, env="prod").events, uuid.uuid4().hex)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(served["url"] + "/")
            badge = page.locator("#alerts-badge")
            expect(badge).to_have_text("1 open alert", timeout=15_000)
            expect(page.locator("#alerts-panel")).to_be_hidden()
            badge.click()
            item = page.locator("#alerts-panel .alert-item")
            expect(item).to_have_count(1)
            expect(item.locator(".alert-rule")).to_have_text("checkout-failed")
            expect(item.locator(".alert-tenant")).to_have_text("acme")
            expect(item.locator(".alert-desc")).to_contain_text("latest run failed")
            # The flow succeeds next time: the incident resolves and the page follows without a reload.
            store.insert_events(_run("acme", "checkout", now, env="prod").events, uuid.uuid4().hex)
            expect(badge).to_be_hidden(timeout=15_000)
            expect(page.locator("#alerts-panel")).to_be_hidden()
            assert errors == []
        finally:
            browser.close()
    assert [e for e, _ in receiver.events()] == ["opened", "resolved"]
