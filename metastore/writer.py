"""Set-based writes of the index, inside a transaction the caller owns.

Every function takes a ``Connection`` and never commits: ``MetaStore``'s
public methods open the transaction, call these, write the outbox rows and
commit once, so rows, counts and events land together or not at all.

Concurrency: the study rows a call touches are locked first (``SELECT ...
FOR UPDATE`` in UID order on PostgreSQL; SQLite has one writer at a time),
so writers of one study take turns and its counts and ModalitiesInStudy
stay exact; writers of different studies do not wait for each other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore import records, statements
from metastore.errors import InvalidMetadata
from metastore.outbox import EventType, event_row
from metastore.records import Where
from metastore.schema import instances, series, sources, studies

STUDY_COLUMNS = (
    "study_uid",
    "patient_id",
    "patient_name",
    "study_date",
    "study_time",
    "accession_number",
    "study_description",
    "metadata",
)
SERIES_COLUMNS = (
    "study_id",
    "source_id",
    "series_uid",
    "modality",
    "series_number",
    "series_description",
    "series_date",
    "series_time",
    "metadata",
)
# The instance row values (records.instance_values) after the study and series UIDs.
INSTANCE_COLUMNS = ("series_id", *records.INSTANCE_FIELDS[2:])
_TOUCH = {"updated_at": "CURRENT_TIMESTAMP"}
# version: 1 on insert, +1 on each change; RETURNING it tells the two apart.
_INSTANCE_TOUCH = {**_TOUCH, "version": "instances.version + 1"}
_IN_CHUNK = 500  # UIDs per IN (...) list


@dataclass(kw_only=True)
class StudyState:
    """A locked study row's id and the counts this transaction adds to it."""

    id: int
    modalities: set[str]
    new_series: int = 0
    new_instances: int = 0
    recount_modalities: bool = False
    stored_modalities: frozenset[str] = field(default_factory=frozenset)  # as the row has them


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def lock_studies(connection: Connection, uids: Iterable[str]) -> dict[str, StudyState]:
    """Lock the existing study rows among ``uids`` (in UID order) and return their state."""
    return send_lock_studies(connection, uids)()


def send_lock_studies(
    connection: Connection, uids: Iterable[str]
) -> Callable[[], dict[str, StudyState]]:
    """``lock_studies``' statements, sent (``statements.send``); what reads their answer."""
    lock = " FOR UPDATE" if connection.dialect.name == "postgresql" else ""
    cursors = []
    for chunk in _chunks(sorted(set(uids))):
        condition, params = statements.any_of(connection, chunk)
        sql = (
            "SELECT study_uid, id, modalities_in_study FROM studies "
            f"WHERE study_uid {condition} ORDER BY study_uid{lock}"
        )
        cursors.append(statements.send(connection, sql, params))

    def read() -> dict[str, StudyState]:
        found: dict[str, StudyState] = {}
        for cursor in cursors:
            for uid, id_, modalities in cursor.fetchall():
                present = set(modalities.split("\\")) if modalities else set()
                found[uid] = StudyState(
                    id=id_, modalities=present, stored_modalities=frozenset(present)
                )
        return found

    return read


def ensure_studies(
    connection: Connection, first_meta: Mapping[str, Mapping[str, Any]]
) -> dict[str, StudyState]:
    """Lock the studies, creating missing ones from the study-level keys of their first item."""
    send_create_studies(connection, first_meta)
    return lock_studies(connection, first_meta)


def send_create_studies(
    connection: Connection, first_meta: Mapping[str, Mapping[str, Any]]
) -> None:
    """Send the insert of the study rows not there yet (in UID order; existing rows are
    left alone), each from the study-level keys of its first item. Lock them after."""
    rows = [
        records.study_row(records.pick(first_meta[uid], records.STUDY_KEYS), Where(study_uid=uid))
        for uid in sorted(first_meta)
    ]
    statements.send_upsert(
        connection,
        studies,
        [[row[c] for c in STUDY_COLUMNS] for row in rows],
        columns=STUDY_COLUMNS,
        conflict=("study_uid",),
        returning=("id",),
        update=False,
    )


