"""instances.metadata_text: the instance metadata as JSON text, for reads

PostgreSQL renders JSONB back into text on every read, which is most of the
time a large study takes to read (measured with ``scripts/bench_reads.py``:
about 10 ms of a 1,000-instance ``get_study`` unloaded). ``metadata_text`` is
a generated column: on PostgreSQL stored (the server renders each row once,
when it is written, and keeps the text, lz4-compressed like ``metadata``);
on SQLite virtual (computed on read, no storage: the metadata is JSON text
already). Writers do not change.

Adding a stored generated column rewrites ``instances`` on PostgreSQL (every
existing row rendered once, under an exclusive lock): minutes on tens of
millions of rows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    generated = sa.Computed("CAST(metadata AS TEXT)", persisted=True if postgresql else None)
    op.add_column("instances", sa.Column("metadata_text", sa.Text(), generated, nullable=True))
    if postgresql:
        # As revision 0002 for metadata: lz4 where the server has it, else its default.
        op.execute(
            """
            DO $$
            BEGIN
                ALTER TABLE instances ALTER COLUMN metadata_text SET COMPRESSION lz4;
            EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
                RAISE NOTICE 'metastore: lz4 compression not available for instances';
            END $$
            """
        )


def downgrade() -> None:
    op.drop_column("instances", "metadata_text")
