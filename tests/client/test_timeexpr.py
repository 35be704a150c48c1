"""The one time grammar of since/until, and the one label syntax."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashfrog._exceptions import QueryError
from dashfrog._models import FlowFilter, StatsFilter, parse_label_pairs
from dashfrog._timeexpr import ACCEPTED, parse_time

NOW = datetime(2026, 11, 25, 15, 30, 45, 123456, tzinfo=UTC)
MIDNIGHT = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20T10:00:00Z", datetime(2026, 11, 20, 10, tzinfo=UTC)),
        ("2026-11-20T10:00:00+01:00", datetime(2026, 11, 20, 9, tzinfo=UTC)),
        ("2026-11-20T10:00:00", datetime(2026, 11, 20, 10, tzinfo=UTC)),  # no zone: UTC
        ("2026-11-20", datetime(2026, 11, 20, tzinfo=UTC)),
        ("30s", NOW - timedelta(seconds=30)),
        ("15m", NOW - timedelta(minutes=15)),
        ("2h", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("1w", NOW - timedelta(weeks=1)),
        ("1h30m", NOW - timedelta(minutes=90)),
        ("-15m", NOW - timedelta(minutes=15)),
        ("15m ago", NOW - timedelta(minutes=15)),
        (" 2H ", NOW - timedelta(hours=2)),
        ("now", NOW),
        ("today", MIDNIGHT),
        ("Yesterday", MIDNIGHT - timedelta(days=1)),
        ("1764000000", datetime.fromtimestamp(1764000000, tz=UTC)),
    ],
)
def test_accepted_forms(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW) == expected


def test_today_is_the_utc_day_whatever_the_zone_of_now() -> None:
    # 01:30 in UTC+3 on the 26th is still the 25th in UTC.
    from datetime import timezone

    local = datetime(2026, 11, 26, 1, 30, tzinfo=timezone(timedelta(hours=3)))
    assert parse_time("today", local) == MIDNIGHT


@pytest.mark.parametrize("text", ["yesterday-ish", "15", "15 minutes", "2026-13-01", "", "1y", "10m5"])
def test_bad_input_names_the_accepted_forms(text: str) -> None:
    if text == "15":  # a bare number is epoch seconds, not an error
        assert parse_time(text, NOW) == datetime.fromtimestamp(15, tz=UTC)
        return
    with pytest.raises(ValueError, match="is not a time") as info:
        parse_time(text, NOW)
    assert ACCEPTED in str(info.value)


def test_absurd_relative_time_is_refused() -> None:
    with pytest.raises(ValueError, match="100 years"):
        parse_time("99999999d", NOW)


def test_filters_use_the_grammar_and_say_which_bound_is_wrong() -> None:
    flt = FlowFilter.parse(since="yesterday", until="2h", now=NOW)
    assert (flt.since, flt.until) == (MIDNIGHT - timedelta(days=1), NOW - timedelta(hours=2))
    assert StatsFilter.parse(since="yesterday", now=NOW).since == MIDNIGHT - timedelta(days=1)
    assert FlowFilter.parse(since=timedelta(minutes=5), now=NOW).since == NOW - timedelta(minutes=5)
    with pytest.raises(QueryError, match=r"^until: 'soon' is not a time; use ISO 8601"):
        FlowFilter.parse(since="1h", until="soon", now=NOW)
    with pytest.raises(QueryError, match="is after until"):
        FlowFilter.parse(since="today", until="yesterday", now=NOW)


def test_label_pairs_take_equals_and_the_old_colon_form() -> None:
    assert parse_label_pairs(["env=prod", "region:eu"]) == {"env": "prod", "region": "eu"}
    # The first separator splits: values may hold the other one.
    assert parse_label_pairs(["url=http://x:8080/a", "k:a=b", "empty="]) == {
        "url": "http://x:8080/a", "k": "a=b", "empty": ""}
    for bad in ("no-separator", "=value", ":value"):
        with pytest.raises(QueryError, match="expected key=value"):
            parse_label_pairs([bad])
