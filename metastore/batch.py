"""A write transaction shared by store calls, and what it writes at its end.

Every write of instances and series summaries runs in a :class:`WriteBatch`:
a plain ``MetaStore`` call opens one of its own and finishes it just before
it commits; ``MetaStore.batch()`` opens one that several calls share (a
launch file writes many small studies in one transaction), with savepoints
for a part that must be undone alone (a study that fails).

A batch keeps what it has learnt (the study rows it locked, the series it
found or created, with their instance counts) so later calls skip those
look-ups, and it defers to its end (:meth:`WriteBatch.finish`) what can be
written in one go: the instances of series known to be empty (one bulk
insert), the counts of series grown after their creation, the rendered
metadata of the series written (dropped), each touched study's counts and
ModalitiesInStudy, and the outbox rows, last (see ``outbox.write_events``).
On PostgreSQL all of that is one round trip (psycopg's pipeline mode).

Events keep their meaning inside a batch: each ``add_instances`` call still
writes one ``INSTANCES_ADDED`` per series it changed and each
``add_series_metadata`` call one ``SERIES_ADDED`` per study, in call order;
they are written and announced when the batch commits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.engine import Connection

from metastore import records, statements, writer
from metastore.errors import InvalidMetadata
from metastore.outbox import Event, EventType, event_row, send_events
from metastore.records import Where
from metastore.writer import StudyState

#: (StudyInstanceUID, SeriesInstanceUID)
SeriesKey = tuple[str, str]
#: One instance's row values, as ``records.instance_values`` makes them.
Values = tuple[Any, ...]

# The instances columns a bulk insert writes, in ``writer.INSTANCE_COLUMNS`` order, and
# their PostgreSQL array types (the rows go over as one binary array per column, see
# ``statements.any_of``).
_INSTANCE_TYPES = ("bigint", "text", "text", "int", "int", "int", "int", "text", "text", "jsonb")
_BULK_ROWS = 5000  # rows per bulk statement on PostgreSQL (arrays of this length)


def group_instances(
    instance_list: Iterable[Mapping[str, Any]],
) -> tuple[dict[SeriesKey, dict[str, Values]], dict[SeriesKey, Mapping[str, Any]]]:
    """Check and encode each instance once, grouped by series (last write of a UID wins).

    Returns the rows by series and SOPInstanceUID, and each series' first
    instance (its study and series rows are made from it when missing).
    """
    grouped: dict[SeriesKey, dict[str, Values]] = {}
    first_meta: dict[SeriesKey, Mapping[str, Any]] = {}
    for item, meta in enumerate(instance_list):
        records.check_mapping(meta, "instance", item)
        values = records.instance_values(meta, item)
        key = (values[0], values[1])
        by_sop = grouped.get(key)
        if by_sop is None:
            by_sop = grouped[key] = {}
            first_meta[key] = meta
        by_sop[values[2]] = values
    return grouped, first_meta


@dataclass(frozen=True)
class _Mark:
    """A batch's state when a savepoint was taken, to go back to on its rollback."""

    studies: dict[str, StudyState]
    series: dict[tuple[int, str, str], tuple[int, int]]
    queued: list[tuple[Any, ...]]
    queued_series: set[int]
    grown: dict[int, int]
    touched: set[int]
    outbox: int
    new_sources: dict[str, int]


