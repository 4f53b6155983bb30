"""series: the source's index also holds the series UID, (source_id, series_uid)

A write finds the series it touches by source and UID
(``source_id = ? AND series_uid IN (...)``). With ``source_id`` indexed
alone, SQLite's planner (no statistics unless ANALYZE ran) took that index
for the look-up, and one source holds every series: each write scanned them
all, and a bench_scale ingest fell from 25,000 to 2,900 instances/s by 1.8M
instances. Both columns in one index answer the look-up exactly on either
engine, and its prefix still serves "every series of a source" (deleting a
source, a sync's comparison). The series table is small (~20 B per
instance): the rebuild is quick.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_series_source_id_series_uid", "series", ["source_id", "series_uid"])
    op.drop_index("ix_series_source_id", table_name="series")


def downgrade() -> None:
    op.create_index("ix_series_source_id", "series", ["source_id"])
    op.drop_index("ix_series_source_id_series_uid", table_name="series")
