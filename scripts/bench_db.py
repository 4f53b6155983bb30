"""A throwaway PostgreSQL database for a benchmark run (imported by the bench scripts)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from metastore import db


@contextmanager
def throwaway_postgres(server_url: str, keep: bool = False) -> Iterator[str]:
    """Create an empty database on the server at ``server_url``; yield its URL; drop it after
    (unless ``keep``: then it stays, for a later look)."""
    server = sa.make_url(db.resolve_url(server_url))
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"metastore_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        if not keep:
            with admin.connect() as connection:
                connection.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()
