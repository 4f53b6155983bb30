"""QIDO-RS searches over the index: one page of DICOM JSON rows, a count, a cap.

Each search is two statements in one read transaction: the page (the
matching row ids in a stable order, limited and offset inside the database,
joined back to their metadata and computed counts) and, when asked, the
total. Order: newest study first (StudyDate, StudyTime descending, empty
last), then StudyInstanceUID; series by SeriesNumber then UID; instances by
InstanceNumber then UID.

The same series (or instance) held by two sources is one result: the first
indexed row represents it, and its counts count distinct UIDs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore import db, reads
from metastore.errors import QueryError
from metastore.schema import instances, series, studies
from metastore.search import compile as sql
from metastore.search.attributes import Level
from metastore.search.compile import alias as _alias
from metastore.search.query import Search, parse
from metastore.search.results import dicom_row, multi, return_keys
from metastore.store import MetaStore

log = logging.getLogger(__name__)

DEFAULT_MAX_LIMIT = 1000
"""The most rows one search returns unless the caller configures another cap."""

Query = Mapping[str, str | Sequence[str]]


@dataclass(frozen=True, kw_only=True)
class SearchResult:
    """One page of a search."""

    rows: list[dict[str, Any]]  # DICOM JSON (PS3.18 F.2) objects, tag-keyed
    total: int | None  # every match, when asked (count=True)
    truncated: bool  # the configured cap cut the page and more rows exist
    warnings: tuple[str, ...]  # e.g. fuzzy matching asked where it is not possible


def search_studies(
    store: MetaStore,
    query: Query,
    *,
    limit: int | None = None,
    offset: int = 0,
    count: bool = False,
    max_limit: int = DEFAULT_MAX_LIMIT,
) -> SearchResult:
    """Studies matching a QIDO-RS query (``GET /studies?...``), newest first."""
    return _search(store, query, Level.STUDY, {}, limit, offset, count, max_limit)


def search_series(
    store: MetaStore,
    query: Query,
    *,
    study_uid: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    count: bool = False,
    max_limit: int = DEFAULT_MAX_LIMIT,
) -> SearchResult:
    """Series matching a QIDO-RS query (``/series`` or ``/studies/{study}/series``)."""
    return _search(
        store, query, Level.SERIES, {Level.STUDY: study_uid}, limit, offset, count, max_limit
    )


def search_instances(
    store: MetaStore,
    query: Query,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    count: bool = False,
    max_limit: int = DEFAULT_MAX_LIMIT,
) -> SearchResult:
    """Instances matching a QIDO-RS query (``/instances``, ``.../series/{series}/instances``)."""
    scope = {Level.STUDY: study_uid, Level.SERIES: series_uid}
    return _search(store, query, Level.INSTANCE, scope, limit, offset, count, max_limit)


def _search(
    store: MetaStore,
    query: Query,
    level: Level,
    scope: Mapping[Level, str | None],
    limit: int | None,
    offset: int,
    count: bool,
    max_limit: int,
) -> SearchResult:
    if max_limit < 1:
        raise QueryError(f"the maximum page size must be at least 1, not {max_limit}")
    if limit is not None and limit < 0 or offset < 0:
        raise QueryError(f"limit and offset must not be negative (limit {limit}, offset {offset})")
    search = parse(query)
    asked = limit if limit is not None else search.limit
    start = offset or search.offset
    page = max_limit if asked is None else min(asked, max_limit)
    scoped = max((lvl for lvl, uid in scope.items() if uid is not None), default=None)
    plan = _Plan(search, level, scope, store.dialect)
    with _reading(store) as connection:
        rows = plan.page(connection, page + 1, start)
        total = plan.count(connection) if count else None
    truncated = len(rows) > page and (asked is None or asked > max_limit)
    keys = return_keys(search, level, scoped)
    built = [plan.row(keys, search.include_all, row) for row in rows[:page]]
    log.debug(
        "%s search: %d rows (offset %d, total %s)", level.name.lower(), len(built), start, total
    )
    return SearchResult(rows=built, total=total, truncated=truncated, warnings=search.warnings)


def search_statements(
    store: MetaStore,
    query: Query,
    *,
    level: str = "study",
    study_uid: str | None = None,
    series_uid: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The (page, count) statements of a search, for EXPLAIN and benchmarks."""
    try:
        chosen = Level[level.upper()]
    except KeyError:
        raise QueryError(f"no search level {level!r}: study, series or instance") from None
    scope = {Level.STUDY: study_uid, Level.SERIES: series_uid}
    plan = _Plan(parse(query), chosen, scope, store.dialect)
    return plan.page_statement(limit, offset), plan.count_statement()


