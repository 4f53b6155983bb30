"""Search indexes: the study list's common queries without a scan of studies

PostgreSQL: pg_trgm GIN indexes on patient_name, patient_id,
accession_number and study_description serve LIKE/ILIKE with wildcards in
any position (and case-insensitive names); the extension is created when
missing, and a role that may not create it gets a message saying who must.
SQLite: a NOCASE index on patient_name (case-insensitive name prefixes) and
a plain one on study_description. Both: the study list in its order (newest
first) and series by (modality, study_id) for ModalitiesInStudy.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from metastore.errors import DatabaseError

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TRIGRAM = ("patient_name", "patient_id", "accession_number", "study_description")


def _ensure_trigram_extension() -> None:
    bind = op.get_bind()
    if bind.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").first():
        return
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError as err:
        database = bind.exec_driver_sql("SELECT current_database()").scalar_one()
        detail = str(getattr(err, "orig", err)).strip().splitlines()[0]
        raise DatabaseError(
            "metastore's search indexes need PostgreSQL's pg_trgm extension, and this role "
            f"cannot create it ({detail}); have a superuser run "
            f'"CREATE EXTENSION pg_trgm;" in database {database}, then `metastore db upgrade`'
        ) from err


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _ensure_trigram_extension()
        for column in _TRIGRAM:
            op.create_index(
                f"ix_studies_{column}_trgm",
                "studies",
                [column],
                postgresql_using="gin",
                postgresql_ops={column: "gin_trgm_ops"},
            )
        newest = ["study_date DESC NULLS LAST", "study_time DESC NULLS LAST"]
    else:
        op.create_index(
            "ix_studies_patient_name_nocase", "studies", [sa.text('patient_name COLLATE "NOCASE"')]
        )
        op.create_index("ix_studies_study_description", "studies", ["study_description"])
        newest = ["study_date DESC", "study_time DESC"]
    op.create_index(
        "ix_studies_newest", "studies", [*(sa.text(c) for c in newest), sa.column("study_uid")]
    )
    op.create_index("ix_series_modality_study_id", "series", ["modality", "study_id"])


def downgrade() -> None:
    op.drop_index("ix_series_modality_study_id", table_name="series")
    op.drop_index("ix_studies_newest", table_name="studies")
    if op.get_bind().dialect.name == "postgresql":
        for column in _TRIGRAM:
            op.drop_index(f"ix_studies_{column}_trgm", table_name="studies")
    else:
        op.drop_index("ix_studies_study_description", table_name="studies")
        op.drop_index("ix_studies_patient_name_nocase", table_name="studies")
