"""Flows as CSV: one set of columns for ``dashfrog flows --format csv`` and
``GET /api/flows?format=csv``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from dashfrog._models import FlowSummary

# FlowSummary.flat() in a fixed order; labels as a JSON object, services joined by ";".
CSV_COLUMNS: tuple[str, ...] = (
    "flow_id", "tenant", "name", "status", "stalled", "started_at", "ended_at", "duration_ms",
    "last_activity", "current_step", "current_step_id", "steps_started", "steps_ended",
    "steps_failed", "error_step", "error_type", "error_message", "labels", "services", "trace_id",
)  # fmt: skip

# A spreadsheet runs a cell that starts with one of these as a formula; the
# values come from application code, so such text is exported behind a quote.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, list):
        return ";".join(map(str, value))
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def flows_csv(flows: Iterable[FlowSummary], *, header: bool) -> str:
    """Flows as CSV rows (RFC 4180 quoting, CRLF line ends), the header row first if asked."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(CSV_COLUMNS)
    for flow in flows:
        row = flow.flat()
        writer.writerow([csv_cell(row.get(c)) for c in CSV_COLUMNS])
    return out.getvalue()
