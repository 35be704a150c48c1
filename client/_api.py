"""Process-wide SDK functions: setup, flush, stats."""

from __future__ import annotations

from typing import Any

from dashfrog import _context, _metrics
from dashfrog._exceptions import ConfigurationError
from dashfrog._producer import current_sender, reset_sender
from dashfrog._settings import Settings, get_settings, set_settings


def setup(**overrides: Any) -> Settings:
    """Configure the SDK. Keyword arguments override ``DASHFROG_*`` settings.

    Calling it again replaces the configuration; events queued under the
    previous one are flushed first (within its exit flush timeout).
    """
    settings = Settings(**overrides)
    _check_compression(settings.compression)
    previous = current_sender()
    reset_sender(previous.settings.exit_flush_timeout_s if previous else None)
    set_settings(settings)
    _metrics.settings_changed()
    return settings


def _check_compression(codec: str) -> None:
    if codec in ("none", "gzip"):
        return
    from aiokafka import codec as codecs

    if not getattr(codecs, f"has_{codec}")():
        raise ConfigurationError(
            f"compression {codec!r} needs a codec library aiokafka did not find: "
            "pip install cramjam, or choose DASHFROG_COMPRESSION=gzip or none"
        )


def flush(timeout: float | None = 10.0) -> bool:
    """Send what is queued (metrics aggregated so far included); True when the
    broker acknowledged it all within ``timeout``."""
    _metrics.export_now()
    sender = current_sender()
    return True if sender is None else sender.flush(timeout)


def shutdown(timeout: float | None = 10.0) -> None:
    """Flush within ``timeout`` (metrics included) and stop the background sender."""
    _metrics.export_now()
    reset_sender(timeout)


def stats() -> dict[str, Any]:
    """Counters of the background sender (queued, sent, dropped, errors, ...) and
    of metrics: ``metrics_points_queued``, ``metrics_points_dropped`` (refused by
    the full queue), ``metrics_overflowed`` (values recorded into a metric's
    overflow series past DASHFROG_METRICS_MAX_SERIES), ``metrics_callback_errors``."""
    sender = current_sender()
    base: dict[str, Any] = (
        sender.stats()
        if sender is not None
        else {"queued": 0, "queued_bytes": 0, "accepted": 0, "sent": 0, "dropped": 0, "errors": 0, "messages": 0, "last_error": None}
    )
    base["ignored_remote_contexts"] = _context.ignored_remote_count()
    base.update(_metrics.metrics_stats())
    base["disabled"] = get_settings().disabled
    return base
