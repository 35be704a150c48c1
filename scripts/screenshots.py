"""Retake the README's screenshots of the web UI in headless Chromium.

    .venv/bin/python scripts/screenshots.py [--out docs/screens] [--chromium /usr/bin/chromium]

Seeds a throw-away chDB store with a demo-like day of flows (three tenants,
nested steps across services, failures, a retried attempt, running and
stalled flows), serves the real API and UI over it on a loopback port, and
saves PNGs of the flow list with its charts, a flow's timeline and the runs
chart. Needs the ``web`` extra, Playwright's Python package and Debian's
``chromium`` (``make system-deps``); Playwright's own browser download is not
used.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from dashfrog.schemas import Event, Kind, make_event

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]


class DemoFlow:
    """The events one flow's SDK calls would emit, on a clock of its own."""

    def __init__(self, tenant: str, name: str, start_us: int, service: str, labels: dict[str, str]) -> None:
        self.tenant, self.name, self.service = tenant, name, service
        self.t = start_us
        self.flow_id = f"{start_us // 1000:012x}{uuid.uuid4().hex[:20]}"
        self.events: list[Event] = []
        self.emit("flow_started", labels=labels)

    def emit(self, kind: Kind, **fields: Any) -> None:
        fields = {"service": self.service, "host": f"{self.service}-7f9c", "trace_id": uuid.uuid4().hex,
                  "span_id": uuid.uuid4().hex[:16], "sdk_version": "demo", **fields}  # fmt: skip
        self.events.append(
            make_event(kind, flow_id=self.flow_id, tenant=self.tenant, flow_name=self.name, timestamp=self.t, **fields)
        )

    def step(
        self,
        name: str,
        ms: float,
        *,
        parent: str | None = None,
        service: str | None = None,
        status: str = "success",
        error: str | None = None,
        end: bool = True,
        **attributes: str,
    ) -> str:
        """A step of ``ms`` milliseconds starting now; the clock moves to its end."""
        step_id = uuid.uuid4().hex[:16]
        common = {"step_id": step_id, "step_name": name, "parent_step_id": parent, "service": service or self.service}
        self.emit("step_started", attributes=attributes, **common)
        if end:
            self.t += int(ms * 1000)
            err = {"type": "PaymentDeclined" if "pay" in name else "ValueError", "message": error, "stack": ""}
            self.emit("step_ended", status=status, error=err if error else None, **common)
        return step_id

    def wait(self, ms: float) -> None:
        self.t += int(ms * 1000)

    def end(self, error: str | None = None) -> DemoFlow:
        self.emit(
            "flow_ended",
            status="failed" if error else "success",
            error={"type": "PaymentDeclined", "message": error, "stack": ""} if error else None,
        )
        return self


def checkout(tenant: str, start_us: int, rnd: random.Random, *, fail: bool, retry: bool, running: bool) -> DemoFlow:
    flow = DemoFlow(tenant, "checkout", start_us, "web", {"env": "prod", "region": rnd.choice(["eu", "us"])})
    flow.wait(rnd.uniform(1, 4))
    flow.step("validate_cart", rnd.uniform(4, 12), items=str(rnd.randint(1, 6)))
    pay = flow.step("call_payments", 0, end=False, service="payments")
    flow.wait(rnd.uniform(20, 60))  # TLS and queueing in the payments service: time in no child step
    flow.step("fraud_check", rnd.uniform(8, 30), parent=pay, service="payments")
    if retry:
        flow.step("charge_card", rnd.uniform(30, 60), parent=pay, service="payments", status="retried",
                  error="gateway timeout, retrying")  # fmt: skip
        flow.wait(rnd.uniform(80, 200))
    if fail:
        flow.step("charge_card", rnd.uniform(40, 90), parent=pay, service="payments", status="failed",
                  error="card declined (insufficient funds)")  # fmt: skip
    else:
        flow.step("charge_card", rnd.uniform(40, 120), parent=pay, service="payments")
    flow.wait(rnd.uniform(150, 320))  # the payments service writing its ledger
    flow.emit("step_ended", step_id=pay, step_name="call_payments", service="payments",
              status="failed" if fail else "success",
              error={"type": "PaymentDeclined", "message": "card declined (insufficient funds)", "stack": ""}
              if fail else None)  # fmt: skip
    if fail:
        return flow.end("card declined (insufficient funds)")
    inventory = flow.step("reserve_stock", 0, end=False, service="inventory")
    flow.step("lock_rows", rnd.uniform(5, 20), parent=inventory, service="inventory")
    flow.wait(rnd.uniform(5, 40))
    if running:
        return flow
    flow.emit("step_ended", step_id=inventory, step_name="reserve_stock", service="inventory", status="success")
    flow.step("send_receipt", rnd.uniform(20, 80), service="mailer")
    flow.emit("flow_event", event_name="receipt_sent", attributes={"channel": "email"})
    return flow.end()


