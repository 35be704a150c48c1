"""Alert incidents in the store: the one place several evaluators agree on who notifies.

ClickHouse has no transactions, so a notice is claimed with an insert whose
``insert_deduplication_token`` is derived from (incident key, incident number,
transition) alone: the first such insert writes a row, any later one with
the same token writes nothing. Every claimer then reads the claim back; only
the process named in it notifies. Should two rows still land (a server that
does not deduplicate, or a replica that has not seen the first insert), every
reader orders them the same way (time, then claimer id), so still one of them
wins. Guarantee: at most one notice per incident and transition, on one
server or a replicated table with deduplication (Keeper); the winner then
tries its webhook a bounded number of times, so a notice can be lost if that
process dies while sending, never doubled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # _schema imports this module, and _queries imports _schema
    from dashfrog.storage._queries import Runner

TRANSITIONS = ("opened", "resolved")

_INCIDENTS = """
CREATE TABLE IF NOT EXISTS alert_incidents (
    incident_key String,
    seq UInt32,
    transition LowCardinality(String),
    rule String,
    condition LowCardinality(String),
    tenant String,
    subject String,
    details String,
    claimed_by String,
    claimed_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
ORDER BY (incident_key, seq, transition)
TTL toDateTime(claimed_at) + INTERVAL __RETENTION_DAYS__ DAY
SETTINGS non_replicated_deduplication_window = 100000
"""

MIGRATION_10 = (_INCIDENTS,)
TTL_COLUMNS = {"alert_incidents": "toDateTime(claimed_at)"}

_CLAIM = """
INSERT INTO alert_incidents
    (incident_key, seq, transition, rule, condition, tenant, subject, details, claimed_by)
SELECT {key:String}, {seq:UInt32}, {transition:String}, {rule:String}, {condition:String},
       {tenant:String}, {subject:String}, {details:String}, {me:String}
SETTINGS insert_deduplication_token = '__TOKEN__'
"""

_WINNER = """
SELECT claimed_by
FROM alert_incidents
WHERE incident_key = {key:String} AND seq = {seq:UInt32} AND transition = {transition:String}
ORDER BY claimed_at, claimed_by
LIMIT 1
"""

# The latest incident of every key: whether it is open, and what it said when it opened.
# Aliases end in _ so that {scope} tests the columns, not the aggregates.
_LATEST = """
SELECT
    incident_key,
    seq,
    max(transition = 'opened') AS opened,
    max(transition = 'resolved') AS resolved,
    argMinIf(rule, claimed_at, transition = 'opened') AS rule_,
    argMinIf(condition, claimed_at, transition = 'opened') AS condition_,
    argMinIf(tenant, claimed_at, transition = 'opened') AS tenant_,
    argMinIf(subject, claimed_at, transition = 'opened') AS subject_,
    argMinIf(details, claimed_at, transition = 'opened') AS details_,
    toInt64(toUnixTimestamp64Micro(minIf(claimed_at, transition = 'opened'))) AS opened_us,
    toInt64(toUnixTimestamp64Micro(maxIf(claimed_at, transition = 'resolved'))) AS resolved_us
FROM alert_incidents
WHERE {scope}
GROUP BY incident_key, seq
ORDER BY incident_key, seq DESC
LIMIT 1 BY incident_key
"""


def claim_incident(
    query: Runner,
    execute: Callable[[str, Mapping[str, Any]], None],
    *,
    key: str,
    seq: int,
    transition: str,
    rule: str,
    condition: str,
    tenant: str,
    subject: str,
    details: dict[str, Any],
    me: str,
) -> bool:
    """Claim the notice of ``transition`` of incident (``key``, ``seq``); True if ``me`` won it."""
    if transition not in TRANSITIONS:
        raise ValueError(f"transition must be one of {TRANSITIONS}, got {transition!r}")
    # A hex digest: the one value spliced into the text, since SETTINGS takes no parameters.
    token = hashlib.sha256(f"dashfrog-alert\0{key}\0{seq}\0{transition}".encode()).hexdigest()
    params = {
        "key": key,
        "seq": seq,
        "transition": transition,
        "rule": rule,
        "condition": condition,
        "tenant": tenant,
        "subject": subject,
        "details": json.dumps(details, sort_keys=True, default=str),
        "me": me,
    }
    execute(_CLAIM.replace("__TOKEN__", token), params)
    rows = query(_WINNER, {"key": key, "seq": seq, "transition": transition})
    return bool(rows) and rows[0]["claimed_by"] == me


def latest_incidents(query: Runner, *, tenant: str | None = None) -> list[dict[str, Any]]:
    """The latest incident of every key (of ``tenant`` if given), open or resolved."""
    params: dict[str, Any] = {}
    scope = "1"
    if tenant is not None:
        scope, params["tenant"] = "tenant = {tenant:String}", tenant
    out = []
    for row in query(_LATEST.replace("{scope}", scope), params):
        out.append(
            {
                "key": row["incident_key"],
                "seq": int(row["seq"]),
                "open": bool(row["opened"]) and not bool(row["resolved"]),
                "rule": row["rule_"],
                "condition": row["condition_"],
                "tenant": row["tenant_"],
                "subject": row["subject_"],
                "details": json.loads(row["details_"] or "{}"),
                "opened_at": _iso(row["opened_us"]) if row["opened"] else None,
                "resolved_at": _iso(row["resolved_us"]) if row["resolved"] else None,
            }
        )
    return out


def _iso(us: int) -> str:
    from datetime import UTC

    return datetime.fromtimestamp(int(us) / 1e6, tz=UTC).isoformat()
