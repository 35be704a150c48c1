"""Process plumbing shared by the long-running commands (``dashfrog up``,
``worker``, ``api``): logging, stop signals, the store's lifetime and URL
redaction for logs."""

from dashfrog.runtime._process import (
    configure_logging,
    install_stop_signals,
    redact,
    run_with_store,
)

__all__ = [
    "configure_logging",
    "install_stop_signals",
    "redact",
    "run_with_store",
]
