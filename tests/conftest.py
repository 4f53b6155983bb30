"""Shared fixtures: a fresh real database per test, on SQLite and PostgreSQL.

PostgreSQL: a template database is migrated once per session and cloned per
test with ``CREATE DATABASE ... TEMPLATE`` (fast, isolated). The server is
``METASTORE_TEST_POSTGRES`` (default: the local one at 127.0.0.1:5432, trust
auth). Where it cannot be reached the PostgreSQL cases skip, except with
``CI=true``, where they fail: CI must prove both backends.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

# The OHIF viewer and a browser to drive it (tests/ohif.py).
from ohif import browser, browser_context, ohif_dist, viewer, viewer_page  # noqa: F401  (fixtures)

# The DICOMweb servers (a real Orthanc, the static tree), shared by every test module.
from servers import orthanc, static_tree  # noqa: F401  (fixtures)
from sync_helpers import archive, recorder  # noqa: F401  (fixtures)

from metastore import MetaStore, db

POSTGRES_URL = os.environ.get(
    "METASTORE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DATA = Path(__file__).resolve().parent.parent / "metastore" / "data" / "static-dicomweb"
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


class _Postgres:
    """Creates and drops throwaway databases on the test server."""

    def __init__(self, url: str) -> None:
        self.base = sa.make_url(db.resolve_url(url))
        self.admin = sa.create_engine(self.base, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []
        self.template: str | None = None

    def url(self, name: str) -> str:
        return self.base.set(database=name).render_as_string(hide_password=False)

    def create(self, template: str | None = None) -> str:
        name = f"metastore_test_{uuid.uuid4().hex[:12]}"
        clause = f" TEMPLATE {template}" if template else ""
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}{clause}")
        self.created.append(name)
        return name

    def migrated_clone(self) -> str:
        if self.template is None:
            name = self.create()
            engine = db.create_engine(self.url(name))
            db.upgrade(engine)
            engine.dispose()
            self.template = name
        return self.url(self.create(template=self.template))

    def drop(self, name: str) -> None:
        with self.admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def close(self) -> None:
        for name in reversed(self.created):
            self.drop(name)
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres() -> Iterator[_Postgres]:
    """The PostgreSQL test server (skips, or fails in CI, when unreachable)."""
    server = _Postgres(POSTGRES_URL)
    try:
        with server.admin.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as err:
        server.admin.dispose()
        message = f"PostgreSQL at {db.redact(POSTGRES_URL)} is unreachable: {err}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    yield server
    server.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database file at head, migrated once and copied per test."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = db.create_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the database backend under test."""
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh database at the head revision."""
    return fresh_db_url(backend, tmp_path / "metastore.db", request)


def fresh_db_url(backend: str, path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh database at the head revision: SQLite at ``path``, or a PostgreSQL clone."""
    if backend == "sqlite":
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    server: _Postgres = request.getfixturevalue("postgres")
    return server.migrated_clone()


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh, empty database (no schema)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    server: _Postgres = request.getfixturevalue("postgres")
    return server.url(server.create())


@pytest.fixture
def store(db_url: str) -> Iterator[MetaStore]:
    """A MetaStore on a fresh database, closed after the test."""
    with MetaStore(db_url) as opened:
        yield opened
