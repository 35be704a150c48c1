"""The dashfrog command line and the process plumbing its long-running commands
share: logging, stop signals, the store's lifetime, URL redaction, progress on
a terminal, topic creation and the local development broker.

Server- and development-side only: the SDK (``dashfrog``) imports nothing from
here, so an SDK-only install stays light; the commands that need an extra
import it when run.
"""

from dashfrog.runtime._broker import LocalBroker, ensure_topics, start_broker
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
