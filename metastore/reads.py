"""The store's reads: a study, a series or an instance as OHIF's naturalized metadata.

Each function takes a ``Connection`` inside the caller's read transaction
(``MetaStore`` owns it) and runs a fixed number of queries whatever the size
of the study.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

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
_INSTANCE_QUERY = sa.select(
    instances.c.series_id,
    instances.c.url,
    instances.c.image_id,
    instances.c.number_of_frames,
    instances.c.metadata,
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
    instance_rows = (
        connection.execute(
            _INSTANCE_QUERY.join(series, series.c.id == instances.c.series_id).where(
                series.c.study_id == study["id"]
            )
        )
        .mappings()
        .all()
    )
    by_series: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in instance_rows:
        by_series[row["series_id"]].append(records.instance_dict(row))
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
    instance_rows = (
        connection.execute(_INSTANCE_QUERY.where(instances.c.series_id == row["id"]))
        .mappings()
        .all()
    )
    return records.series_dict(row, [records.instance_dict(r) for r in instance_rows])


def get_instance(
    connection: Connection, study_uid: str, series_uid: str, sop_uid: str, source: str | None
) -> dict[str, Any] | None:
    """One instance's metadata with ``url`` and ``imageId``, or None."""
    row = find_series(connection, study_uid, series_uid, source)
    if row is None:
        return None
    found = (
        connection.execute(
            _INSTANCE_QUERY.where(
                instances.c.series_id == row["id"], instances.c.sop_uid == str(sop_uid)
            )
        )
        .mappings()
        .first()
    )
    return None if found is None else records.instance_dict(found)


def get_instance_by_image_id(connection: Connection, image_id: str) -> dict[str, Any] | None:
    """The instance a viewer's imageId (or retrieval url) names, or None (see ``MetaStore``)."""
    candidates = [image_id]
    stripped = strip_frame(image_id)
    if stripped != image_id:
        candidates.append(stripped)
    for candidate in candidates:
        for column in (instances.c.image_id, instances.c.url):
            found = (
                connection.execute(_INSTANCE_QUERY.where(column == candidate).limit(1))
                .mappings()
                .first()
            )
            if found is not None:
                return records.instance_dict(found)
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
