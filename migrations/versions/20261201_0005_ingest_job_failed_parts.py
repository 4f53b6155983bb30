"""ingest_jobs.failed_parts: what a pull could not read, retried alone next time

A DICOMweb pull that cannot read one series or instance of a study stores
the rest and records the unreadable parts on the job; a later run of the
job pulls only those again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    document = sa.JSON().with_variant(JSONB(), "postgresql")
    with op.batch_alter_table("ingest_jobs") as batch:
        batch.add_column(sa.Column("failed_parts", document, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ingest_jobs") as batch:
        batch.drop_column("failed_parts")
