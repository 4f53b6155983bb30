"""WADO-RS metadata (PS3.18 10.4) from the index, rendered once per series and kept.

A series' answer is the DICOM JSON model (PS3.18 F.2) of each of its
instances, as ``metastore.dicom.denaturalize`` gives back what the source
sent, with every BulkDataURI rewritten to point at this service
(``{base}/studies/{s}/series/{se}/instances/{i}/bulk/{tag path}``), so a
viewer that talks only to the service reaches bulk data through it.

Rendering a 1,000-instance series costs tens of milliseconds, so the
gzip-compressed answer is kept in ``rendered_series``, one row per series
and service base URL, with its ``ETag``. The store deletes a series' rows
in the same transaction as any write to that series, and a render is
written under a shared lock on the study row (``FOR SHARE`` on PostgreSQL;
SQLite's write lock), which every writer of the study must wait for: a
render can never be kept that is older than a committed write.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore import db
from metastore.dicom import denaturalize
from metastore.reads import METADATA_TEXT, decode
from metastore.schema import instances, rendered_series, series, sources, studies
from metastore.store import MetaStore

log = logging.getLogger(__name__)

#: gzip level of the kept answers: the best ratio for the time on DICOM JSON.
GZIP_LEVEL = 6


@dataclass(frozen=True, kw_only=True)
class Rendered:
    """A rendered metadata answer: its ETag, instance count and gzip-compressed JSON."""

    etag: str
    instances: int
    body: bytes

    def json(self) -> bytes:
        """The answer uncompressed."""
        return gzip.decompress(self.body)


def etag_of(data: bytes) -> str:
    """A strong entity tag for a body (RFC 9110 8.8.3), without its quotes."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def series_path(base: str, study_uid: str, series_uid: str) -> str:
    """The service URL of a series (``base`` is the DICOMweb root)."""
    return f"{base}/studies/{quote(study_uid, safe='')}/series/{quote(series_uid, safe='')}"


def point_bulkdata_at(document: dict[str, Any], prefix: str) -> None:
    """Rewrite every BulkDataURI of a DICOM JSON data set to ``{prefix}/{tag path}``, in place.

    The tag path names the attribute: ``7FE00010``, or through sequences
    ``00540016/0/00181072`` (tag, item index, tag).
    """
    for tag, element in document.items():
        if not isinstance(element, dict):
            continue
        if "BulkDataURI" in element:
            element["BulkDataURI"] = f"{prefix}/{tag}"
        elif element.get("vr") == "SQ":
            for index, item in enumerate(element.get("Value") or ()):
                if isinstance(item, dict):
                    point_bulkdata_at(item, f"{prefix}/{tag}/{index}")


