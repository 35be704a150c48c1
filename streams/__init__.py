"""The stream processor: consume the events topic, write batches durably, dead-letter the rest."""

from dashfrog.streams._batch import (
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_REFERENCE,
    DLQ_SIZE,
    DLQ_TOPIC,
    Decoded,
    decode_message,
    dedup_token,
    dlq_headers,
)
from dashfrog.streams._processor import MAX_EVENTS_PER_WRITE, Processor, ProcessorStats
from dashfrog.streams._replay import Replay, replay_dead_letters
from dashfrog.streams._worker import StatusLine, ensure_event_topics, run_processor

__all__ = [
    "DLQ_OFFSET",
    "DLQ_PARTITION",
    "DLQ_REASON",
    "DLQ_REFERENCE",
    "DLQ_SIZE",
    "DLQ_TOPIC",
    "Decoded",
    "MAX_EVENTS_PER_WRITE",
    "Processor",
    "ProcessorStats",
    "Replay",
    "StatusLine",
    "decode_message",
    "dedup_token",
    "dlq_headers",
    "ensure_event_topics",
    "replay_dead_letters",
    "run_processor",
]
