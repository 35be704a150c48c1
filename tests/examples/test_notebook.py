"""The customer-report notebook runs top to bottom against a real store."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashfrog import query

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebooks" / "customer_report.ipynb"


@pytest.fixture
def demo_store(tmp_path: Path) -> Iterator[Any]:
    from dashfrog.storage import open_store
    from tests.streams._helpers import flow_events

    store = open_store(f"chdb://{tmp_path / 'db'}")
    store.migrate()
    events = flow_events(30, tenants=2, steps=3, fail_every=4, run="nb")
    for event in events:  # the notebook reports on one tenant's data imports
        event["tenant"] = {"tenant-0": "acme-corp"}.get(event["tenant"], event["tenant"])
        event["flow_name"] = "data_import"
        if event["kind"] == "flow_started":
            event["labels"] = {**event["labels"], "source": "csv"}
    store.insert_events(events, "nb")
    store.insert_events(_metric_events(), "nb-metrics")
    query.use_store(store)
    try:
        yield store
    finally:
        query.use_store(None)
        store.close()


def _metric_events() -> list[Any]:
    """What the demo app's metrics send for acme-corp, two days ago and today."""
    from datetime import UTC, datetime, timedelta

    from tests.storage.test_metrics_store import counter_point, event, gauge_point, histogram_point

    today = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    earlier = today - timedelta(days=2)
    return [
        event("imports_total", "counter", [
            counter_point("acme-corp", 8, earlier, source="csv", outcome="success"),
            counter_point("acme-corp", 2, earlier, source="csv", outcome="failed"),
            counter_point("acme-corp", 5, today, source="api", outcome="success"),
            counter_point("globex", 50, today, source="api", outcome="failed"),
        ], ["source", "outcome"], pretty_name="Imports", unit="count"),
        event("import_duration_seconds", "histogram", [
            histogram_point("acme-corp", [0.5, 1.0, 1.5, 30.0], today, source="api"),
        ], ["source"], unit="seconds"),
        event("monthly_quota", "gauge", [gauge_point("acme-corp", 41_000, 41_000, 41_000, today, plan="standard")],
              ["plan"], unit="rows"),
    ]  # fmt: skip


def test_customer_report_runs(demo_store: Any) -> None:
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    namespace: dict[str, Any] = {}
    last: Any = None
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]))
        # Like Jupyter: run the cell, keep the value of a final expression.
        tail = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "<cell>", "exec"), namespace)
        if tail is not None:
            last = eval(compile(ast.Expression(tail.value), "<cell>", "eval"), namespace)
    flows = namespace["flows"]
    assert len(flows) == 15 and set(flows.status) == {"success", "failed"}
    assert namespace["summary"]["imports"] == 15
    assert namespace["failures"]["imports"].sum() == (flows.status == "failed").sum()
    assert list(last["source"]) == ["csv"] and int(last["imports"][0]) == 15
    # The metrics section: acme-corp's points only.
    assert set(namespace["available"].name) == {"imports_total", "import_duration_seconds", "monthly_quota"}
    per_day = namespace["imports_per_day"]
    assert per_day["success"].sum() == 13 and per_day["failed"].sum() == 2
    share = namespace["failure_share"]
    assert list(share.ratio) == [0.2, 0.0]
    durations = namespace["durations"]
    assert [r.count for r in durations] == [4] and durations.error_bound is not None
    assert list(namespace["quota_left"]["last"]) == [41_000]
