"""``MetaStore``: the persistent counterpart of OHIF's ``DicomMetadataStore``.

Each public write owns one transaction: the rows it writes, the counts it
keeps up and the outbox rows that announce the change commit together or not
at all. Writes are set-based (one multi-row upsert per table per series);
reads are a fixed number of queries whatever the size of the study.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from metastore import db, reads, records, writer
from metastore.batch import WriteBatch, group_instances
from metastore.errors import InvalidMetadata, MetastoreError, StoreClosed
from metastore.names import check_name
from metastore.outbox import Event, EventType, event_row, read_changes, write_events
from metastore.records import Where
from metastore.schema import series, sources, studies

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]


@dataclass(frozen=True, kw_only=True)
class SourceInfo:
    """A registered source: a named backend the index is filled from."""

    id: int
    name: str
    kind: str
    root_url: str | None
    settings: Mapping[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> SourceInfo:
        return cls(
            id=row["id"],
            name=row["name"],
            kind=row["kind"],
            root_url=row["root_url"],
            settings=row["settings"],
        )


@dataclass(frozen=True, kw_only=True)
class WriteResult:
    """What one write call changed."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    events: tuple[Event, ...] = ()


class MetaStore:
    """A persistent, SQL-backed index of DICOM study, series and instance metadata.

    ``url`` is a SQLAlchemy database URL (SQLite or ``postgresql+psycopg``);
    None takes ``METASTORE_DATABASE_URL``, else ``sqlite:///metastore.db``.
    A brand-new database is migrated to head; one behind head raises
    ``SchemaNotAtHead``; ``read_only``: opened read-only, never created or
    migrated. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self, url: str | None = None, *, migrate: bool = True, read_only: bool = False
    ) -> None:
        self.url = db.resolve_url(url)
        self._engine: Engine | None = db.create_engine(self.url, read_only=read_only)
        self._listeners: dict[EventType, list[Listener]] = defaultdict(list)
        self._source_ids: dict[str, int] = {}
        self._local = threading.local()  # the open batch of each thread
        self._read_only: bool | None = True if read_only else None
        if migrate:
            try:
                db.ensure_schema(self._engine, create=not read_only)
            except BaseException:
                self.close()
                raise

    # -- lifecycle -----------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The store's engine (raises ``StoreClosed`` once closed)."""
        if self._engine is None:
            raise StoreClosed(f"the store for {db.redact(self.url)} is closed")
        return self._engine

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @property
    def read_only(self) -> bool:
        """Whether this store cannot write: opened ``read_only``, or a database that
        refuses writes (a PostgreSQL hot standby, or ``default_transaction_read_only``).

        Asked of the server once, on first use.
        """
        if self._read_only is None:
            with self.reading("checking whether the database takes writes") as connection:
                self._read_only = db.refuses_writes(connection)
        return self._read_only

    def close(self) -> None:
        """Release the database connections. Closing twice is harmless."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> MetaStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._engine is None else "open"
        return f"<MetaStore {db.redact(self.url)} {state}>"

    def _writing(self, what: str) -> AbstractContextManager[Connection]:
        if getattr(self._local, "batch", None) is not None:
            # It would wait for the batch's own locks (SQLite: its write lock) forever.
            raise MetastoreError(f"{what}: not inside MetaStore.batch(); do it before or after")
        return db.writing(self.engine, what)

    def reading(self, what: str) -> AbstractContextManager[Connection]:
        """A read-only transaction (``what`` names it in a ``DatabaseError``), for readers too."""
        return db.reading(self.engine, what)

    # -- sources -------------------------------------------------------------

    def register_source(
        self,
        name: str,
        kind: str = "client",
        *,
        root_url: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> SourceInfo:
        """Create or update a source. ``settings`` must hold no secrets."""
        _check_source_name(name)
        values = {
            "name": name,
            "kind": kind,
            "root_url": root_url,
            "settings": dict(settings or {}),
        }
        with self._writing(f"registering source {name!r}") as connection:
            statement = db.upsert(connection, sources).values(values)
            statement = statement.on_conflict_do_update(
                index_elements=[sources.c.name],
                set_={"kind": kind, "root_url": root_url, "settings": values["settings"]},
            ).returning(*sources.c)
            row = connection.execute(statement).mappings().one()
        self._source_ids[name] = row["id"]
        return SourceInfo.from_row(row)

    def get_source(self, name: str) -> SourceInfo | None:
        """The source of that name, or None."""
        with self.reading("reading a source") as connection:
            row = (
                connection.execute(sa.select(sources).where(sources.c.name == name))
                .mappings()
                .first()
            )
        return None if row is None else SourceInfo.from_row(row)

    def list_sources(self) -> list[SourceInfo]:
        """Every registered source, by name."""
        with self.reading("listing sources") as connection:
            rows = connection.execute(sa.select(sources).order_by(sources.c.name)).mappings()
            return [SourceInfo.from_row(row) for row in rows]

    def _source_id(self, connection: Connection, name: str) -> int:
        """The id of the source, creating it (kind ``client``) on first use."""
        cached = self._source_ids.get(name)
        if cached is not None:
            return cached
        _check_source_name(name)
        statement = db.upsert(connection, sources).values(name=name, kind="client", settings={})
        connection.execute(statement.on_conflict_do_nothing(index_elements=[sources.c.name]))
        source_id: int = connection.execute(
            sa.select(sources.c.id).where(sources.c.name == name)
        ).scalar_one()
        # Cached only once committed: a rolled-back creation must not linger.
        connection.info.setdefault("metastore_new_sources", {})[name] = source_id
        return source_id

    def _remember_sources(self, connection: Connection) -> None:
        self._source_ids.update(connection.info.pop("metastore_new_sources", {}))

    # -- writes --------------------------------------------------------------

    def add_study(self, study: Mapping[str, Any], *, source: str = "client") -> WriteResult:
        """Add or update study-level metadata (a QIDO-RS study row, naturalized)."""
        return self.add_studies([study], source=source)

    def add_studies(
        self, studies_: Iterable[Mapping[str, Any]], *, source: str = "client"
    ) -> WriteResult:
        """Add or update the study-level metadata of several studies in one transaction."""
        rows: dict[str, dict[str, Any]] = {}
        for item, meta in enumerate(studies_):
            records.check_mapping(meta, "study", item)
            row = records.study_row(meta, Where(item=item))
            rows[row["study_uid"]] = row
        if not rows:
            return WriteResult()
        with self._transaction("adding studies") as batch:
            self._source_id(batch.connection, source)
            existing = writer.lock_studies(batch.connection, rows)
            written = writer.upsert_studies(batch.connection, [rows[uid] for uid in sorted(rows)])
        inserted = sum(1 for uid in written if uid not in existing)
        return WriteResult(
            inserted=inserted, updated=len(written) - inserted, unchanged=len(rows) - len(written)
        )

    def add_series_metadata(
        self,
        series_list: Iterable[Mapping[str, Any]],
        *,
        source: str = "client",
        made_in_client: bool = False,
    ) -> WriteResult:
        """Add series summaries (QIDO-RS series rows, naturalized).

        Writes one ``SERIES_ADDED`` per study whose series list changed,
        naming the series that were added or changed; none when
        ``made_in_client`` (OHIF's ``madeInClient``) or when nothing changed.
        """
        by_study: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        first_meta: dict[str, Mapping[str, Any]] = {}
        for item, meta in enumerate(series_list):
            records.check_mapping(meta, "series", item)
            row = records.series_row(meta, Where(item=item))
            by_study[row["study_uid"]][row["series_uid"]] = row
            first_meta.setdefault(row["study_uid"], meta)
        if not by_study:
            return WriteResult()
        inserted = updated = unchanged = 0
        with self._transaction("adding series metadata") as batch:
            connection = batch.connection
            source_id = self._source_id(connection, source)
            states = batch.lock_studies(first_meta)
            for study_uid in sorted(by_study):
                rows = list(by_study[study_uid].values())
                written, new, known = writer.upsert_series(
                    connection, states[study_uid], source_id, rows
                )
                batch.remember_series(source_id, known)
                inserted += new
                updated += len(written) - new
                unchanged += len(rows) - len(written)
                if written and not made_in_client:
                    batch.outbox.append(
                        event_row(
                            EventType.SERIES_ADDED,
                            study_uid,
                            None,
                            source,
                            {"SeriesInstanceUIDs": sorted(written)},
                        )
                    )
        return WriteResult(
            inserted=inserted, updated=updated, unchanged=unchanged, events=batch.own_events()
        )

    def add_instances(
        self,
        instance_list: Iterable[Mapping[str, Any]],
        *,
        source: str = "client",
        made_in_client: bool = False,
    ) -> WriteResult:
        """Add instance metadata (naturalized, with ``url`` and ``imageId``).

        A batch may span series and studies. Each series with new or changed
        instances gets one ``INSTANCES_ADDED``; none when ``made_in_client``
        or when nothing changed. A changed instance is updated in place.
        Studies and series not yet indexed are created from the instances.
        """
        grouped, first_meta = group_instances(instance_list)
        if not grouped:
            return WriteResult()
        with self._transaction("adding instances") as batch:
            source_id = self._source_id(batch.connection, source)
            inserted, updated, unchanged = batch.add_instances(
                source_id, source, grouped, first_meta, made_in_client=made_in_client
            )
        return WriteResult(
            inserted=inserted, updated=updated, unchanged=unchanged, events=batch.own_events()
        )

    @contextmanager
    def _transaction(self, what: str) -> Iterator[WriteBatch]:
        """The open batch of this thread, else a transaction of the call's own."""
        shared: WriteBatch | None = getattr(self._local, "batch", None)
        if shared is not None:
            with db.translate_errors(what):
                yield shared
            return
        with self._writing(what) as connection:
            batch = WriteBatch(connection=connection)
            yield batch
            batch.finish()
            self._remember_sources(connection)
        self._notify(batch.events)

    @contextmanager
    def batch(self, what: str = "writing a batch") -> Iterator[WriteBatch]:
        """One transaction for every ``add_*`` call made in the block (by this thread).

        Its rows and events commit together at the end of the block, or
        not at all; the calls inside return no events (the batch's
        ``events`` holds them once committed, and listeners hear them
        then). A batch opened inside a batch is a savepoint: if its block
        raises, what was written in it is undone and the outer batch goes
        on. Other writes (deletes, sources) are refused inside a batch
        (they would wait for its locks): make them before or after it.
        """
        shared: WriteBatch | None = getattr(self._local, "batch", None)
        if shared is not None:
            with db.translate_errors(what), shared.savepoint():
                yield shared
            return
        with self._writing(what) as connection:
            batch = WriteBatch(connection=connection, shared=True)
            self._local.batch = batch
            try:
                yield batch
                batch.finish()
            finally:
                self._local.batch = None
            self._remember_sources(connection)
        self._notify(batch.events)

    def delete_study(self, study_uid: str) -> bool:
        """Delete a study with every series list and instance; writes ``STUDY_DELETED``.

        Returns False (and writes nothing) when the study is not indexed.
        """
        with self._writing(f"deleting study {study_uid}") as connection:
            row = connection.execute(
                sa.delete(studies)
                .where(studies.c.study_uid == str(study_uid))
                .returning(studies.c.num_series, studies.c.num_instances)
            ).first()
            if row is None:
                return False
            payload = {"numSeries": row.num_series, "numInstances": row.num_instances}
            event = event_row(EventType.STUDY_DELETED, str(study_uid), None, None, payload)
            events = write_events(connection, [event])
        self._notify(events)
        return True

    def delete_source(self, name: str) -> list[writer.RemovedSeries] | None:
        """Delete a source and its series lists (None: no such source); see ``writer``."""
        with self._writing(f"deleting source {name}") as connection:
            removed, rows = writer.delete_source_rows(connection, name)
            events = write_events(connection, rows)
        self._source_ids.pop(name, None)
        self._notify(events)
        return removed

    def remove_series(
        self, study_uid: str, *, source: str, series_uids: Iterable[str] | None = None
    ) -> Event | None:
        """Remove a source's series of a study (all, or those named): ``STUDY_DELETED`` when no
        other source holds it (it goes too), else ``SERIES_REMOVED``; None if it held none."""
        with self._writing(f"removing series of study {study_uid}") as connection:
            source_id = self._source_id(connection, source)
            uids, count, gone = writer.remove_series(connection, study_uid, source_id, series_uids)
            if not uids:
                return None
            row = writer.removal_event_row(study_uid, source, uids, count, gone)
            events = write_events(connection, [row])
        self._notify(events)
        return events[0]

    # -- reads ---------------------------------------------------------------

    def get_study(self, study_uid: str) -> dict[str, Any] | None:
        """The study with its series lists (one per source) and their instances.

        Three queries whatever the size of the study.
        """
        with self.reading(f"reading study {study_uid}") as connection:
            return reads.get_study(connection, study_uid)

    def get_series(
        self, study_uid: str, series_uid: str, *, source: str | None = None
    ) -> dict[str, Any] | None:
        """One series with its instances (from ``source``, else the first source by name)."""
        with self.reading(f"reading series {series_uid}") as connection:
            return reads.get_series(connection, study_uid, series_uid, source)

    def get_instance(
        self, study_uid: str, series_uid: str, sop_uid: str, *, source: str | None = None
    ) -> dict[str, Any] | None:
        """One instance's metadata with ``url`` and ``imageId``, or None."""
        with self.reading(f"reading instance {sop_uid}") as connection:
            return reads.get_instance(connection, study_uid, series_uid, sop_uid, source)

    def get_instance_by_image_id(self, image_id: str) -> dict[str, Any] | None:
        """The instance a viewer's imageId (or retrieval url) names, or None.

        A frame imageId (``...?frame=3``, ``...&frame=3``, ``.../frames/3``)
        that was not stored as such finds its instance through the imageId
        without the frame, so every imageId of a multi-frame instance's
        ``imageIds`` finds it.
        """
        with self.reading("finding an instance by imageId") as connection:
            return reads.get_instance_by_image_id(connection, image_id)

    def study_uids(self, *, source: str | None = None) -> list[str]:
        """Every indexed StudyInstanceUID (those with a series in ``source`` when given), sorted."""
        with self.reading("listing studies") as connection:
            return reads.study_uids(connection, source)

    def changes(self, after: int = 0, limit: int = 1000) -> list[Event]:
        """Outbox events with ``seq > after``, in sequence order, at most ``limit``."""
        with self.reading("reading the change feed") as connection:
            return read_changes(connection, after, limit)

    def stats(self) -> list[dict[str, Any]]:
        """Studies, series and instances by source and modality."""
        query = (
            sa.select(
                sources.c.name.label("source"),
                series.c.modality,
                sa.func.count(sa.distinct(series.c.study_id)).label("studies"),
                sa.func.count().label("series"),
                sa.func.coalesce(sa.func.sum(series.c.num_instances), 0).label("instances"),
            )
            .join(sources, sources.c.id == series.c.source_id)
            .group_by(sources.c.name, series.c.modality)
            .order_by(sources.c.name, series.c.modality)
        )
        with self.reading("computing statistics") as connection:
            # str(): column names come back as SQLAlchemy's quoted_name.
            return [
                {str(k): v for k, v in row.items()} for row in connection.execute(query).mappings()
            ]

    # -- in-process listeners ------------------------------------------------

    def subscribe(self, event: EventType | str, callback: Listener) -> Callable[[], None]:
        """Call ``callback(event)`` after this process commits an event of that type.

        Returns a function that unsubscribes. For events from every process,
        read the change feed (``changes`` or ``metastore.events``) instead.
        """
        kind = EventType(event)
        self._listeners[kind].append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners[kind]:
                self._listeners[kind].remove(callback)

        return unsubscribe

    def _notify(self, events: Sequence[Event]) -> None:
        for event in events:
            for callback in list(self._listeners.get(event.type, ())):
                try:
                    callback(event)
                except Exception:
                    # A listener's failure must not undo or hide a committed write.
                    log.exception("listener %r failed on event %s", callback, event.seq)


def _check_source_name(name: Any) -> None:
    check_name(name, "source", InvalidMetadata, field="source")