@contextmanager
def _reading(store: MetaStore) -> Iterator[Connection]:
    """The connection a search reads through, errors translated.

    PostgreSQL: autocommit, since under READ COMMITTED each statement takes
    its own snapshot anyway, and BEGIN and ROLLBACK would be two more round
    trips. SQLite: one read transaction (a plain BEGIN, one snapshot).
    """
    if store.dialect != "postgresql":
        with db.reading(store.engine, "searching the index") as connection:
            yield connection
        return
    with db.translate_errors("searching the index"), store.engine.connect() as connection:
        yield connection.execution_options(isolation_level="AUTOCOMMIT")


class _Plan:
    """The statements of one search."""

    def __init__(
        self, search: Search, level: Level, scope: Mapping[Level, str | None], dialect: str
    ) -> None:
        self.level = level
        self.dialect = dialect
        self.include_classes = "SOPClassesInStudy" in search.includefield or search.include_all
        where = sql.conditions(search.terms, level, dialect)
        if scope.get(Level.STUDY) is not None:
            where.append(studies.c.study_uid == scope[Level.STUDY])
        if scope.get(Level.SERIES) is not None:
            where.append(series.c.series_uid == scope[Level.SERIES])
        if level == Level.SERIES:
            where.append(_first_series(series))
        if level == Level.INSTANCE:
            earlier = _alias(instances, "di")
            where.append(
                ~sa.exists().where(
                    earlier.c.sop_uid == instances.c.sop_uid, earlier.c.id < instances.c.id
                )
            )
        self.where = where
        self.source = _source(level)
        self.table = {Level.STUDY: studies, Level.SERIES: series, Level.INSTANCE: instances}[level]

    def _order(self, columns: Mapping[str, Any]) -> list[Any]:
        order = [
            columns["study_date"].desc().nulls_last(),
            columns["study_time"].desc().nulls_last(),
            columns["study_uid"],
        ]
        if self.level >= Level.SERIES:
            order += [columns["series_number"].asc().nulls_last(), columns["series_uid"]]
        if self.level == Level.INSTANCE:
            order += [columns["instance_number"].asc().nulls_last(), columns["sop_uid"]]
        return order

    def page(self, connection: Connection, limit: int, offset: int) -> list[Any]:
        return list(connection.execute(self.page_statement(limit, offset)).mappings())

    def page_statement(self, limit: int, offset: int) -> sa.Select[Any]:
        keys: dict[str, Any] = {
            "study_date": studies.c.study_date,
            "study_time": studies.c.study_time,
            "study_uid": studies.c.study_uid,
        }
        if self.level >= Level.SERIES:
            keys |= {"series_number": series.c.series_number, "series_uid": series.c.series_uid}
        if self.level == Level.INSTANCE:
            keys |= {"instance_number": instances.c.instance_number, "sop_uid": instances.c.sop_uid}
        inner = (
            sa.select(self.table.c.id.label("row_id"), *(c.label(k) for k, c in keys.items()))
            .select_from(self.source)
            .where(*self.where)
            .order_by(*self._order(keys))
            .limit(limit)
            .offset(offset)
            .subquery("page")
        )
        outer = (
            sa.select(*self._columns())
            .select_from(inner.join(self.table, self.table.c.id == inner.c.row_id))
            .order_by(*self._order(dict(inner.c.items())))
        )
        if self.level == Level.SERIES:
            outer = outer.join(studies, studies.c.id == series.c.study_id)
        return outer

    def count_statement(self) -> sa.Select[Any]:
        return sa.select(sa.func.count()).select_from(self.source).where(*self.where)

    def count(self, connection: Connection) -> int:
        return int(connection.execute(self.count_statement()).scalar_one())

    def _columns(self) -> list[Any]:
        if self.level == Level.STUDY:
            columns = [
                studies.c.metadata.label("study"),
                studies.c.modalities_in_study,
                *_study_counts(),
            ]
            if self.include_classes:
                columns.append(_sop_classes(self.dialect).label("sop_classes"))
            return columns
        if self.level == Level.SERIES:
            return [
                series.c.metadata.label("series"),
                studies.c.metadata.label("study"),
                _series_count().label("series_instances"),
            ]
        # The kept JSON text, decoded with orjson: as the reads do (reads.py).
        return [reads.METADATA_TEXT.label("instance")]

    def row(self, keys: Sequence[str], include_all: bool, row: Mapping[str, Any]) -> dict[str, Any]:
        if self.level == Level.STUDY:
            computed = {
                "ModalitiesInStudy": multi(row["modalities_in_study"], "\\"),
                "NumberOfStudyRelatedSeries": row["study_series"],
                "NumberOfStudyRelatedInstances": row["study_instances"],
            }
            if self.include_classes:
                computed["SOPClassesInStudy"] = multi(row["sop_classes"], ",")
            return dicom_row(keys, include_all, [row["study"]], computed)
        if self.level == Level.SERIES:
            computed = {"NumberOfSeriesRelatedInstances": row["series_instances"]}
            documents = [row["series"]]
            if include_all or any(k in row["study"] and k not in row["series"] for k in keys):
                documents.append(row["study"])
            return dicom_row(keys, include_all, documents, computed)
        return dicom_row(keys, include_all, [reads.decode(row["instance"])], {})