def upsert_studies(connection: Connection, rows: list[dict[str, Any]]) -> list[str]:
    """Insert or update study-level rows; returns the UIDs written (unchanged ones are not)."""
    written = statements.upsert_many(
        connection,
        studies,
        [[row[c] for c in STUDY_COLUMNS] for row in rows],
        columns=STUDY_COLUMNS,
        conflict=("study_uid",),
        returning=("study_uid",),
        touch=_TOUCH,
    )
    return [uid for (uid,) in written]


def existing_series(
    connection: Connection, source_id: int, wanted: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, int]]:
    """(id, instance count) of the (study, series) pairs this source already holds.

    Refuses a series UID the source holds under another study: a
    SeriesInstanceUID belongs to one study (PS3.3 C.7.3.1), so the input's
    StudyInstanceUID contradicts the index.
    """
    return send_existing_series(connection, source_id, wanted)()


def send_existing_series(
    connection: Connection, source_id: int, wanted: Iterable[tuple[str, str]]
) -> Callable[[], dict[tuple[str, str], tuple[int, int]]]:
    """``existing_series``' statements, sent (``statements.send``); what reads their answer."""
    home = {series_uid: study_uid for study_uid, series_uid in wanted}
    mark = statements.placeholder(connection)
    cursors = []
    for chunk in _chunks(list(home)):
        condition, params = statements.any_of(connection, chunk)
        sql = (
            "SELECT series.series_uid, series.id, series.num_instances, studies.study_uid "
            "FROM series JOIN studies ON studies.id = series.study_id "
            f"WHERE series.source_id = {mark} AND series.series_uid {condition}"
        )
        cursors.append(statements.send(connection, sql, [source_id, *params]))

    def read() -> dict[tuple[str, str], tuple[int, int]]:
        found: dict[tuple[str, str], tuple[int, int]] = {}
        for cursor in cursors:
            for series_uid, id_, count, stored_study in cursor.fetchall():
                if stored_study != home[series_uid]:
                    raise InvalidMetadata(
                        f"series is already indexed under study {stored_study}; "
                        "StudyInstanceUID differs from its series' study",
                        field="StudyInstanceUID",
                        study_uid=home[series_uid],
                        series_uid=series_uid,
                    )
                found[(stored_study, series_uid)] = (id_, count)
        return found

    return read


def send_create_series(
    connection: Connection, source_id: int, rows: list[dict[str, Any]]
) -> Callable[[], list[tuple[int, str, int]]]:
    """Send the insert of the series rows (``records.series_row`` with ``num_instances``)
    whose UID the source holds under no study yet, each under its study's row (locked
    before); what reads (study id, series UID, id) of those created."""
    postgres = connection.dialect.name == "postgresql"
    cursors = []
    for chunk in _chunks(rows) if not postgres else [rows]:
        if postgres:
            params = [[row[name] for row in chunk] for name in _NEW_SERIES]
        else:
            params = [row[name] for row in chunk for name in _NEW_SERIES]
        sql = _create_series_sql(postgres, len(chunk))
        cursors.append(statements.send(connection, sql, [*params, source_id, source_id]))

    def read() -> list[tuple[int, str, int]]:
        return [tuple(row) for cursor in cursors for row in cursor.fetchall()]

    return read


# The values of a new series row, in the order _create_series_sql takes them.
_NEW_SERIES = ("study_uid", *SERIES_COLUMNS[2:], "num_instances")
_NEW_SERIES_TYPES = ("text", "text", "text", "int", "text", "text", "text", "jsonb", "int")


@functools.lru_cache(maxsize=64)
def _create_series_sql(postgres: bool, count: int) -> str:
    """The new series as one array per column (PostgreSQL) or a VALUES list (SQLite)."""
    columns = ", ".join(_NEW_SERIES)
    if postgres:
        arrays = ", ".join(f"%b::{kind}[]" for kind in _NEW_SERIES_TYPES)
        rows, mark = f"SELECT * FROM unnest({arrays})", "%s"
    else:
        slots = "(" + ", ".join("?" * len(_NEW_SERIES)) + ")"
        rows, mark = f"VALUES {', '.join([slots] * count)}", "?"
    return (
        f"WITH v({columns}) AS ({rows}) "
        f"INSERT INTO series ({', '.join(SERIES_COLUMNS)}, num_instances) "
        f"SELECT st.id, {mark}, {', '.join(f'v.{name}' for name in _NEW_SERIES[1:])} "
        "FROM v JOIN studies st ON st.study_uid = v.study_uid "
        f"WHERE NOT EXISTS (SELECT 1 FROM series s WHERE s.source_id = {mark} "
        "AND s.series_uid = v.series_uid) "
        "RETURNING study_id, series_uid, id"
    )


