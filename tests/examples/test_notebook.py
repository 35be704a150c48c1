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
    query.use_store(store)
    try:
        yield store
    finally:
        query.use_store(None)
        store.close()


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
