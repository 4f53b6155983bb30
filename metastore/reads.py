"""The store's reads: a study, a series or an instance as OHIF's naturalized metadata.

Each function takes a ``Connection`` inside the caller's read transaction
(``MetaStore`` owns it) and runs a fixed number of queries whatever the size
of the study.

Instance metadata is read as JSON text (``METADATA_TEXT``, kept by the
database: see revision 0008) and decoded once with orjson (``decode``): on
PostgreSQL, rendering JSONB into text and psycopg's own JSON decoding were
most of a large study's read time. Every reader of instance metadata in
bulk (the store, ``metastore serve``) reads it so.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore import records
from metastore.imageids import strip_frame
from metastore.schema import instances, series, sources, studies

_SERIES_QUERY = (
    sa.select(*series.c, sources.c.name.label("source"))
    .join(sources, sources.c.id == series.c.source_id)
    .order_by(
        sources.c.name,
        series.c.series_number.is_(None),
        series.c.series_number,
        series.c.series_uid,
    )
)
#: An instance's metadata as JSON text, for ``decode``.
METADATA_TEXT = instances.c.metadata_text
#: JSON text (``str`` or ``bytes``) to the metadata it holds.
decode = orjson.loads

_INSTANCE_QUERY = sa.select(
    instances.c.series_id,
    instances.c.url,
    instances.c.image_id,
    instances.c.number_of_frames,
    METADATA_TEXT,
).order_by(
    instances.c.series_id,
    instances.c.instance_number.is_(None),
    instances.c.instance_number,
    instances.c.sop_uid,
)


def get_study(connection: Connection, study_uid: str) -> dict[str, Any] | None:
    """The study with its series lists (one per source) and their instances, or None."""
    study = (
        connection.execute(sa.select(studies).where(studies.c.study_uid == str(study_uid)))
        .mappings()
        .first()
    )
    if study is None:
        return None
    series_rows = (
        connection.execute(_SERIES_QUERY.where(series.c.study_id == study["id"])).mappings().all()
    )
    by_series: dict[int, list[dict[str, Any]]] = defaultdict(list)
    rows = _instance_rows(
        connection,
        _INSTANCE_QUERY.join(series, series.c.id == instances.c.series_id).where(
            series.c.study_id == study["id"]
        ),
    )
    with paused_gc():
        for row in rows:
            by_series[row[0]].append(_instance(row))
    lists: dict[str, list[dict[str, Any]]] = {}
    for row in series_rows:
        lists.setdefault(row["source"], []).append(records.series_dict(row, by_series[row["id"]]))
    result = records.study_dict(study)
    result["seriesLists"] = [{"source": name, "series": items} for name, items in lists.items()]
    return result


def get_series(
    connection: Connection, study_uid: str, series_uid: str, source: str | None
) -> dict[str, Any] | None:
    """One series with its instances (from ``source``, else the first source by name)."""
    row = find_series(connection, study_uid, series_uid, source)
    if row is None:
        return None
    rows = _instance_rows(connection, _INSTANCE_QUERY.where(instances.c.series_id == row["id"]))
    with paused_gc():
        return records.series_dict(row, [_instance(r) for r in rows])


def get_instance(
    connection: Connection, study_uid: str, series_uid: str, sop_uid: str, source: str | None
) -> dict[str, Any] | None:
    """One instance's metadata with ``url`` and ``imageId``, or None."""
    row = find_series(connection, study_uid, series_uid, source)
    if row is None:
        return None
    query = _INSTANCE_QUERY.where(
        instances.c.series_id == row["id"], instances.c.sop_uid == str(sop_uid)
    )
    found = _instance_rows(connection, query)
    return _instance(found[0]) if found else None


def get_instance_by_image_id(connection: Connection, image_id: str) -> dict[str, Any] | None:
    """The instance a viewer's imageId (or retrieval url) names, or None (see ``MetaStore``)."""
    candidates = [image_id]
    stripped = strip_frame(image_id)
    if stripped != image_id:
        candidates.append(stripped)
    for candidate in candidates:
        for column in (instances.c.image_id, instances.c.url):
            found = _instance_rows(connection, _INSTANCE_QUERY.where(column == candidate).limit(1))
            if found:
                return _instance(found[0])
    return None


def find_series(
    connection: Connection, study_uid: str, series_uid: str, source: str | None
) -> Mapping[Any, Any] | None:
    """A series row with its source's name (``source``, else the first by name), or None."""
    query = (
        _SERIES_QUERY.join(studies, studies.c.id == series.c.study_id)
        .where(studies.c.study_uid == str(study_uid), series.c.series_uid == str(series_uid))
        .limit(1)
    )
    if source is not None:
        query = query.where(sources.c.name == source)
    return connection.execute(query).mappings().first()


def study_uids(connection: Connection, source: str | None) -> list[str]:
    """Every indexed StudyInstanceUID (those with a series in ``source`` when given), sorted."""
    query = sa.select(studies.c.study_uid).order_by(studies.c.study_uid)
    if source is not None:
        query = (
            query.join(series, series.c.study_id == studies.c.id)
            .join(sources, sources.c.id == series.c.source_id)
            .where(sources.c.name == source)
            .distinct()
        )
    return [str(uid) for uid in connection.execute(query).scalars()]


def _instance_rows(connection: Connection, query: sa.Select[Any]) -> list[Any]:
    """The rows of an ``_INSTANCE_QUERY``, as plain tuples."""
    return list(connection.execute(query).all())


def _instance(row: Iterable[Any]) -> dict[str, Any]:
    """One ``_INSTANCE_QUERY`` row as OHIF's instance metadata."""
    _, url, image_id, frames, text = row
    return records.instance_dict(decode(text), url, image_id, frames)


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while building many documents.

    Decoding makes ~100 containers an instance, so the collector would run
    every few instances, each time walking what was just built (measured:
    15-20% of a 1,000-instance ``get_study``). The documents hold no cycles;
    reference counting frees them as always. The collector is resumed only
    if it was running (a caller that turned it off keeps it off).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