def data_import(tenant: str, start_us: int, rnd: random.Random, *, fail: bool, stalled: bool) -> DemoFlow:
    flow = DemoFlow(tenant, "data_import", start_us, "importer", {"env": "prod", "source": "sftp"})
    rows = rnd.randint(500, 20000)
    process = flow.step("process_file", 0, end=False, rows=str(rows))
    flow.step("download", rnd.uniform(200, 900), parent=process)
    flow.step("parse", rows * rnd.uniform(0.02, 0.06), parent=process, service="parser")
    if stalled:
        flow.step("load_warehouse", 0, parent=process, service="loader", end=False)
        return flow
    if fail:
        flow.step("validate", 40, parent=process, status="failed", error="row 1742: invalid date '2026-13-01'")
        flow.emit("step_ended", step_id=process, step_name="process_file", status="failed",
                  error={"type": "ValueError", "message": "row 1742: invalid date '2026-13-01'", "stack": ""})  # fmt: skip
        return flow.end("row 1742: invalid date '2026-13-01'")
    flow.step("validate", rows * rnd.uniform(0.005, 0.01), parent=process)
    flow.step("load_warehouse", rows * rnd.uniform(0.05, 0.1), parent=process, service="loader")
    flow.emit("step_ended", step_id=process, step_name="process_file", status="success")
    return flow.end()


def demo_events(now_us: int, seed: int = 7) -> tuple[list[Event], dict[str, DemoFlow]]:
    """About six hours of flows for three tenants, and a few flows worth showing."""
    rnd = random.Random(seed)
    flows: list[DemoFlow] = []
    picks: dict[str, DemoFlow] = {}
    span_us = 6 * 3600 * 1_000_000
    for i in range(240):
        start = now_us - int(span_us * (1 - (i / 240) ** 0.8)) - rnd.randint(0, 40_000_000)
        tenant = rnd.choice(["acme-corp", "acme-corp", "globex", "initech"])
        recent = now_us - start < 120_000_000
        if rnd.random() < 0.65:
            fail = rnd.random() < (0.25 if 2.5 < (now_us - start) / 3.6e9 < 3.5 else 0.07)
            flow = checkout(tenant, start, rnd, fail=fail, retry=rnd.random() < 0.15,
                            running=recent and rnd.random() < 0.5)  # fmt: skip
        else:
            flow = data_import(tenant, start, rnd, fail=rnd.random() < 0.08,
                               stalled=not recent and rnd.random() < 0.03)  # fmt: skip
        flows.append(flow)
    # One of each kind to photograph, recent enough to top the list.
    picks["retried"] = checkout("acme-corp", now_us - 50_000_000, rnd, fail=False, retry=True, running=False)
    picks["failed"] = checkout("globex", now_us - 40_000_000, rnd, fail=True, retry=False, running=False)
    picks["running"] = checkout("acme-corp", now_us - 8_000_000, rnd, fail=False, retry=False, running=True)
    flows += picks.values()
    return [e for f in flows for e in f.events], picks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "screens"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--width", type=int, default=1440)
    args = parser.parse_args(argv)

    import uvicorn
    from playwright.sync_api import sync_playwright

    from dashfrog._settings import Settings
    from dashfrog.runtime._broker import free_port
    from dashfrog.storage import open_store
    from dashfrog.web import create_app

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dashfrog-screens-") as tmp:
        store = open_store(f"chdb://{tmp}/db", stalled_after_s=900)
        store.migrate()
        events, picks = demo_events(int(time.time() * 1_000_000))
        store.insert_events(events, "screenshots")

        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(store, Settings()), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))  # fmt: skip
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if time.monotonic() > deadline:
                raise SystemExit("the API did not start")
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
                page = browser.new_page(viewport={"width": args.width, "height": 1000}, device_scale_factor=1,
                                        timezone_id="UTC")  # fmt: skip
                page.goto(url + "/#/?range=21600")
                page.wait_for_selector("#chart-runs .uplot")
                page.wait_for_selector("#stats .histogram")
                page.wait_for_function("document.querySelectorAll('#flows tbody tr').length > 20")
                page.screenshot(path=str(out / "list.png"))
                page.locator("#charts").screenshot(path=str(out / "charts.png"))
                for name in ("retried", "failed"):
                    flow = picks[name]
                    page.goto(f"{url}/#/flow/{flow.flow_id}?tenant={flow.tenant}")
                    page.wait_for_selector(f'#detail-view[data-flow-id="{flow.flow_id}"] .timeline')
                    page.locator("#detail-view").screenshot(path=str(out / f"timeline-{name}.png"))
                browser.close()
        finally:
            server.should_exit = True
            thread.join(10)
            store.close()
    for png in sorted(out.glob("*.png")):
        print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
