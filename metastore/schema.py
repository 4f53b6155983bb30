"""The tables of the index: the only place a table shape is written.

The hierarchy follows OHIF's ``DicomMetadataStore``: a study holds one series
list per source, a series holds its instances. Key columns carry what users
search and sort on; the ``metadata`` column keeps the full naturalized
metadata (JSONB on PostgreSQL, JSON text on SQLite).

Counts (``num_series``, ``num_instances``) and ``modalities_in_study`` are kept
up by the store in the same transaction as the rows they count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

# Stable constraint names, so migrations can refer to them on both dialects.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-increments an INTEGER PRIMARY KEY, so 64-bit keys are
# INTEGER there (SQLite integers are 64-bit anyway).
BigId = BigInteger().with_variant(Integer(), "sqlite")
# Naturalized metadata: JSONB on PostgreSQL so analysts can index and query it.
Document = JSON().with_variant(JSONB(), "postgresql")
# A UID is at most 64 characters (PS3.5 9.1).
Uid = String(64)


def _only(dialect: str, index: Index) -> Index:
    """An index that exists on one dialect only (``info`` tells the migration check)."""
    index.info["dialect"] = dialect
    index.ddl_if(dialect=dialect)
    return index


def _trigram(name: str, column: str) -> Index:
    """PostgreSQL: a pg_trgm GIN index, which serves LIKE/ILIKE with wildcards anywhere."""
    return _only(
        "postgresql",
        Index(name, column, postgresql_using="gin", postgresql_ops={column: "gin_trgm_ops"}),
    )


def include_object(dialect: str) -> Callable[[Any, str | None, str, bool, Any], bool]:
    """Alembic's ``include_object`` for a database of ``dialect``: skip the other dialect's indexes."""

    def include(obj: Any, _name: str | None, type_: str, reflected: bool, _other: Any) -> bool:
        if type_ == "index" and not reflected:
            return bool(obj.info.get("dialect", dialect) == dialect)
        return True

    return include


def _created() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


def _updated() -> Column[object]:
    return Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now())


sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("kind", String(64), nullable=False),
    Column("root_url", Text),
    # Non-secret settings only: credentials never reach the database.
    Column("settings", Document, nullable=False),
    _created(),
)

studies = Table(
    "studies",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("study_uid", Uid, nullable=False, unique=True),
    Column("patient_id", Text),
    Column("patient_name", Text),
    Column("study_date", Text),
    Column("study_time", Text),
    Column("accession_number", Text),
    Column("study_description", Text),
    # Backslash-joined, sorted (the DICOM multi-value form): 'CT\SR'.
    Column("modalities_in_study", Text),
    Column("num_series", Integer, nullable=False, server_default="0"),
    Column("num_instances", BigInteger, nullable=False, server_default="0"),
    Column("metadata", Document, nullable=False),
    _created(),
    _updated(),
    Index(None, "patient_id"),
    Index(None, "study_date"),
    Index(None, "accession_number"),
    # Search (revision 0003): wildcards anywhere on PostgreSQL (more below).
    _trigram("ix_studies_patient_name_trgm", "patient_name"),
    _trigram("ix_studies_patient_id_trgm", "patient_id"),
    _trigram("ix_studies_accession_number_trgm", "accession_number"),
    _trigram("ix_studies_study_description_trgm", "study_description"),
    _only("sqlite", Index("ix_studies_study_description", "study_description")),
)
# The study list, newest first, without a sort (NULLS LAST is SQLite's own DESC order).
_only(
    "postgresql",
    Index(
        "ix_studies_newest",
        studies.c.study_date.desc().nulls_last(),
        studies.c.study_time.desc().nulls_last(),
        studies.c.study_uid,
    ),
)
_only(
    "sqlite",
    Index(
        "ix_studies_newest",
        studies.c.study_date.desc(),
        studies.c.study_time.desc(),
        studies.c.study_uid,
    ),
)
# SQLite: case-insensitive name prefixes (ASCII, as SQLite's LIKE folds case).
_only("sqlite", Index("ix_studies_patient_name_nocase", studies.c.patient_name.collate("NOCASE")))

series = Table(
    "series",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("study_id", BigId, ForeignKey(studies.c.id, ondelete="CASCADE"), nullable=False),
    Column("source_id", Integer, ForeignKey(sources.c.id, ondelete="CASCADE"), nullable=False),
    Column("series_uid", Uid, nullable=False),
    Column("modality", Text),
    Column("series_number", Integer),
    Column("series_description", Text),
    Column("series_date", Text),
    Column("series_time", Text),
    Column("num_instances", Integer, nullable=False, server_default="0"),
    Column("metadata", Document, nullable=False),
    _created(),
    _updated(),
    UniqueConstraint("study_id", "source_id", "series_uid"),
    Index(None, "series_uid"),
    # A write's look-up by source and UID, and every series of a source (revision 0010).
    Index(None, "source_id", "series_uid"),
    # ModalitiesInStudy and Modality searches (revision 0003).
    Index(None, "modality", "study_id"),
)

instances = Table(
    "instances",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("series_id", BigId, ForeignKey(series.c.id, ondelete="CASCADE"), nullable=False),
    Column("sop_uid", Uid, nullable=False),
    Column("sop_class_uid", Uid),
    Column("instance_number", Integer),
    Column("number_of_frames", Integer),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("url", Text),
    # The imageId when it differs from the url; NULL means "the url is the
    # imageId" (OHIF's DICOM JSON convention), which keeps rows and the
    # index small in the common case.
    Column("image_id", Text),
    # 1 when inserted, +1 on every change: tells an insert from an update
    # in an upsert's RETURNING on both dialects.
    Column("version", Integer, nullable=False, server_default="1"),
    Column("metadata", Document, nullable=False),
    # The metadata as JSON text, for reads (revision 0008): PostgreSQL keeps
    # it (a stored generated column, filled by the server on every write),
    # since rendering JSONB back into text on each read is most of a large
    # study's read time. On SQLite the revision makes it virtual (computed on
    # read, no storage: its metadata is that text already; SQLite cannot add
    # a stored column to a table anyway).
    Column("metadata_text", Text, Computed("CAST(metadata AS TEXT)", persisted=True)),
    _created(),
    _updated(),
    UniqueConstraint("series_id", "sop_uid"),
    Index(None, "sop_uid"),
    Index(None, "image_id"),
    # Equality look-ups only (get_instance_by_image_id): PostgreSQL keeps a
    # 4-byte hash per row, not the ~200-character URL (revision 0009).
    Index(None, "url", postgresql_using="hash"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("seq", BigId, primary_key=True),
    Column("event_type", String(32), nullable=False),
    Column("study_uid", Uid, nullable=False),
    Column("series_uid", Uid),
    Column("source", String(128)),
    Column("payload", Document, nullable=False),
    # PostgreSQL: the writing transaction's id (pg_current_xact_id), so a
    # reader can hold back rows that an in-flight transaction may precede.
    Column("txid", BigInteger),
    _created(),
    sqlite_autoincrement=True,  # never reuse a sequence number after a prune
)

consumers = Table(
    "consumers",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", DateTime(timezone=True)),
    _created(),
    _updated(),
)

ingest_jobs = Table(
    "ingest_jobs",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("source_id", Integer, ForeignKey(sources.c.id, ondelete="CASCADE"), nullable=False),
    # The unit of work, in the source's terms: a study UID, a file, a folder.
    Column("unit", Text, nullable=False),
    Column("params", Document, nullable=False),
    Column("state", String(16), nullable=False, server_default="queued"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False, server_default="5"),
    Column("next_try_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("last_error", Text),
    # The parts of the unit that could not be read on its last run ([{"series",
    # "instance", "error"}]); the next run retries only those. NULL: none.
    Column("failed_parts", Document),
    # +1 whenever the unit is queued again while a worker holds it: the
    # worker's completion then queues it once more instead of marking it
    # done, so a change announced mid-pull is never lost.
    Column("generation", Integer, nullable=False, server_default="0"),
    _created(),
    _updated(),
    UniqueConstraint("source_id", "unit"),
    Index(None, "state", "next_try_at"),
)

rendered_series = Table(
    "rendered_series",
    metadata,
    # The WADO-RS metadata answer of one series (PS3.18 10.4), rendered once:
    # the DICOM JSON of every instance, BulkDataURIs pointing at ``base``.
    # A write to the series deletes its rows in the writing transaction.
    Column("series_id", BigId, ForeignKey(series.c.id, ondelete="CASCADE"), primary_key=True),
    # The service URL the BulkDataURIs were written for (one row per base).
    Column("base", String(512), primary_key=True),
    Column("etag", String(64), nullable=False),
    Column("instances", Integer, nullable=False),
    # gzip-compressed JSON (already compressed: no TOAST compression on PG).
    Column("body", LargeBinary, nullable=False),
    _created(),
)

followers = Table(
    "followers",
    metadata,
    # One change-feed follower per source: where it has read the archive's feed up to.
    Column("source_id", Integer, ForeignKey(sources.c.id, ondelete="CASCADE"), primary_key=True),
    Column("kind", String(64), nullable=False),
    # The archive's own cursor (Orthanc's change Seq...), as text; NULL: not started.
    Column("position", Text),
    Column("lease_owner", String(128)),
    Column("lease_expires_at", DateTime(timezone=True)),
    _created(),
    _updated(),
)

# Scratch tables: per-transaction temporary tables, never migrated.
scratch = MetaData()

#: One archive study listing, loaded by ``metastore sync`` to compare with the index in SQL.
sync_listing = Table(
    "metastore_sync_listing",
    scratch,
    Column("study_uid", Uid, primary_key=True),
    # NULL where the archive gave no count: the study is then pulled.
    Column("num_series", Integer),
    Column("num_instances", BigInteger),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)
