"""A checked QIDO-RS query as SQL: WHERE conditions over the index's tables.

Every value reaches the database as a bound parameter; nothing is filtered
in Python. The key columns are matched directly, in forms their indexes
serve (PostgreSQL: ``LIKE``/``ILIKE`` through ``pg_trgm`` GIN indexes;
SQLite: a ``NOCASE`` or binary range on the literal prefix of a pattern);
every other attribute is matched in the stored JSON: PostgreSQL walks it
with ``jsonb_path_query`` (the path is bound too, built only from checked
keywords and tags), SQLite with ``json_each``/``json_tree``.

A key at a lower level than the search matches a row when any of its
series or instances matches (an ``IN`` over the lower table).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from metastore.schema import instances, series, studies
from metastore.search.attributes import Level
from metastore.search.query import (
    DateTimeRange,
    Exact,
    Match,
    Name,
    Number,
    Pattern,
    Range,
    Term,
    Uids,
)

Condition = ColumnElement[Any]

# Key columns by keyword: the level, the column, and its kind when it differs
# from the attribute's VR reading ("time": a TM column, compared normalized).
_COLUMNS: dict[str, tuple[Level, sa.Column[Any]]] = {
    "StudyInstanceUID": (Level.STUDY, studies.c.study_uid),
    "PatientID": (Level.STUDY, studies.c.patient_id),
    "PatientName": (Level.STUDY, studies.c.patient_name),
    "StudyDate": (Level.STUDY, studies.c.study_date),
    "StudyTime": (Level.STUDY, studies.c.study_time),
    "AccessionNumber": (Level.STUDY, studies.c.accession_number),
    "StudyDescription": (Level.STUDY, studies.c.study_description),
    "NumberOfStudyRelatedSeries": (Level.STUDY, studies.c.num_series),
    "NumberOfStudyRelatedInstances": (Level.STUDY, studies.c.num_instances),
    "SeriesInstanceUID": (Level.SERIES, series.c.series_uid),
    "Modality": (Level.SERIES, series.c.modality),
    "SeriesNumber": (Level.SERIES, series.c.series_number),
    "SeriesDescription": (Level.SERIES, series.c.series_description),
    "SeriesDate": (Level.SERIES, series.c.series_date),
    "SeriesTime": (Level.SERIES, series.c.series_time),
    "NumberOfSeriesRelatedInstances": (Level.SERIES, series.c.num_instances),
    "SOPInstanceUID": (Level.INSTANCE, instances.c.sop_uid),
    "SOPClassUID": (Level.INSTANCE, instances.c.sop_class_uid),
    "InstanceNumber": (Level.INSTANCE, instances.c.instance_number),
    "NumberOfFrames": (Level.INSTANCE, instances.c.number_of_frames),
    "Rows": (Level.INSTANCE, instances.c.rows),
    "Columns": (Level.INSTANCE, instances.c.columns),
}
_TABLES = {Level.STUDY: studies, Level.SERIES: series, Level.INSTANCE: instances}
# The highest code point: ``prefix + _TOP`` sorts after every string that starts with prefix.
_TOP = "\U0010ffff"
_NUMBER_RE = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"


def conditions(terms: tuple[Term, ...], level: Level, dialect: str) -> list[Condition]:
    """The WHERE conditions of a search at ``level`` (FROM studies[/series[/instances]])."""
    return [_lifted(term, level, _Sql(dialect)) for term in terms]


def _lifted(term: Term, level: Level, sql: _Sql) -> Condition:
    """The term's condition, lifted to the search's level through ``IN`` when it is lower."""
    name = term.path[0]
    if name == "ModalitiesInStudy" and len(term.path) == 1:
        # ModalitiesInStudy is the set of its series' modalities: match those,
        # through the (modality, study_id) index, rather than the joined text.
        inner = alias(series, "m")
        condition = _any(term, lambda m: sql.column(m, "CS", inner.c.modality))
        return studies.c.id.in_(sa.select(inner.c.study_id).where(condition))
    if name == "SOPClassesInStudy" and len(term.path) == 1:
        s, i = alias(series, "xs"), alias(instances, "xi")
        condition = _any(term, lambda m: sql.column(m, "UI", i.c.sop_class_uid))
        return studies.c.id.in_(
            sa.select(s.c.study_id).join(i, i.c.series_id == s.c.id).where(condition)
        )
    if level == Level.INSTANCE and _column(term) is None:
        # An instance's metadata holds its study's and series' attributes too.
        return _at(term, instances, sql)
    if term.level <= level:
        return _own(term, _TABLES[term.level], sql)
    if level == Level.STUDY and term.level == Level.SERIES:
        s = alias(series, "ls")
        return studies.c.id.in_(sa.select(s.c.study_id).where(_own(term, s, sql)))
    if level == Level.STUDY:
        s2, i2 = alias(series, "ls"), alias(instances, "li")
        pairs = sa.select(s2.c.study_id).join(i2, i2.c.series_id == s2.c.id)
        return studies.c.id.in_(pairs.where(_at(term, i2, sql)))
    i = alias(instances, "li")
    return series.c.id.in_(sa.select(i.c.series_id).where(_at(term, i, sql)))


@functools.cache
def alias(table: sa.Table, name: str) -> Any:
    """One alias object per name: building an alias's columns costs more than the query."""
    return table.alias(name)