def render_instance(
    metadata: Mapping[str, Any],
    series_url: str,
    shared: dict[Any, tuple[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """One instance's DICOM JSON with its BulkDataURIs pointing at the service.

    ``series_url`` is the service URL of its series (``series_path``);
    ``shared``: ``denaturalize``'s, one per series rendered (the answer is
    encoded, never changed, and only BulkDataURI attributes are rewritten,
    which are never shared).
    """
    document = denaturalize(metadata, shared)
    sop_uid = quote(str(metadata.get("SOPInstanceUID", "")), safe="")
    point_bulkdata_at(document, f"{series_url}/instances/{sop_uid}/bulk")
    return document


def render(documents: Iterable[dict[str, Any]]) -> Rendered:
    """Encode DICOM JSON documents as one answer, compressed, with its ETag."""
    items = list(documents)
    data = orjson.dumps(items)
    return Rendered(
        etag=etag_of(data), instances=len(items), body=gzip.compress(data, GZIP_LEVEL, mtime=0)
    )


# -- reading and keeping -------------------------------------------------------

_SERIES_OF_STUDY = (
    sa.select(
        series.c.id,
        series.c.series_uid,
        studies.c.id.label("study_id"),
        sources.c.name.label("source"),
    )
    .join(studies, studies.c.id == series.c.study_id)
    .join(sources, sources.c.id == series.c.source_id)
    .order_by(
        series.c.series_number.is_(None),
        series.c.series_number,
        series.c.series_uid,
        sources.c.name,
    )
)
# The metadata as JSON text, decoded here as the store's reads decode it
# (``metastore.reads``): psycopg turns 1,000 JSONB documents into Python
# objects about four times slower (measured 136 ms against 31 ms for the
# text of a 1,000-instance series), and the text is kept, not rendered.
_INSTANCES = sa.select(METADATA_TEXT).order_by(
    instances.c.instance_number.is_(None), instances.c.instance_number, instances.c.sop_uid
)


def _with_render(base: str) -> sa.Select[Any]:
    return _SERIES_OF_STUDY.add_columns(
        rendered_series.c.etag, rendered_series.c.instances, rendered_series.c.body
    ).outerjoin(
        rendered_series,
        sa.and_(rendered_series.c.series_id == series.c.id, rendered_series.c.base == base),
    )


def series_metadata(
    store: MetaStore, study_uid: str, series_uid: str, base: str
) -> Rendered | None:
    """The WADO-RS metadata of a series (None when not indexed), kept once rendered.

    A series indexed from several sources is answered from the first source
    by name, as ``MetaStore.get_series`` does. A kept answer costs one query.
    """
    query = _with_render(base).where(
        studies.c.study_uid == study_uid, series.c.series_uid == series_uid
    )
    with store.reading(f"reading series {series_uid}") as connection:
        rows = connection.execute(query.order_by(None).order_by(sources.c.name)).mappings().all()
    if not rows:
        return None
    row = rows[0]
    if row["etag"] is not None:
        return Rendered(etag=row["etag"], instances=row["instances"], body=row["body"])
    return _render_and_keep(store, row["study_id"], row["id"], study_uid, series_uid, base)


def study_metadata(store: MetaStore, study_uid: str, base: str) -> tuple[str, bytes] | None:
    """The WADO-RS metadata of a study: every series' instances, as (ETag, JSON).

    Built from the kept series answers (rendering those not kept yet); a
    series indexed from several sources is taken once, from the first
    source by name. None when the study is not indexed.
    """
    with store.reading(f"reading study {study_uid}") as connection:
        exists = connection.execute(
            sa.select(studies.c.id).where(studies.c.study_uid == study_uid)
        ).first()
        rows = (
            connection.execute(_with_render(base).where(studies.c.study_uid == study_uid))
            .mappings()
            .all()
        )
    if exists is None:
        return None
    parts: list[bytes] = []
    tags: list[str] = []
    seen: set[str] = set()
    for row in rows:
        if row["series_uid"] in seen:
            continue
        seen.add(row["series_uid"])
        if row["etag"] is not None:
            rendered: Rendered | None = Rendered(
                etag=row["etag"], instances=row["instances"], body=row["body"]
            )
        else:
            rendered = _render_and_keep(
                store, row["study_id"], row["id"], study_uid, row["series_uid"], base
            )
        if rendered is None or not rendered.instances:
            continue
        tags.append(rendered.etag)
        parts.append(rendered.json()[1:-1])  # the items of the JSON array
    data = b"[" + b",".join(parts) + b"]"
    return etag_of(",".join(tags).encode()), data


def one_instance(
    study_uid: str, series_uid: str, sop_uid: str, *columns: sa.ColumnElement[Any]
) -> sa.Select[Any]:
    """Columns of an instance (and its series' source) by UIDs: the first source by name."""
    return (
        sa.select(*columns)
        .join(series, series.c.id == instances.c.series_id)
        .join(studies, studies.c.id == series.c.study_id)
        .join(sources, sources.c.id == series.c.source_id)
        .where(
            studies.c.study_uid == study_uid,
            series.c.series_uid == series_uid,
            instances.c.sop_uid == sop_uid,
        )
        .order_by(sources.c.name)
        .limit(1)
    )


def instance_metadata(
    store: MetaStore, study_uid: str, series_uid: str, sop_uid: str, base: str
) -> bytes | None:
    """The WADO-RS metadata of one instance (a one-item JSON array), or None."""
    query = one_instance(study_uid, series_uid, sop_uid, METADATA_TEXT)
    with store.reading(f"reading instance {sop_uid}") as connection:
        found = connection.execute(query).scalar()
    if found is None:
        return None
    series_url = series_path(base, study_uid, series_uid)
    return orjson.dumps([render_instance(decode(found), series_url)])


def _render_and_keep(
    store: MetaStore, study_id: int, series_id: int, study_uid: str, series_uid: str, base: str
) -> Rendered | None:
    """Render a series and keep the answer, under a shared lock on its study.

    Writers of the study lock its row ``FOR UPDATE``: holding it ``FOR
    SHARE`` (SQLite: the write lock) from the read to the commit means no
    write to the series can commit between the rows read and the answer
    kept, and one that committed before is seen.

    A store that cannot write (a PostgreSQL hot standby, a file opened
    read-only) answers with the render and keeps nothing: the same answer,
    rendered again on each request (a replica's kept answers are those the
    primary keeps, replicated).
    """
    if store.read_only:
        with store.reading(f"rendering series {series_uid}") as connection:
            return _render(connection, series_id, series_path(base, study_uid, series_uid))
    with db.translate_errors(f"rendering series {series_uid}"), store.engine.begin() as connection:
        locked = connection.execute(
            sa.select(studies.c.id).where(studies.c.id == study_id).with_for_update(read=True)
        ).first()
        if locked is None:
            return None  # deleted meanwhile
        kept = _kept(connection, series_id, base)
        if kept is not None:
            return kept  # another request rendered it first
        rendered = _render(connection, series_id, series_path(base, study_uid, series_uid))
        if not connection.execute(sa.select(series.c.id).where(series.c.id == series_id)).first():
            return rendered  # the series is gone: answer, keep nothing
        statement = db.upsert(connection, rendered_series).values(
            series_id=series_id,
            base=base,
            etag=rendered.etag,
            instances=rendered.instances,
            body=rendered.body,
        )
        connection.execute(statement.on_conflict_do_nothing())
    log.debug("rendered series %s: %d instances", series_uid, rendered.instances)
    return rendered


def _render(connection: Connection, series_id: int, series_url: str) -> Rendered:
    """A series' instances rendered as its WADO-RS metadata answer."""
    metadata = connection.execute(_INSTANCES.where(instances.c.series_id == series_id)).scalars()
    shared: dict[Any, tuple[str, dict[str, Any]]] = {}
    return render(render_instance(decode(m), series_url, shared) for m in metadata)


def _kept(connection: Connection, series_id: int, base: str) -> Rendered | None:
    row = connection.execute(
        sa.select(
            rendered_series.c.etag, rendered_series.c.instances, rendered_series.c.body
        ).where(rendered_series.c.series_id == series_id, rendered_series.c.base == base)
    ).first()
    return None if row is None else Rendered(etag=row.etag, instances=row.instances, body=row.body)
