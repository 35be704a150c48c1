"""Flows left open (end_on_exit=False) are bounded, and forgetting one is logged."""

from __future__ import annotations

import logging

import pytest

import dashfrog
from dashfrog import NoActiveFlowError, flow
from dashfrog import _flow as flow_module


def test_forgetting_an_open_flow_is_logged(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(flow_module, "_MAX_OPEN_FLOWS", 3)
    monkeypatch.setattr(flow_module, "_open_flows", {})
    monkeypatch.setattr(flow_module, "_evictions", {"since_log": 0, "logged_at": -3600.0})
    dashfrog.setup(disabled=True)
    try:
        ids = []
        with caplog.at_level(logging.WARNING, logger="dashfrog"):
            for i in range(5):
                with flow.start(name="import", tenant=f"t{i}", end_on_exit=False) as flow_id:
                    ids.append(flow_id)
        # Two forgotten, one line (the next may come a minute later at most), naming one.
        lines = [r.getMessage() for r in caplog.records if "never ended" in r.getMessage()]
        assert len(lines) == 1
        assert ids[0] in lines[0] and "'t0'" in lines[0]
        with pytest.raises(NoActiveFlowError):
            flow.end(flow_id=ids[0])
        flow.end(flow_id=ids[4])  # still known
    finally:
        dashfrog.setup()
