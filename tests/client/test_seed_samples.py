"""The seed documentation's single-service samples, run as written against a real broker."""

from __future__ import annotations

import pytest

import dashfrog
from dashfrog import flow, step
from tests.conftest import consume_events

# Helpers the seed's samples call; what they do does not matter to DashFrog.
order: dict[str, int] = {"id": 1}
payment_info: dict[str, str] = {"card": "4242"}
data: list[int] = [1, 2]


def validate_data() -> None: ...
def process_data() -> None: ...
def store_results() -> None: ...
def validate_order(order: object) -> None: ...
def charge_card(info: object) -> None: ...
def ship_items(order: object) -> None: ...
def is_valid(data: object) -> bool:
    return False


def by_flow(events: list[dict]) -> dict[str, list[dict]]:
    flows: dict[str, list[dict]] = {}
    for event in events:
        flows.setdefault(event["flow_id"], []).append(event)
    return flows


def kinds(events: list[dict]) -> list[tuple[str, str | None, str | None]]:
    return [(e["kind"], e["step_name"], e["status"]) for e in events]


def test_starting_a_flow(sdk: dict) -> None:
    # Start a flow for a customer
    with flow.start(
        name="data_import",
        tenant="acme-corp",  # customer ID
    ):
        with step.start("validate"):
            validate_data()

        with step.start("process"):
            process_data()

        with step.start("store"):
            store_results()

    assert dashfrog.flush(10)
    events = consume_events(sdk["bootstrap"], sdk["topic"], 8)
    assert kinds(events) == [
        ("flow_started", None, None),
        ("step_started", "validate", None),
        ("step_ended", "validate", "success"),
        ("step_started", "process", None),
        ("step_ended", "process", "success"),
        ("step_started", "store", None),
        ("step_ended", "store", "success"),
        ("flow_ended", None, "success"),
    ]
    assert {(e["tenant"], e["flow_name"], e["service"]) for e in events} == {
        ("acme-corp", "data_import", "test-service")
    }
    assert len({e["flow_id"] for e in events}) == 1
    assert len({e["event_id"] for e in events}) == 8
    timestamps = [e["timestamp"] for e in events]
    assert timestamps == sorted(timestamps)
    steps = [e for e in events if e["kind"] == "step_started"]
    assert all(e["parent_step_id"] is None for e in steps)


def test_flow_parameters_become_labels(sdk: dict) -> None:
    with flow.start(
        name="webhook_processing",
        tenant="acme-corp",
        webhook_type="stripe.payment.success",
        env="production",
    ):
        # flow logic
        pass

    assert dashfrog.flush(10)
    started, ended = consume_events(sdk["bootstrap"], sdk["topic"], 2)
    assert started["kind"] == "flow_started"
    assert started["labels"] == {"webhook_type": "stripe.payment.success", "env": "production"}
    assert ended["kind"] == "flow_ended" and ended["status"] == "success"


def test_steps_sample(sdk: dict) -> None:
    with flow.start(name="order_processing", tenant="customer-123"):
        # Step 1: Validate order
        with step.start("validate_order"):
            validate_order(order)

        # Step 2: Charge payment
        with step.start("charge_payment"):
            charge_card(payment_info)

        # Step 3: Fulfill order
        with step.start("fulfill_order"):
            ship_items(order)

    assert dashfrog.flush(10)
    events = consume_events(sdk["bootstrap"], sdk["topic"], 8)
    names = [e["step_name"] for e in events if e["kind"] == "step_ended"]
    assert names == ["validate_order", "charge_payment", "fulfill_order"]
    assert events[-1]["kind"] == "flow_ended" and events[-1]["status"] == "success"
    # Every step's end names the same step id its start did.
    starts = {e["step_id"]: e["step_name"] for e in events if e["kind"] == "step_started"}
    ends = {e["step_id"]: e["step_name"] for e in events if e["kind"] == "step_ended"}
    assert starts == ends and len(starts) == 3


def test_error_handling_marks_step_and_flow_failed(sdk: dict, capsys: pytest.CaptureFixture[str]) -> None:
    with flow.start(name="import", tenant="acme-corp"):
        try:
            with step.start("validate"):
                if not is_valid(data):
                    raise ValueError("Invalid data format")
        except ValueError as e:
            # Exception is captured in the step
            # Flow is marked as failed
            print(f"Validation failed: {e}")

    assert capsys.readouterr().out == "Validation failed: Invalid data format\n"
    assert dashfrog.flush(10)
    events = consume_events(sdk["bootstrap"], sdk["topic"], 4)
    step_ended = next(e for e in events if e["kind"] == "step_ended")
    flow_ended = events[-1]
    assert step_ended["status"] == "failed"
    assert step_ended["error"]["type"] == "ValueError"
    assert step_ended["error"]["message"] == "Invalid data format"
    assert 'raise ValueError("Invalid data format")' in step_ended["error"]["stack"]
    assert flow_ended["kind"] == "flow_ended" and flow_ended["status"] == "failed"
    assert flow_ended["error"]["message"] == "Invalid data format"


def test_exception_leaving_the_flow_propagates_unchanged(sdk: dict) -> None:
    class Boom(Exception):
        pass

    error = Boom("kaput")
    with pytest.raises(Boom) as raised, flow.start(name="import", tenant="acme-corp"):
        with step.start("load"):
            raise error
    assert raised.value is error
    assert dashfrog.flush(10)
    events = consume_events(sdk["bootstrap"], sdk["topic"], 4)
    assert [(e["kind"], e["status"]) for e in events][-2:] == [("step_ended", "failed"), ("flow_ended", "failed")]
    assert events[-1]["error"]["type"].endswith("Boom")
