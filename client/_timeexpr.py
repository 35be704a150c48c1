"""The one time grammar of ``since``/``until``: CLI options, API parameters, ``dashfrog.query``.

Accepted, all resolved in UTC:

- ISO 8601: ``2026-11-25T10:00:00Z``, ``2026-11-25T10:00:00+01:00``, ``2026-11-25``
  (a date is its midnight; a time without a zone is UTC);
- relative, "that long ago": ``30s``, ``15m``, ``2h``, ``7d``, ``1w``, combined as
  ``1h30m``, optionally written ``-15m`` or ``15m ago``;
- ``now``, ``today`` (this UTC day's midnight), ``yesterday`` (the previous one);
- epoch seconds: ``1764000000``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

ACCEPTED = (
    "ISO 8601 (2026-11-25T10:00:00Z, 2026-11-25), a relative time meaning that long ago "
    "(30s, 15m, 2h, 7d, 1w, 1h30m), now, today or yesterday (UTC midnight), or epoch seconds"
)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_RELATIVE = re.compile(r"-?\s*((?:\d+(?:\.\d+)?\s*[smhdw]\s*)+)(?:ago)?", re.IGNORECASE)
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_EPOCH = re.compile(r"\d+(?:\.\d+)?")
# Days past 9999 or before 1 are not times anyone means; datetime would raise OverflowError.
_MAX_AGO_S = 100 * 365 * 86_400


def parse_duration(text: str) -> timedelta | None:
    """``15m``, ``2h``, ``1h30m``... as a timedelta; None if ``text`` is not of that form."""
    match = _RELATIVE.fullmatch(text.strip())
    if match is None:
        return None
    seconds = sum(float(n) * _UNITS[u.lower()] for n, u in _PART.findall(match.group(1)))
    if seconds > _MAX_AGO_S:
        raise ValueError(f"{text!r} reaches back more than 100 years")
    return timedelta(seconds=seconds)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``text`` in the grammar above as an aware UTC datetime; ValueError naming the accepted forms."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    value = text.strip()
    word = value.lower()
    if word == "now":
        return now
    if word in ("today", "yesterday"):
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return midnight if word == "today" else midnight - timedelta(days=1)
    if _EPOCH.fullmatch(value):
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{text!r} is out of range as epoch seconds") from None
    ago = parse_duration(value)
    if ago is not None:
        return now - ago
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time; use {ACCEPTED}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