def upsert_series(
    connection: Connection, state: StudyState, source_id: int, rows: list[dict[str, Any]]
) -> tuple[list[str], int, dict[tuple[str, str], tuple[int, int]]]:
    """Insert or update a study's series summaries.

    Returns the UIDs written, how many were new, and (id, instance count)
    of every series in ``rows``.
    """
    known = existing_series(
        connection, source_id, [(r["study_uid"], r["series_uid"]) for r in rows]
    )
    written = statements.upsert_many(
        connection,
        series,
        [
            [{**row, "study_id": state.id, "source_id": source_id}[c] for c in SERIES_COLUMNS]
            for row in rows
        ],
        columns=SERIES_COLUMNS,
        conflict=("study_id", "source_id", "series_uid"),
        returning=("series_uid", "id"),
        touch=_TOUCH,
    )
    study_uid = rows[0]["study_uid"]
    new = 0
    for series_uid, id_ in written:
        if (study_uid, series_uid) not in known:
            known[(study_uid, series_uid)] = (id_, 0)
            new += 1
    # The rendered metadata of a rewritten series is stale from this commit on.
    forget_rendered(connection, [id_ for _uid, id_ in written])
    state.new_series += new
    if written:
        # A summary may change a series' modality: recount rather than add.
        state.recount_modalities = True
    return [uid for uid, _id in written], new, known


def write_instances(
    connection: Connection, series_id: int, rows: Iterable[tuple[Any, ...]]
) -> tuple[int, int]:
    """Upsert instances into a series that holds some already; returns (inserted, updated).

    ``rows``: ``records.instance_values`` tuples. Unchanged rows are not
    written. (Rows for an empty series are bulk-inserted by the batch.)
    """
    values = [(series_id, *row[2:]) for row in rows]
    written = statements.upsert_many(
        connection,
        instances,
        values,
        columns=INSTANCE_COLUMNS,
        conflict=("series_id", "sop_uid"),
        returning=("version",),
        touch=_INSTANCE_TOUCH,
    )
    added = sum(1 for (version,) in written if version == 1)
    if added:
        mark = statements.placeholder(connection)
        statements.run(
            connection,
            f"UPDATE series SET num_instances = num_instances + {mark} WHERE id = {mark}",
            (added, series_id),
        )
    return added, len(written) - added


def forget_rendered(connection: Connection, series_ids: Iterable[int]) -> None:
    """Delete the rendered metadata (``metastore serve``'s cache) of these series.

    Called in the transaction that writes to them, so no reader ever sees a
    rendered answer older than the rows it was rendered from once they commit.
    """
    for chunk in _chunks(sorted(set(series_ids))):
        condition, params = statements.any_of(connection, chunk)
        statements.run(
            connection, f"DELETE FROM rendered_series WHERE series_id {condition}", params
        )


def recount_modalities(connection: Connection, state: StudyState) -> None:
    """Take the study's ModalitiesInStudy from its series rows (a summary may change one)."""
    mark = statements.placeholder(connection)
    rows = statements.fetch(
        connection,
        f"SELECT DISTINCT modality FROM series WHERE study_id = {mark} AND modality IS NOT NULL",
        (state.id,),
    )
    state.modalities = {modality for (modality,) in rows}
    state.recount_modalities = False


def finish_studies(connection: Connection, states: Iterable[StudyState]) -> None:
    """Write each study's new counts and ModalitiesInStudy (one statement each that changed)."""
    mark = statements.placeholder(connection)
    sql = (
        f"UPDATE studies SET num_series = num_series + {mark}, "
        f"num_instances = num_instances + {mark}, "
        f"modalities_in_study = CASE WHEN {mark} THEN {mark} ELSE modalities_in_study END, "
        f"updated_at = CURRENT_TIMESTAMP WHERE id = {mark}"
    )
    for state in states:
        recount = state.modalities != state.stored_modalities
        if not (recount or state.new_series or state.new_instances):
            continue
        modalities = "\\".join(sorted(state.modalities)) or None
        statements.run(
            connection,
            sql,
            (state.new_series, state.new_instances, recount, modalities, state.id),
        )
        # Written: a later finish of the same state writes only what comes after.
        state.new_series = state.new_instances = 0
        state.stored_modalities = frozenset(state.modalities)