@dataclass(eq=False, kw_only=True)
class WriteBatch:
    """One write transaction's state: see the module docstring.

    ``shared``: opened by ``MetaStore.batch()`` (calls inside it return no
    events; ``events`` holds them once it has committed).
    """

    connection: Connection
    shared: bool = False
    thread: int = field(default_factory=threading.get_ident)
    studies: dict[str, StudyState] = field(default_factory=dict)
    # (source id, study UID, series UID) -> (series id, instances it holds)
    series: dict[tuple[int, str, str], tuple[int, int]] = field(default_factory=dict)
    queued: list[tuple[Any, ...]] = field(default_factory=list)  # rows for empty series
    queued_series: set[int] = field(default_factory=set)
    grown: dict[int, int] = field(default_factory=dict)  # series id -> instances added
    touched: set[int] = field(default_factory=set)  # series whose rendered metadata is stale
    outbox: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    # -- what the batch knows --------------------------------------------------

    def lock_studies(self, first_meta: Mapping[str, Mapping[str, Any]]) -> dict[str, StudyState]:
        """The batch's studies, locking (or creating) those it has not met yet."""
        missing = {uid: meta for uid, meta in first_meta.items() if uid not in self.studies}
        if missing:
            self.studies.update(writer.ensure_studies(self.connection, missing))
        return self.studies

    def remember_series(self, source_id: int, known: Mapping[SeriesKey, tuple[int, int]]) -> None:
        """Series (id, instance count) found by another write in this batch."""
        for key, value in known.items():
            self.series[(source_id, *key)] = value

    def place(
        self,
        source_id: int,
        first_meta: dict[SeriesKey, Mapping[str, Any]],
        counts: Mapping[SeriesKey, int],
    ) -> dict[SeriesKey, tuple[int, int, bool]]:
        """(id, instances held, created now) of each series, with their studies locked.

        Studies and series the batch has not met are created when missing,
        from the first item of each, all in one round trip on PostgreSQL:
        the studies inserted (existing ones left alone) and locked in UID
        order, the series looked up, the missing ones inserted. A series
        created here holds ``counts[key]`` instances from the start: they
        are about to be added, and with its study locked nothing else can
        add one before this transaction ends.
        """
        connection = self.connection
        study_meta = {study: first_meta[(study, s)] for study, s in reversed(first_meta)}
        new_studies = {uid: meta for uid, meta in study_meta.items() if uid not in self.studies}
        found: dict[SeriesKey, tuple[int, int, bool]] = {}
        unknown = []
        for key in first_meta:
            cached = self.series.get((source_id, *key))
            if cached is None:
                unknown.append(key)
            else:
                found[key] = (*cached, False)
        rows = [self._series_row(key, first_meta[key], counts[key]) for key in unknown]
        with statements.pipeline(connection):
            if new_studies:
                writer.send_create_studies(connection, new_studies)
                locked = writer.send_lock_studies(connection, new_studies)
            if unknown:
                looked = writer.send_existing_series(connection, source_id, unknown)
                made = writer.send_create_series(connection, source_id, rows)
        if new_studies:
            self.studies.update(locked())
        if not unknown:
            return found
        for key, (id_, count) in looked().items():
            found[key] = (id_, count, False)
        study_uids = {state.id: uid for uid, state in self.studies.items()}
        modality = {(row["study_uid"], row["series_uid"]): row["modality"] for row in rows}
        for study_id, series_uid, id_ in made():
            key = (study_uids[study_id], series_uid)
            found[key] = (id_, counts[key], True)
            state = self.studies[key[0]]
            state.new_series += 1
            if modality[key]:
                state.modalities.add(modality[key])
        lost = [key for key in unknown if key not in found]
        if lost:
            # Only a writer that skipped the study lock could make one meanwhile.
            raise InvalidMetadata(
                "series was created by another writer meanwhile",
                study_uid=lost[0][0],
                series_uid=lost[0][1],
            )
        return found

    @staticmethod
    def _series_row(key: SeriesKey, meta: Mapping[str, Any], count: int) -> dict[str, Any]:
        study_uid, series_uid = key
        picked = records.pick(meta, records.SERIES_KEYS)
        row = records.series_row(picked, Where(study_uid=study_uid, series_uid=series_uid))
        row["num_instances"] = count
        return row

    # -- writing instances ----------------------------------------------------

    def add_instances(
        self,
        source_id: int,
        source: str,
        grouped: Mapping[SeriesKey, Mapping[str, Values]],
        first_meta: dict[SeriesKey, Mapping[str, Any]],
        *,
        made_in_client: bool,
    ) -> tuple[int, int, int]:
        """Write grouped instances (see ``group_instances``); (inserted, updated, unchanged).

        Into a series known to be empty the rows are queued for one bulk
        insert at the end; otherwise they are upserted now and unchanged
        rows are not written.
        """
        counts = {key: len(rows) for key, rows in grouped.items()}
        ids = self.place(source_id, first_meta, counts)
        states = self.studies
        inserted = updated = unchanged = 0
        for key in sorted(grouped):
            study_uid, series_uid = key
            by_sop = grouped[key]
            series_id, held, created = ids[key]
            if created or held == 0:
                self.queued.extend((series_id, *values[2:]) for values in by_sop.values())
                self.queued_series.add(series_id)
                added, changed = len(by_sop), 0
                if not created:
                    self.grown[series_id] = self.grown.get(series_id, 0) + added
            else:
                if series_id in self.queued_series:
                    self._write_queued()  # the upsert must meet the rows queued for it
                added, changed = writer.write_instances(self.connection, series_id, by_sop.values())
            self.series[(source_id, *key)] = (series_id, (0 if created else held) + added)
            states[study_uid].new_instances += added
            inserted += added
            updated += changed
            unchanged += len(by_sop) - added - changed
            if added or changed:
                self.touched.add(series_id)
                if not made_in_client:
                    self.outbox.append(
                        event_row(
                            EventType.INSTANCES_ADDED,
                            study_uid,
                            series_uid,
                            source,
                            {"added": added, "updated": changed},
                        )
                    )
        return inserted, updated, unchanged

    def _write_queued(self) -> None:
        rows, self.queued = self.queued, []
        self.queued_series = set()
        if not rows:
            return
        if self.connection.dialect.name != "postgresql":
            statements.driver(self.connection).executemany(_insert_sql(self.connection), rows)
            return
        for start in range(0, len(rows), _BULK_ROWS):
            columns = [
                list(column) for column in zip(*rows[start : start + _BULK_ROWS], strict=True)
            ]
            statements.run(self.connection, _insert_sql(self.connection), columns)

    # -- the end ----------------------------------------------------------------

    def own_events(self) -> tuple[Event, ...]:
        """The events of a call's own batch once finished; none inside a shared one."""
        return () if self.shared else tuple(self.events)

    def finish(self) -> list[Event]:
        """Write what was deferred, then the outbox rows; the events (once, at the end)."""
        if not (self.studies or self.queued or self.grown or self.touched or self.outbox):
            return self.events
        for state in self.studies.values():
            if state.recount_modalities:
                writer.recount_modalities(self.connection, state)
        with statements.pipeline(self.connection):
            self._write_queued()
            self._write_grown()
            writer.forget_rendered(self.connection, self.touched)
            writer.finish_studies(self.connection, [self.studies[u] for u in sorted(self.studies)])
            read = send_events(self.connection, self.outbox)
        self.events = read()
        self.outbox = []
        return self.events

    def _write_grown(self) -> None:
        if not self.grown:
            return
        mark = statements.placeholder(self.connection)
        statements.driver(self.connection).cursor().executemany(
            f"UPDATE series SET num_instances = num_instances + {mark} WHERE id = {mark}",
            [(added, id_) for id_, added in sorted(self.grown.items())],
        )
        self.grown = {}

    # -- savepoints --------------------------------------------------------------

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part of the batch undone alone (rows and the batch's state) if it raises."""
        mark = self._mark()
        try:
            with self.connection.begin_nested():
                yield
        except BaseException:
            self._restore(mark)
            raise

    def _mark(self) -> _Mark:
        return _Mark(
            studies={uid: _copy(state) for uid, state in self.studies.items()},
            series=dict(self.series),
            queued=list(self.queued),
            queued_series=set(self.queued_series),
            grown=dict(self.grown),
            touched=set(self.touched),
            outbox=len(self.outbox),
            new_sources=dict(self.connection.info.get("metastore_new_sources", {})),
        )

    def _restore(self, mark: _Mark) -> None:
        self.studies = mark.studies
        self.series = mark.series
        self.queued = mark.queued
        self.queued_series = mark.queued_series
        self.grown = mark.grown
        self.touched = mark.touched
        del self.outbox[mark.outbox :]
        self.connection.info["metastore_new_sources"] = mark.new_sources


def _copy(state: StudyState) -> StudyState:
    return replace(state, modalities=set(state.modalities))


def _insert_sql(connection: Connection) -> str:
    """The bulk insert of instance rows: executemany on SQLite, one array per column on
    PostgreSQL (``unnest``: one statement, prepared once, fitting a pipeline where COPY
    cannot go)."""
    names = ", ".join(f'"{name}"' for name in writer.INSTANCE_COLUMNS)
    if connection.dialect.name != "postgresql":
        return f"INSERT INTO instances ({names}) VALUES ({', '.join('?' * len(_INSTANCE_TYPES))})"
    arrays = ", ".join(f"%b::{kind}[]" for kind in _INSTANCE_TYPES)
    return f"INSERT INTO instances ({names}) SELECT * FROM unnest({arrays})"
