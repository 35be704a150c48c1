"""The parts of dead-lettering and outage reporting that need no broker."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)
from faust.exceptions import ProducerSendError

from dashfrog.storage import DeadLetter
from dashfrog.storage._dead_letters import insert_statements
from dashfrog.streams import DLQ_OFFSET, DLQ_REFERENCE, DLQ_SIZE, decode_message
from dashfrog.streams._batch import dlq_reference
from dashfrog.streams._outage import FAILED_PROBES, BrokerWatch, bootstrap_addresses
from dashfrog.streams._processor import _retriable


def _wrapped(exc: BaseException) -> ProducerSendError:
    try:
        raise ProducerSendError(f"Error while sending: {exc!r}") from exc
    except ProducerSendError as outer:
        return outer


def test_a_send_is_retried_only_when_trying_again_may_work() -> None:
    assert not _retriable(_wrapped(MessageSizeTooLargeError()))
    assert not _retriable(_wrapped(TopicAuthorizationFailedError()))
    assert _retriable(_wrapped(KafkaConnectionError()))
    assert _retriable(_wrapped(KafkaTimeoutError()))  # aiokafka does not flag it; it is a timeout
    assert _retriable(TimeoutError())


def test_a_reference_says_where_the_message_is_and_keeps_its_first_kilobyte() -> None:
    value = b"\xc3\x01" + b"\xff" * 1_500_000
    item = decode_message("events", 2, 41, b"k", value, [("dashfrog-schema", b"{" * 900_000)])
    assert item.reason is not None and item.size == len(value)
    ref_value, headers = dlq_reference(item, "MessageSizeTooLargeError: too big")
    reference = json.loads(ref_value)
    assert (reference["topic"], reference["partition"], reference["offset"]) == ("events", 2, 41)
    assert reference["size"] == len(value) and reference["dlq_refused"].startswith("MessageSizeTooLarge")
    assert base64.b64decode(reference["head_base64"]) == value[:1024]
    names = dict(headers)
    assert names[DLQ_REFERENCE] == b"1" and names[DLQ_SIZE] == str(len(value)).encode()
    assert names[DLQ_OFFSET] == b"41"
    # The original headers stay out: they may be what made the message too big.
    assert "dashfrog-schema" not in names and len(ref_value) + sum(len(v) for v in names.values()) < 4_000


def test_dead_letter_rows_fit_a_url_however_big_their_headers() -> None:
    from urllib.parse import quote

    headers = [(f"h{i}", b"\xff" * 5_000) for i in range(50)]  # each byte escaped in JSON, then in the URL
    letters = [
        DeadLetter("t", 0, i, 5_000, "undecodable: x", "whole", b"\x00" * 5_000, b"k" * 5_000, headers)
        for i in range(100)
    ]
    statements = insert_statements(letters)
    assert len(statements) > 1
    rows = [row for _, params in statements for row in json.loads(params["rows"])]
    assert [row[2] for row in rows] == list(range(100))
    # A server takes parameters in the URL: each stays under a 64 KiB request line.
    assert all(len(quote(params["rows"])) < 60_000 for _, params in statements)
    # The first kilobyte of the value is kept; 256 bytes of the key and of each
    # header, as many headers as 4 KiB of them hold.
    assert len(base64.b64decode(rows[0][6])) == 1024 and len(base64.b64decode(rows[0][7])) == 256
    assert 0 < len(rows[0][8]) < 50 and len(rows[0][8]["h0"]) == 256
    with pytest.raises(ValueError, match="in_dlq"):
        insert_statements([DeadLetter("t", 0, 0, 1, "r", "somewhere", b"")])


def test_the_broker_watch_tells_an_outage_once_each_way(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dashfrog.streams")
    watch = BrokerWatch("kafka-1:9092, kafka-2")
    assert watch.addresses == [("kafka-1", 9092), ("kafka-2", 9092)]
    assert bootstrap_addresses("[::1]:19092") == [("::1", 19092)]
    watch.note(False)  # one failed probe is a blip, not an outage
    assert watch.down_since is None
    for _ in range(FAILED_PROBES + 20):
        watch.note(False)
    assert watch.down_since is not None and watch.outages == 1
    for _ in range(5):
        watch.note(True)
    assert watch.down_since is None
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot reach the Kafka broker" in m for m in messages) == 1
    assert sum("is back after" in m for m in messages) == 1
