"""Alembic environment: one set of migrations for SQLite and PostgreSQL.

metastore passes its own connection in ``config.attributes["connection"]``;
run as plain ``alembic``, the URL comes from METASTORE_DATABASE_URL.
"""

from __future__ import annotations

from alembic import context

from metastore import db
from metastore.schema import include_object, metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode recreates the table.
        render_as_batch=True,
        compare_type=True,
        # Some indexes exist on one dialect only (schema.py says which).
        include_object=include_object(connection.dialect.name),  # type: ignore[attr-defined]
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = db.create_engine()
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
    engine.dispose()