def _any(term: Term, one: Callable[[Match], Condition]) -> Condition:
    parts = [one(m) for m in term.alternatives]
    return parts[0] if len(parts) == 1 else sa.or_(*parts)


def _column(term: Term) -> sa.Column[Any] | None:
    """The key column that holds the term's attribute, if one does."""
    keyed = _COLUMNS.get(term.path[0]) if len(term.path) == 1 else None
    return keyed[1] if keyed is not None and keyed[0] == term.level else None


def _own(term: Term, table: sa.FromClause, sql: _Sql) -> Condition:
    """A study or series row's match: its key column, else its own metadata when that holds
    the attribute, else the metadata of its instances (a study indexed from its instances
    keeps only the main study attributes; the rest stay with the instances)."""
    if _column(term) is not None:
        return _at(term, table, sql)
    held = sql.holds(table.c.metadata, term.path[0])
    if term.level == Level.STUDY:
        s, i = alias(series, "os"), alias(instances, "oi")
        below = sa.exists(
            sa.select(sa.literal(1))
            .select_from(s.join(i, i.c.series_id == s.c.id))
            .where(s.c.study_id == table.c.id, _at(term, i, sql))
        )
    else:
        i = alias(instances, "oi")
        below = sa.exists(
            sa.select(sa.literal(1)).where(i.c.series_id == table.c.id, _at(term, i, sql))
        )
    return sa.or_(sa.and_(held, _at(term, table, sql)), sa.and_(sa.not_(held), below))


def _at(term: Term, table: sa.FromClause, sql: _Sql) -> Condition:
    """The term's condition on one row of a table (or an alias): key column or JSON."""
    key_column = _column(term)
    if key_column is not None and key_column.name in table.c:
        column = table.c[key_column.name]
        if term.partner is not None:
            partner = _COLUMNS[term.partner[0]][1]
            return _any(term, lambda m: sql.date_time(m, column, table.c[partner.name]))
        condition = _any(term, lambda m: sql.column(m, term.vr, column))
        if _non_ascii(term):
            # The column holds the alphabetic group; other groups are in the JSON.
            condition = sa.or_(condition, sql.json(term, table))
        return condition
    if term.partner is not None:
        return _any(term, lambda m: sql.json_date_time(m, term, table))
    return sql.json(term, table)


def _non_ascii(term: Term) -> bool:
    return term.vr == "PN" and any(
        isinstance(m, Name) and not m.text.isascii() for m in term.alternatives
    )