def _source(level: Level) -> sa.FromClause:
    if level == Level.STUDY:
        return studies
    joined = series.join(studies, studies.c.id == series.c.study_id)
    if level == Level.SERIES:
        return joined
    return instances.join(joined, series.c.id == instances.c.series_id)


@functools.cache
def _first_series(row: sa.FromClause) -> Any:
    """The row is the first indexed of its series (one result however many sources hold it)."""
    other = _alias(series, "ds")
    return ~sa.exists().where(
        other.c.study_id == row.c.study_id,
        other.c.series_uid == row.c.series_uid,
        other.c.id < row.c.id,
    )


@functools.cache
def _study_counts() -> list[Any]:
    """NumberOfStudyRelatedSeries/Instances: distinct UIDs, cheap when one source holds the study."""
    s = _alias(series, "cs")
    distinct_series = (
        sa.select(sa.func.count(sa.distinct(s.c.series_uid)))
        .where(s.c.study_id == studies.c.id)
        .scalar_subquery()
    )
    s2, i = _alias(series, "cs2"), _alias(instances, "ci")
    distinct_instances = (
        sa.select(sa.func.count(sa.distinct(i.c.sop_uid)))
        .select_from(s2.join(i, i.c.series_id == s2.c.id))
        .where(s2.c.study_id == studies.c.id)
        .scalar_subquery()
    )
    # Two sources hold one of the study's series: count distinct UIDs. Otherwise
    # the kept counts are exact (and a DISTINCT count costs ~70 us a row on PostgreSQL).
    one, other = _alias(series, "cd1"), _alias(series, "cd2")
    shared = sa.exists().where(
        one.c.study_id == studies.c.id,
        other.c.study_id == studies.c.id,
        other.c.series_uid == one.c.series_uid,
        other.c.id != one.c.id,
    )
    series_count = sa.case((shared, distinct_series), else_=studies.c.num_series)
    instances_count = sa.case((shared, distinct_instances), else_=studies.c.num_instances)
    return [series_count.label("study_series"), instances_count.label("study_instances")]


@functools.cache
def _series_count() -> Any:
    """NumberOfSeriesRelatedInstances: distinct SOP UIDs over every source's copy of the series."""
    same = _alias(series, "ss")
    copies = (
        sa.select(sa.func.count())
        .where(same.c.study_id == series.c.study_id, same.c.series_uid == series.c.series_uid)
        .scalar_subquery()
    )
    same2, i = _alias(series, "ss2"), _alias(instances, "si")
    distinct = (
        sa.select(sa.func.count(sa.distinct(i.c.sop_uid)))
        .select_from(same2.join(i, i.c.series_id == same2.c.id))
        .where(same2.c.study_id == series.c.study_id, same2.c.series_uid == series.c.series_uid)
        .scalar_subquery()
    )
    return sa.case((copies == 1, series.c.num_instances), else_=distinct)


@functools.cache
def _sop_classes(dialect: str) -> Any:
    """The distinct SOP classes of the study's instances, comma-joined."""
    s, i = _alias(series, "ks"), _alias(instances, "ki")
    distinct = sa.distinct(i.c.sop_class_uid)
    joined = (
        sa.func.string_agg(distinct, sa.literal(","))
        if dialect == "postgresql"
        else sa.func.group_concat(distinct)
    )
    return (
        sa.select(joined)
        .select_from(s.join(i, i.c.series_id == s.c.id))
        .where(s.c.study_id == studies.c.id)
        .scalar_subquery()
    )
