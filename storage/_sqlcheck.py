"""Admission of user SQL for ``dashfrog sql`` and ``POST /api/sql``.

The engine's ``readonly=1`` setting is the real guard; this module makes sure
every statement runs under it and rejects what readonly alone does not stop
(``INTO OUTFILE`` writes a file even in readonly mode, a ``DESCRIBE`` of a
table function reads it, several statements hide a write after a read).
"""

from __future__ import annotations

import re

from dashfrog._exceptions import QueryError

_ALLOWED = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS")
_DESCRIBE = re.compile(
    r"^\s*(DESCRIBE|DESC)\s+(TABLE\s+)?[A-Za-z_][A-Za-z0-9_]*(\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)?\s*$",
    re.IGNORECASE,
)
_FORBIDDEN = (
    (re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE), "INTO OUTFILE is not allowed"),
    (
        # The FORMAT clause, not the format() function or a column named format.
        re.compile(r"\bFORMAT\s+(?!AS\b)[A-Za-z_]\w*\b(?!\s*\()", re.IGNORECASE),
        "remove the FORMAT clause: rows are returned as records",
    ),
    (re.compile(r"\breadonly\b", re.IGNORECASE), "the readonly setting cannot be changed"),
)


def _code_only(sql: str) -> str:
    """``sql`` with string literals, quoted identifiers and comments blanked out,
    so keywords and semicolons are found only where the parser would see them."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                    continue
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:  # doubled quote escapes itself
                        j += 2
                        continue
                    break
                j += 1
            else:
                raise QueryError("unterminated quoted string or identifier in SQL")
            # Not spaces: a literal at the very end must survive the rstrip below.
            out.append("x" * (j + 1 - i))
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise QueryError("unterminated /* comment in SQL")
            out.append(" " * (j + 2 - i))
            i = j + 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def read_only_statement(sql: str) -> str:
    """The statement to run for user ``sql``, forced read-only; raises QueryError.

    SELECT and WITH queries are wrapped as a subquery so that one trailing
    ``SETTINGS readonly=1`` applies to all of them whatever clauses they carry.
    """
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("empty SQL: give one SELECT, WITH, SHOW or DESCRIBE statement")
    code = _code_only(sql).rstrip()
    while code.endswith(";"):
        code = code[:-1].rstrip()
    if ";" in code:
        raise QueryError("only one statement is allowed (found ';' between statements)")
    body = sql[: len(code)]
    words = code.split(None, 1)
    keyword = words[0].upper() if words else ""
    if keyword not in _ALLOWED:
        raise QueryError(
            f"only read queries are allowed (SELECT, WITH, SHOW, DESCRIBE); got {keyword or 'nothing'!r}"
        )
    for pattern, reason in _FORBIDDEN:
        if pattern.search(code):
            raise QueryError(reason)
    if keyword in ("SELECT", "WITH"):
        # S608 flags formatted SQL; this is the caller's own query, run read-only.
        return f"SELECT * FROM (\n{body}\n) SETTINGS readonly = 1"  # noqa: S608
    if keyword in ("DESCRIBE", "DESC") and not _DESCRIBE.match(code):
        raise QueryError("DESCRIBE takes a table name only (e.g. DESCRIBE TABLE flows)")
    if re.search(r"\bSETTINGS\b", code, re.IGNORECASE):
        raise QueryError(f"{keyword} statements cannot carry SETTINGS")
    return f"{body} SETTINGS readonly = 1"
