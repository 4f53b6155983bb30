"""PostgreSQL: the instances' url under a hash index instead of a B-tree

``ix_instances_url`` serves one query, ``get_instance_by_image_id``'s
equality look-up of a retrieval URL. URLs are long (a DICOMweb URL names
three UIDs: ~200 characters), so the B-tree held the whole string per row:
488.6 B per instance, the largest index of the index by 5x, 17% of an
instance's bytes. A hash index keeps a 4-byte hash code per row: 38.4 B per
instance. Measured twice by scripts/scale_decide.py on copies (500,000 and
200,000 instances) of a bench_scale index of real IDC series shapes, under
load 10-20: B-tree 488.6 and 504.0 B, hash 38.4 B per instance; look-up
p50 5.1 and 0.43 ms (B-tree), 1.2 and 0.35 ms (hash); bulk load 42.2 and
15.4 s (B-tree), 41.0 and 10.0 s (hash); one transaction per series -8%
and +6% (noise). At 10M instances that is ~4.5 GB less to write, cache and
back up. SQLite has no hash index: nothing to do.

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
