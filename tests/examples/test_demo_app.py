"""The demo app produces the flows its README promises."""

from __future__ import annotations

import asyncio
import importlib.util
from collections import Counter
from pathlib import Path

import dashfrog
from tests.client.test_seed_samples import by_flow
from tests.conftest import consume_events

MAIN = Path(__file__).resolve().parents[2] / "examples" / "demo-app" / "app" / "main.py"


def load_demo():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("demo_app_main", MAIN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_imports_show_every_outcome(sdk: dict) -> None:
    demo = load_demo()
    outcomes = asyncio.run(demo.main(count=60, concurrency=8, fast=True, seed=7))
    assert sum(outcomes.values()) == 60
    assert set(outcomes) >= {"success", "invalid"}
    assert dashfrog.flush(10)
    flows = by_flow(consume_events(sdk["bootstrap"], sdk["topic"], 60 * 2, timeout=30))
    finished = [events for events in flows.values() if events[-1]["kind"] == "flow_ended"]
    assert len(finished) == 60
    statuses = Counter(events[-1]["status"] for events in finished)
    assert statuses["success"] == outcomes["success"]
    assert statuses["failed"] == 60 - outcomes["success"]
    assert {e["tenant"] for events in finished for e in events} <= set(demo.TENANTS)
    steps = {e["step_name"] for events in finished for e in events if e["kind"] == "step_started"}
    assert steps == {"read", "validate", "process"}