def finish_study(connection: Connection, state: StudyState) -> None:
    """Write the study's new counts and ModalitiesInStudy, recounted first when asked."""
    if state.recount_modalities:
        recount_modalities(connection, state)
    finish_studies(connection, [state])


def remove_series(
    connection: Connection, study_uid: str, source_id: int, series_uids: Iterable[str] | None
) -> tuple[list[str], int, dict[str, int] | None]:
    """Delete a source's series of a study (all of them, or those named) with their instances.

    Returns the series UIDs removed, how many instances they held, and,
    when the study is left without any series of any source (and is
    deleted too), its counts before the removal; otherwise None and the
    study's counts and ModalitiesInStudy are brought down.
    """
    state = lock_studies(connection, [study_uid]).get(study_uid)
    if state is None:
        return [], 0, None
    where = sa.and_(series.c.study_id == state.id, series.c.source_id == source_id)
    if series_uids is not None:
        where = sa.and_(where, series.c.series_uid.in_(sorted(set(series_uids))))
    removed = connection.execute(
        sa.delete(series).where(where).returning(series.c.series_uid, series.c.num_instances)
    ).all()
    uids = sorted(uid for uid, _count in removed)
    count = sum(n for _uid, n in removed)
    if not removed:
        return [], 0, None
    left = connection.execute(
        sa.select(sa.func.count()).select_from(series).where(series.c.study_id == state.id)
    ).scalar_one()
    if left == 0:
        gone = connection.execute(
            sa.delete(studies)
            .where(studies.c.id == state.id)
            .returning(studies.c.num_series, studies.c.num_instances)
        ).one()
        return uids, count, {"numSeries": gone.num_series, "numInstances": gone.num_instances}
    state.new_series -= len(removed)
    state.new_instances -= count
    state.recount_modalities = True
    finish_study(connection, state)
    return uids, count, None


@dataclass(frozen=True, kw_only=True)
class RemovedSeries:
    """What removing one source's series list of a study removed."""

    study_uid: str
    series_uids: list[str]
    instances: int
    study_deleted: bool


def removal_event_row(
    study_uid: str, source: str, series_uids: list[str], instances: int, gone: dict[str, int] | None
) -> dict[str, Any]:
    """The outbox row announcing a removal: ``STUDY_DELETED`` when the study went with it
    (payload: its counts before), else ``SERIES_REMOVED`` (payload: the series and their
    instance count)."""
    if gone is not None:
        return event_row(EventType.STUDY_DELETED, study_uid, None, source, gone)
    payload = {"SeriesInstanceUIDs": series_uids, "numInstances": instances}
    return event_row(EventType.SERIES_REMOVED, study_uid, None, source, payload)


def delete_source_rows(
    connection: Connection, name: str
) -> tuple[list[RemovedSeries] | None, list[dict[str, Any]]]:
    """Delete a source with its series lists (``remove_series`` per study, in UID order) and
    return what went with the outbox rows for the caller to write; ``None`` when there is no
    such source."""
    source_id = connection.execute(sa.select(sources.c.id).where(sources.c.name == name)).scalar()
    if source_id is None:
        return None, []
    study_uids = connection.execute(
        sa.select(studies.c.study_uid)
        .join(series, series.c.study_id == studies.c.id)
        .where(series.c.source_id == source_id)
        .distinct()
        .order_by(studies.c.study_uid)
    ).scalars()
    removed: list[RemovedSeries] = []
    rows: list[dict[str, Any]] = []
    for study_uid in list(study_uids):
        uids, count, gone = remove_series(connection, study_uid, source_id, None)
        removed.append(
            RemovedSeries(
                study_uid=study_uid,
                series_uids=uids,
                instances=count,
                study_deleted=gone is not None,
            )
        )
        rows.append(removal_event_row(study_uid, name, uids, count, gone))
    connection.execute(sa.delete(sources).where(sources.c.id == source_id))
    return removed, rows
