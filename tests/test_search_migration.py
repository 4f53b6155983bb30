"""Migration 0003 on a PostgreSQL server where the role may not create pg_trgm."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from metastore import DatabaseError, MetaStore


@pytest.mark.postgres
def test_a_role_that_cannot_create_pg_trgm_is_told_who_must(request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("postgres")
    role = f"metastore_noext_{uuid.uuid4().hex[:8]}"
    name = server.create()
    with server.admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
    owner = sa.create_engine(server.url(name), isolation_level="AUTOCOMMIT")
    try:
        with owner.connect() as connection:
            # Tables yes (CREATE on the schema), extensions no (no CREATE on the database).
            connection.exec_driver_sql(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}")
        url = sa.make_url(server.url(name)).set(username=role).render_as_string(hide_password=False)
        with pytest.raises(DatabaseError) as caught:
            MetaStore(url)
        message = str(caught.value)
        assert "pg_trgm" in message and "CREATE EXTENSION pg_trgm" in message and name in message
    finally:
        owner.dispose()
        server.drop(name)
        with server.admin.connect() as connection:
            connection.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
