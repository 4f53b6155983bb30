"""Search results for people and scripts: a table or CSV of DICOM JSON rows.

Columns are the attributes the rows hold, in tag order, headed by keyword;
a cell is the attribute's values joined with ``\\`` (a person name by its
alphabetic group, a sequence by its item count).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from metastore.dicom import keyword_for_tag
from metastore.errors import QueryError

_WIDEST = 40  # characters of a table cell


def query_from_pairs(
    pairs: Iterable[str], includefield: Sequence[str] = ()
) -> dict[str, list[str]]:
    """QIDO parameters from ``KEY=VALUE`` words (a key may repeat)."""
    query: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise QueryError(f"{pair!r} is not KEY=VALUE", parameter=pair)
        query.setdefault(key.strip(), []).append(value)
    if includefield:
        query.setdefault("includefield", []).extend(includefield)
    return query


def cell(element: Mapping[str, Any]) -> str:
    """One attribute's values as text."""
    values = element.get("Value") or []
    if element.get("vr") == "SQ":
        return f"<{len(values)} items>"
    parts = []
    for value in values:
        if isinstance(value, Mapping):
            value = value.get("Alphabetic", "")
        parts.append("" if value is None else str(value))
    return "\\".join(parts)


def write_rows(out: TextIO, rows: Sequence[Mapping[str, Any]], kind: str) -> None:
    """Write rows as ``table`` (aligned columns) or ``csv``."""
    tags = sorted({tag for row in rows for tag in row})
    header = [keyword_for_tag(tag) or tag for tag in tags]
    body = [[cell(row[tag]) if tag in row else "" for tag in tags] for row in rows]
    if kind == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(body)
        return
    if not rows:
        out.write("no matches\n")
        return
    clipped = [[v if len(v) <= _WIDEST else v[: _WIDEST - 1] + "…" for v in line] for line in body]
    widths = [max(len(h), *(len(line[i]) for line in clipped)) for i, h in enumerate(header)]
    for line in (header, *clipped):
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")
