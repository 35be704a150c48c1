"""Identifiers. Flow ids sort by creation time: 12 hex digits of milliseconds
since the epoch, then 20 random hex digits (32 characters, like a trace id)."""

from __future__ import annotations

import os
import time


def new_flow_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def new_step_id() -> str:
    return os.urandom(8).hex()


def new_event_id() -> str:
    return os.urandom(16).hex()

