"""PostgreSQL: the instances' url under a hash index instead of a B-tree

``ix_instances_url`` serves one query, ``get_instance_by_image_id``'s
equality look-up of a retrieval URL. URLs are long (a DICOMweb URL names
three UIDs: ~200 characters), so the B-tree held the whole string per row:
488.6 B per instance, the largest index of the index by 5x, 17% of an
instance's bytes. A hash index keeps a 4-byte hash code per row: 38.4 B per
instance, measured on a 500,000-instance copy of a bench_scale index of
real IDC series shapes (scripts/scale_decide.py), with the same look-up
(p50 1.2 ms against 5.1 ms, under load 12) and the same bulk-load time
(41.0 s against 42.2 s for 500,000 rows). At 10M instances that is ~4.5 GB
less to write, cache and back up. SQLite has no hash index: nothing to do.

Rebuilding takes a lock that holds off writes to ``instances`` for as long
as the build (7 s per 500,000 rows here).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(method: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_instances_url", table_name="instances")
    op.create_index("ix_instances_url", "instances", ["url"], postgresql_using=method)


def upgrade() -> None:
    _rebuild("hash")


def downgrade() -> None:
    _rebuild("btree")
