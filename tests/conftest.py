"""Fixtures shared by every suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A real tansu broker for the session; yields its bootstrap string."""
    from dashfrog._broker import start_broker

    running = start_broker()
    try:
        yield running.bootstrap
    finally:
        running.stop()
