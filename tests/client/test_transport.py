"""Transport trouble never reaches the application: bounded time, no exceptions, counted drops."""

from __future__ import annotations

import os
import time

import pytest

import dashfrog
from dashfrog import flow, step
from dashfrog.runtime._broker import free_port
from tests.conftest import consume_events


def test_broker_down_costs_bounded_time_and_counts_drops(caplog: pytest.LogCaptureFixture) -> None:
    dashfrog.setup(kafka_bootstrap=f"127.0.0.1:{free_port()}", queue_size=100, exit_flush_timeout_s=0.5)
    try:
        started = time.perf_counter()
        slowest = 0.0
        for i in range(300):
            t0 = time.perf_counter()
            with flow.start(name="offline", tenant="acme-corp", n=i), step.start("work"):
                pass
            slowest = max(slowest, time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        stats = dashfrog.stats()
        # 300 flows x 4 events, 100 fit in the queue: the rest is dropped, none raised.
        assert stats["queued"] <= 100
        assert stats["accepted"] + stats["dropped"] == 1200
        assert stats["dropped"] >= 1100
        assert stats["sent"] == 0
        # Generous bounds that only a blocking call would break.
        assert slowest < 0.5 and elapsed < 5
        # Over a thousand drops, one log line: the report is rate-limited.
        reports = [r for r in caplog.records if "event queue full" in r.getMessage()]
        assert len(reports) == 1 and "dropped" in reports[0].getMessage()
        t0 = time.perf_counter()
        assert dashfrog.flush(0.3) is False
        assert time.perf_counter() - t0 < 2
    finally:
        t0 = time.perf_counter()
        dashfrog.setup()
        assert time.perf_counter() - t0 < 5


def test_an_outage_is_reported_once_not_per_connection_attempt(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.INFO)
    dashfrog.setup(kafka_bootstrap=f"127.0.0.1:{free_port()}", exit_flush_timeout_s=0.2)
    try:
        with flow.start(name="offline", tenant="acme-corp"):
            pass
        deadline = time.monotonic() + 20
        while dashfrog.stats()["errors"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dashfrog.stats()["errors"] >= 3  # several failed attempts so far
        library = [r for r in caplog.records if r.name.startswith("aiokafka")]
        ours = [r for r in caplog.records if "cannot reach Kafka" in r.getMessage()]
        assert library == [] and len(ours) == 1 and ours[0].levelname == "WARNING"
        assert "events queued in memory, sent if it is back while this process runs" in ours[0].getMessage()

        # With the dashfrog logger at DEBUG, aiokafka's own records come through.
        caplog.clear()
        caplog.set_level(logging.DEBUG, logger="dashfrog")
        errors = dashfrog.stats()["errors"]
        deadline = time.monotonic() + 20
        while dashfrog.stats()["errors"] < errors + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(r.name.startswith("aiokafka") for r in caplog.records)
    finally:
        dashfrog.setup()


def test_queue_block_ms_waits_at_most_that_long() -> None:
    dashfrog.setup(kafka_bootstrap=f"127.0.0.1:{free_port()}", queue_size=4, queue_block_ms=50, exit_flush_timeout_s=0.2)
    try:
        with flow.start(name="offline", tenant="acme-corp"):
            for _ in range(3):
                with step.start("s"):
                    pass
        t0 = time.perf_counter()
        with flow.start(name="offline", tenant="acme-corp"):
            pass
        waited = time.perf_counter() - t0
        assert 0.05 <= waited < 1.0, waited
        assert dashfrog.stats()["dropped"] >= 2
    finally:
        dashfrog.setup()


def test_queue_max_bytes_bounds_the_memory_queued_events_hold() -> None:
    from dashfrog._producer import current_sender

    budget = 64 * 1024
    dashfrog.setup(
        kafka_bootstrap=f"127.0.0.1:{free_port()}", queue_size=1_000_000, queue_max_bytes=budget,
        exit_flush_timeout_s=0.2,
    )
    try:
        for i in range(200):
            with flow.start(name="offline", tenant="acme-corp", note="x" * 500, n=i):
                pass
        stats = dashfrog.stats()
        assert 0 < stats["queued_bytes"] <= budget
        assert stats["accepted"] + stats["dropped"] == 400 and stats["dropped"] > 0
        sender = current_sender()
        assert sender is not None
        # What is counted covers at least the Avro bytes the queue really holds.
        assert stats["queued_bytes"] >= sum(len(v) for _, v in sender._queue)
        # An event bigger than the whole budget is dropped, not waited for.
        dashfrog.setup(
            kafka_bootstrap=f"127.0.0.1:{free_port()}", queue_max_bytes=budget, queue_block_ms=5_000,
            max_label_value_length=100_000, exit_flush_timeout_s=0.2,
        )
        t0 = time.perf_counter()
        with flow.start(name="offline", tenant="acme-corp", blob="x" * 70_000):
            pass
        assert time.perf_counter() - t0 < 1
        assert dashfrog.stats()["dropped"] == 1  # flow_started with the blob; flow_ended fits
    finally:
        dashfrog.setup()


def test_queued_bytes_return_to_zero_once_acknowledged(sdk: dict) -> None:
    for i in range(50):
        with flow.start(name="counted", tenant="acme-corp", n=i), step.start("s"):
            pass
    assert dashfrog.flush(10)
    stats = dashfrog.stats()
    assert stats["sent"] == 200 and stats["queued"] == 0 and stats["queued_bytes"] == 0


def test_events_queued_while_the_broker_is_down_are_sent_when_it_returns(broker: str, topic_prefix: str) -> None:
    from dashfrog.runtime._broker import ensure_topics_sync, start_broker

    port = free_port()
    dashfrog.setup(kafka_bootstrap=f"127.0.0.1:{port}", topic_prefix=topic_prefix, linger_ms=5)
    try:
        with flow.start(name="late", tenant="acme-corp"), step.start("s"):
            pass
        assert dashfrog.stats()["queued"] == 4
        late = start_broker(port)
        try:
            ensure_topics_sync(late.bootstrap, {topic_prefix + "dashfrog.events": 2})
            assert dashfrog.flush(20)
            events = consume_events(late.bootstrap, topic_prefix + "dashfrog.events", 4)
            assert [e["kind"] for e in events] == ["flow_started", "step_started", "step_ended", "flow_ended"]
        finally:
            dashfrog.shutdown(1)
            late.stop()
    finally:
        dashfrog.setup()


def test_forked_child_gets_a_fresh_sender(sdk: dict) -> None:
    with flow.start(name="parent", tenant="acme-corp"):
        pass
    assert dashfrog.flush(10)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: send a flow of its own, report whether it was acknowledged
        try:
            with flow.start(name="child", tenant="acme-corp"):
                pass
            ok = dashfrog.flush(10)
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    events = consume_events(sdk["bootstrap"], sdk["topic"], 4)
    assert sorted(e["flow_name"] for e in events if e["kind"] == "flow_ended") == ["child", "parent"]


def test_text_avro_cannot_carry_is_repaired_not_fatal(sdk: dict) -> None:
    broken = "report-\udcff.csv"  # a lone surrogate, as os.fsdecode gives for undecodable bytes
    with pytest.raises(ValueError), flow.start(name="import", tenant="acme-corp", file=broken):
        raise ValueError(f"cannot open {broken}")
    assert dashfrog.flush(10)
    started, ended = consume_events(sdk["bootstrap"], sdk["topic"], 2)
    assert started["labels"]["file"] == "report-\ufffd.csv"
    assert ended["error"]["message"] == "cannot open report-\ufffd.csv"


def test_an_event_avro_refuses_is_dropped_alone(sdk: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from dashfrog import schemas
    from dashfrog._producer import current_sender

    real_encode = schemas.encode_event

    def picky_encode(event: dict) -> bytes:
        if event["flow_name"] == "poison":
            raise ValueError("cannot encode")
        return real_encode(event)

    monkeypatch.setattr(schemas, "encode_event", picky_encode)
    with flow.start(name="poison", tenant="acme-corp"):
        pass
    with flow.start(name="healthy", tenant="acme-corp"):
        pass
    assert dashfrog.flush(10)
    events = consume_events(sdk["bootstrap"], sdk["topic"], 2)
    assert [e["flow_name"] for e in events] == ["healthy", "healthy"]
    sender = current_sender()
    assert sender is not None and sender.dropped == 2 and "cannot encode" in (sender.last_error or "")


def test_unavailable_compression_is_refused_at_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka import codec

    monkeypatch.setattr(codec, "has_lz4", lambda: False)
    with pytest.raises(dashfrog.ConfigurationError, match="compression 'lz4' needs a codec library"):
        dashfrog.setup(compression="lz4")
    dashfrog.setup()


def test_messages_respect_the_event_count_and_kafka_size_limit() -> None:
    from dashfrog._producer import _MAX_MESSAGE_BYTES, _messages

    big = _MAX_MESSAGE_BYTES // 3
    items = [(f"flow-{i}", b"x" * (big if i % 4 == 0 else 100)) for i in range(40)]
    items.append(("flow-huge", b"x" * (_MAX_MESSAGE_BYTES + 1)))  # alone, over the limit
    messages = _messages(items, max_events=7)
    assert [item for message in messages for item in message] == items
    for message in messages:
        assert len(message) <= 7
        assert len(message) == 1 or sum(len(v) for _, v in message) <= _MAX_MESSAGE_BYTES