class _Sql:
    """The dialect's spelling of each kind of match."""

    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"

    # -- key columns ---------------------------------------------------------

    def column(self, match: Match, vr: str, column: Any) -> Condition:
        """A match on a key column, in a form its index serves."""
        if isinstance(match, Uids):
            return column.in_(match.uids)  # type: ignore[no-any-return]
        if isinstance(match, Number):
            return column == match.value  # type: ignore[no-any-return]
        if isinstance(match, Range):
            if vr == "DA":
                return _between(column, match.low, match.high, empty_is_none=True)
            return _between(self.sortable(vr, column), match.low, match.high)
        if isinstance(match, Name):
            return self.indexed_name(match, column)
        if isinstance(match, Pattern):
            return sa.and_(
                *self._prefix(column, match.text, nocase=False), self.glob(column, match.text)
            )
        if isinstance(match, Exact):
            return column == match.text  # type: ignore[no-any-return]
        raise AssertionError(f"not a key column match: {match!r}")  # pragma: no cover

    def indexed_name(self, match: Name, column: Any) -> Condition:
        if match.fuzzy:
            return self.fuzzy(match.text, column)
        like = _like(match.text)
        cleaned = self.clean_name(column)
        if self.pg:
            # Both sides are served by the trigram index; the last check drops
            # what only looked alike (a stored name with trailing carets).
            loose = sa.or_(column.ilike(like, escape="\\"), column.ilike(like + "^%", escape="\\"))
            return sa.and_(loose, cleaned.ilike(like, escape="\\"))
        return sa.and_(
            *self._prefix(column, match.text, nocase=True), cleaned.like(like, escape="\\")
        )

    def _prefix(self, column: Any, text: str, *, nocase: bool) -> list[Condition]:
        """SQLite: the literal prefix of a pattern as an index range (PostgreSQL uses pg_trgm)."""
        if self.pg:
            return []
        cut = min((text.find(c) for c in "*?" if c in text), default=len(text))
        prefix = text[:cut]
        if not prefix:
            return []
        keyed = column.collate("NOCASE") if nocase else column
        return [keyed >= prefix, keyed < prefix + _TOP]

    def glob(self, value: Any, pattern: str) -> Condition:
        """Case-sensitive wildcard matching of the whole value."""
        if self.pg:
            return value.like(_like(pattern), escape="\\")  # type: ignore[no-any-return]
        return value.op("GLOB")(_glob(pattern))  # type: ignore[no-any-return]

    def fuzzy(self, text: str, value: Any) -> Condition:
        """Each word of the query begins a word of the name (words split at ``^`` and space)."""
        words = [w for w in text.replace("^", " ").split(" ") if w]
        parts = []
        for word in words:
            like = _like(word)
            starts = [like + "%", "%^" + like + "%", "% " + like + "%"]
            if self.pg:
                parts.append(sa.or_(*(value.ilike(s, escape="\\") for s in starts)))
            else:
                parts.append(sa.or_(*(value.like(s, escape="\\") for s in starts)))
        return sa.and_(*parts) if parts else sa.true()

    def clean_name(self, value: Any) -> Any:
        """A stored name as ``matching`` compares it: spaces and trailing carets off."""
        return sa.func.trim(sa.func.rtrim(sa.func.trim(value), "^"))

    def date_time(self, match: Match, date: Any, time: Any) -> Condition:
        """A combined date-time range over a DA column and its TM column."""
        assert isinstance(match, DateTimeRange)
        joined = date + self.sortable("TM", sa.func.coalesce(time, ""))
        days = _between(
            date,
            None if match.low is None else match.low[:8],
            None if match.high is None else match.high[:8],
            empty_is_none=True,
        )
        return sa.and_(days, _between(joined, match.low, match.high))

    # -- the JSON --------------------------------------------------------------

    def holds(self, document: Any, name: str) -> Condition:
        """The document has a member ``name`` (a top-level attribute)."""
        if self.pg:
            return document.op("?", is_comparison=True)(sa.literal(name))  # type: ignore[no-any-return]
        return sa.func.json_type(document, f'$."{name}"').is_not(None)

    def json(self, term: Term, table: sa.FromClause) -> Condition:
        """Any value at the term's path in the row's JSON matches one alternative."""
        document = table.c.metadata
        if self.pg:
            source = (
                sa.func.jsonb_path_query(
                    document, sa.cast(sa.literal(_jsonpath(term)), postgresql.JSONPATH)
                )
                .table_valued("value")
                .render_derived()
            )
            node = source.c.value
            text = node.op("#>>")(sa.literal_column("'{}'"))
            kind = sa.func.jsonb_typeof(node)
            keep: Condition = kind.in_(("string", "number")) if term.vr != "PN" else sa.true()
        else:
            source, node = self._sqlite_leaves(term, document)
            text = node.c.value
            kind = sa.func.typeof(node.c.value)
            if term.vr == "PN":
                keep = node.c.type == "text"
            else:
                keep = sa.and_(
                    node.c.atom.is_not(None),
                    sa.or_(node.c.parent.is_(None), sa.func.typeof(node.c.key) == "integer"),
                )
        matched = _any(term, lambda m: self.leaf(m, term.vr, text, kind))
        walk = sa.exists(sa.select(sa.literal(1)).select_from(source).where(keep, matched))
        if len(term.path) > 1 or term.vr == "PN":
            return walk
        # The common case, one value at the top: read it directly (walking costs ~15 us a row).
        if self.pg:
            top: Any = document.op("->>")(sa.literal(term.path[0]))
            top_kind: Any = sa.func.jsonb_typeof(document.op("->")(sa.literal(term.path[0])))
            plain = top_kind.in_(("string", "number"))
        else:
            top = sa.func.json_extract(document, f'$."{term.path[0]}"')
            plain = sa.func.json_type(document, f'$."{term.path[0]}"').in_(
                ("text", "integer", "real")
            )
            top_kind = sa.func.typeof(top)
        direct = _any(term, lambda m: self.leaf(m, term.vr, top, top_kind))
        return sa.case((plain, direct), else_=walk)

    def _sqlite_leaves(self, term: Term, document: Any) -> tuple[Any, Any]:
        current = document
        froms = []
        for step, name in enumerate(term.path[:-1]):
            items = sa.func.json_each(current, f'$."{name}"').table_valued(
                "value", "type", name=f"q{step}"
            )
            froms.append(items)
            current = sa.case((items.c.type == "object", items.c.value), else_="{}")
        leaves = sa.func.json_tree(current, f'$."{term.path[-1]}"').table_valued(
            "value", "type", "atom", "key", "parent", name="leaf"
        )
        froms.append(leaves)
        source: Any = froms[0]
        for extra in froms[1:]:
            source = source.join(extra, sa.true())
        return source, leaves

    def leaf(self, match: Match, vr: str, text: Any, kind: Any) -> Condition:
        """A match on one value taken from the JSON (text, or a number)."""
        if isinstance(match, Number):
            return self._number(text, kind, match.value)
        trimmed = sa.func.trim(sa.cast(text, sa.Text))
        if isinstance(match, Uids):
            return trimmed.in_(match.uids)
        if isinstance(match, Range):
            return _between(self.sortable(vr, text), match.low, match.high, empty_is_none=True)
        if isinstance(match, Name):
            if match.fuzzy:
                return self.fuzzy(match.text, text)
            cleaned = self.clean_name(text)
            like = _like(match.text)
            if self.pg:
                return cleaned.ilike(like, escape="\\")  # type: ignore[no-any-return]
            return cleaned.like(like, escape="\\")  # type: ignore[no-any-return]
        if isinstance(match, Pattern):
            return self.glob(trimmed, match.text)
        if isinstance(match, Exact):
            return trimmed == match.text
        raise AssertionError(f"not a value match: {match!r}")  # pragma: no cover

    def _number(self, text: Any, kind: Any, wanted: float) -> Condition:
        trimmed = sa.func.trim(sa.cast(text, sa.Text))
        if self.pg:
            return sa.case(
                (kind == "number", sa.cast(trimmed, sa.Float) == wanted),
                (trimmed.op("~")(_NUMBER_RE), sa.cast(trimmed, sa.Float) == wanted),
                else_=sa.false(),
            )
        return sa.case(
            (kind.in_(("integer", "real")), text == wanted),
            (
                sa.and_(
                    kind == "text",
                    trimmed != "",
                    trimmed.op("NOT GLOB")("*[^0-9.eE+-]*"),
                    trimmed.op("GLOB")("*[0-9]*"),
                ),
                sa.cast(trimmed, sa.Float) == wanted,
            ),
            else_=sa.false(),
        )

    def json_date_time(self, match: Match, term: Term, table: sa.FromClause) -> Condition:
        """A combined date-time range over two top-level JSON attributes (first values)."""
        assert isinstance(match, DateTimeRange) and term.partner is not None
        date = self.scalar(table.c.metadata, term.path[-1])
        time = self.scalar(table.c.metadata, term.partner[-1])
        date = sa.func.replace(sa.func.replace(sa.func.trim(date), ".", ""), "-", "")
        return self.date_time(match, date, time)

    def scalar(self, document: Any, name: str) -> Any:
        if self.pg:
            return sa.func.jsonb_extract_path_text(document, sa.literal(name))
        return sa.func.json_extract(document, f'$."{name}"')

    # -- dates and times -------------------------------------------------------

    def sortable(self, vr: str, value: Any) -> Any:
        """The sortable form of a stored DA/TM/DT value (``matching``'s normal form, in SQL)."""
        text = sa.func.trim(sa.cast(value, sa.Text))
        if vr == "DA":
            return sa.func.replace(sa.func.replace(text, ".", ""), "-", "")
        width = 6 if vr == "TM" else 14
        text = sa.func.replace(text, ":", "") if vr == "TM" else self._without_offset(text)
        whole, fraction = self._split_point(text)
        return self._pad(whole, width) + "." + self._pad(fraction, 6)

    def _without_offset(self, text: Any) -> Any:
        if self.pg:
            return sa.func.regexp_replace(text, "[+-][0-9]{4}$", "")
        sign = sa.func.substr(text, -5, 1)
        return sa.case(
            (sign.in_(("+", "-")), sa.func.substr(text, 1, sa.func.length(text) - 5)), else_=text
        )

    def _split_point(self, text: Any) -> tuple[Any, Any]:
        if self.pg:
            return sa.func.split_part(text, ".", 1), sa.func.split_part(text, ".", 2)
        point = sa.func.instr(text, ".")
        whole = sa.case((point > 0, sa.func.substr(text, 1, point - 1)), else_=text)
        fraction = sa.case((point > 0, sa.func.substr(text, point + 1)), else_="")
        return whole, fraction

    def _pad(self, text: Any, width: int) -> Any:
        if self.pg:
            return sa.func.rpad(text, width, "0")
        return sa.func.substr(text + "0" * width, 1, width)


def _between(
    value: Any, low: str | None, high: str | None, *, empty_is_none: bool = False
) -> Condition:
    parts: list[Condition] = []
    if low is not None:
        parts.append(value >= low)
    elif empty_is_none:
        parts.append(value > "")  # an empty value is no date (C.2.2.2.5)
    if high is not None:
        parts.append(value <= high)
    return sa.and_(*parts)


def _like(pattern: str) -> str:
    """A DICOM wildcard pattern as a LIKE pattern (``\\`` escapes ``%``, ``_`` and itself)."""
    out = []
    for ch in pattern:
        if ch in "%_\\":
            out.append("\\" + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _glob(pattern: str) -> str:
    """A DICOM wildcard pattern as a SQLite GLOB pattern (``[`` taken literally)."""
    return "".join("[[]" if ch == "[" else ch for ch in pattern)


def _jsonpath(term: Term) -> str:
    """The SQL/JSON path of a term's values (lax mode: a single value counts as a list)."""
    steps = "".join(f'."{name}"[*]' for name in term.path[:-1])
    last = term.path[-1]
    if term.vr == "PN":
        return f'${steps}."{last}".** ? (@.type() == "string")'
    return f'${steps}."{last}"[*]'
