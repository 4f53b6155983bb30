"""rendered_series: the per-series WADO-RS metadata cache of `metastore serve`

One row per series and service base URL holding the gzip-compressed DICOM
JSON answer of ``/studies/{s}/series/{se}/metadata``. The store deletes a
series' rows in the transaction that writes to the series; deleting a
series (or its study) cascades. On PostgreSQL the body is stored without
TOAST compression: it is gzip already.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rendered_series",
        sa.Column(
            "series_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("base", sa.String(length=512), nullable=False),
        sa.Column("etag", sa.String(length=64), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["series.id"],
            name=op.f("fk_rendered_series_series_id_series"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("series_id", "base", name=op.f("pk_rendered_series")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE rendered_series ALTER COLUMN body SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("rendered_series")
