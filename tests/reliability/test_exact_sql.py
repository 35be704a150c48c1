"""Every SQL example in the README returns exact counts on a store that holds
redelivered events.

A message delivered again after a crash, or rewritten in a batch of other
offsets, writes its events again under another insert token: ``events`` then
holds the same event twice until a background merge. User SQL runs with
FINAL on every table (``final = 1``), so the README's queries answer as if
each event had been written once.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

from dashfrog import schemas
from tests.streams._helpers import flow_events

README = Path(__file__).resolve().parents[2] / "README.md"

# Values for the parameters the examples bind, when the example gives none.
DEFAULT_PARAMS = {"t": "acme-corp", "tenant": "acme-corp", "name": "data_import", "flow_name": "data_import"}

_PY = re.compile(r"""query\.sql\(\s*(?P<q>"(?:[^"\\]|\\.)*")\s*(?:,\s*(?P<p>\{[^}]*\}))?\s*\)""")
_CLI = re.compile(r"""dashfrog sql (?P<q>"(?:[^"\\]|\\.)*")(?P<rest>(?:\s+-p\s+\S+)*)""")
_FENCE = re.compile(r"```sql\n(?P<body>.*?)```", re.DOTALL)


def readme_sql() -> list[tuple[str, dict[str, Any]]]:
    """(statement, parameters) of every SQL example in the README."""
    text = README.read_text()
    found: list[tuple[str, dict[str, Any]]] = []
    for match in _PY.finditer(text):
        params = ast.literal_eval(match["p"]) if match["p"] else {}
        found.append((ast.literal_eval(match["q"]), params))
    for match in _CLI.finditer(text):
        words = shlex.split(match["rest"])
        params = dict(w.split("=", 1) for w in words if w != "-p")
        found.append((shlex.split(match["q"])[0], params))
    for match in _FENCE.finditer(text):
        lines = [line for line in match["body"].splitlines() if not line.strip().startswith("--")]
        statements = [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
        # Queries only: a block of grants or DDL for a server is not an example to count with.
        found += [(s, {}) for s in statements if s.split(None, 1)[0].upper() in ("SELECT", "WITH")]
    return found


def _with_defaults(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    wanted = set(re.findall(r"\{(\w+):", sql))
    return {**{k: v for k, v in DEFAULT_PARAMS.items() if k in wanted}, **params}


def test_the_readme_has_sql_examples_to_check() -> None:
    statements = [sql for sql, _ in readme_sql()]
    assert any("FROM events" in sql and "count()" in sql for sql in statements), statements
    assert any("FROM flows" in sql for sql in statements), statements


def test_every_readme_sql_example_is_exact_after_redelivery(store: Any) -> None:
    acme = [{**e, "tenant": "acme-corp", "flow_name": "data_import"} for e in flow_events(60, steps=2, fail_every=4)]
    other = flow_events(40, tenants=3)
    events: list[schemas.Event] = [*acme, *other]  # type: ignore[list-item]
    examples = readme_sql()

    def answers() -> list[list[dict[str, Any]]]:
        return [store.select(sql, _with_defaults(sql, params)) for sql, params in examples]

    store.insert_events(events, "delivery-1")
    once = answers()
    # The truth the README's own example promises, from the events themselves.
    count = store.select("SELECT count() AS n FROM events WHERE tenant = {t:String}", {"t": "acme-corp"})
    assert count == [{"n": len(acme)}]

    # The same messages delivered twice more, cut into other batches (other
    # tokens). Background merges would fold the copies in a few seconds; held
    # off, the copies stay, as they do until a merge on a busy store.
    store._execute("SYSTEM STOP MERGES")
    try:
        store.insert_events(events[::-1], "delivery-2")
        for i in range(0, len(events), 37):
            store.insert_events(events[i : i + 37], f"delivery-3-{i}")
        raw = store._query("SELECT count() AS n FROM events WHERE tenant = 'acme-corp'")
        assert int(raw[0]["n"]) == 3 * len(acme), "the copies are not there: nothing would be tested"

        assert answers() == once, [sql for sql, _ in examples]
        assert store.select("SELECT count() AS n FROM events WHERE tenant = {t:String}", {"t": "acme-corp"}) == count
    finally:
        store._execute("SYSTEM START MERGES")
