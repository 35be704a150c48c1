"""Process plumbing shared by the long-running commands: logging, stop signals,
the store's lifetime, URL redaction, progress on a terminal, topic creation
and the local development broker."""

# The local broker's code still lives in the SDK folder (client/_broker.py);
# this package is its public face until it moves here.
from dashfrog._broker import LocalBroker, ensure_topics, start_broker
from dashfrog.runtime._process import (
    configure_logging,
    install_stop_signals,
    redact,
    run_with_store,
)
from dashfrog.runtime._progress import progress_line, terminal_progress

__all__ = [
    "LocalBroker",
    "configure_logging",
    "ensure_topics",
    "install_stop_signals",
    "progress_line",
    "redact",
    "run_with_store",
    "start_broker",
    "terminal_progress",
]
