"""Engines, dialect-specific statements and the schema-at-head check.

Everything that differs between SQLite and PostgreSQL at the connection
level lives here: the URL rules, SQLite's pragmas and write locking, the
upsert statement's constructor (the write path's own statements, run on
the driver connection, are in ``metastore.statements``), the translation
of SQLAlchemy's and the drivers' exceptions into ``metastore.errors``, the transaction helpers every public operation opens
(``reading``, ``writing``), the database clock leases are measured in
(``now``, ``later``) and lease owner ids.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from metastore.dburl import DEFAULT_URL as DEFAULT_URL
from metastore.dburl import URL_ENV as URL_ENV
from metastore.dburl import resolve_url as resolve_url
from metastore.errors import ConfigurationError, DatabaseError, SchemaNotAtHead

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Taken by whoever migrates a PostgreSQL database, so that workers starting
# together on a brand-new database do not all try to create it.
_MIGRATION_LOCK_KEY = 0x6D657461  # "meta"


def redact(url: str) -> str:
    """The URL as it may appear in logs and messages: no password."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparsable database URL>"


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(url: str | None = None, *, read_only: bool = False, **kwargs: Any) -> Engine:
    """An engine for the URL with metastore's settings for its dialect.

    ``read_only``: an SQLite database must exist and is opened read-only
    (``mode=ro``; ``immutable=1`` where its folder cannot be written, a
    read-only medium), so reading never creates or changes a file. For a
    database to write, a missing SQLite file's folder must exist.
    """
    resolved = resolve_url(url)
    try:
        parsed = sa.make_url(resolved)
    except exc.ArgumentError as err:
        raise ConfigurationError(f"not a database URL: {resolved!r}") from err
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigurationError(f"unsupported database {backend!r}: use sqlite or postgresql")
    if backend == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise ConfigurationError("PostgreSQL URLs must use psycopg 3: postgresql+psycopg://...")
    if backend == "sqlite":
        parsed = _sqlite_url(parsed, read_only=read_only)
    options: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}
    if backend == "postgresql":
        # No JIT: our statements are short index lookups, but a correlated
        # subquery the plan never runs (a fallback count over instances) can
        # make the estimated cost cross jit_above_cost, and compiling then
        # costs ~650 ms on a query that runs in 10 ms (the study list at
        # 1M instances, measured by scripts/bench_serve.py).
        options["connect_args"] = {"options": "-c jit=off"}
    options.update(kwargs)
    try:
        engine = sa.create_engine(parsed, **options)
    except (exc.ArgumentError, ImportError) as err:
        raise ConfigurationError(f"cannot use database {redact(resolved)}: {err}") from err
    if backend == "sqlite":
        _configure_sqlite(engine, read_only=read_only)
    return engine


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (``None``: in memory, or not SQLite)."""
    parsed = sa.make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return Path(unquote(database.removeprefix("file:"))).expanduser()


def describe(engine: Engine) -> str:
    """The database as messages name it: an SQLite file's path, else the URL without password."""
    path = sqlite_path(str(engine.url))
    return str(path) if path is not None else redact(str(engine.url))


def _sqlite_url(parsed: sa.URL, *, read_only: bool) -> sa.URL:
    """Check the file (reading: it exists; writing: its folder does); open read-only if asked."""
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return parsed
    path = Path(database).expanduser().absolute()
    if not read_only:
        if not path.parent.is_dir():
            raise ConfigurationError(
                f"cannot create the database {path}: the folder {path.parent} does not exist"
            )
        return parsed
    if not path.is_file():
        raise ConfigurationError(
            f"no database at {path}: a command that only reads never creates one "
            "(check --db or METASTORE_DATABASE_URL, or ingest something first)"
        )
    query = {"mode": "ro", "uri": "true"}
    if not os.access(path.parent, os.W_OK) and not Path(f"{path}-shm").exists():
        # A read-only medium: SQLite cannot make the WAL index, and nobody writes there.
        query["immutable"] = "1"
    return parsed.set(database=f"file:{quote(str(path))}", query=query)


def _configure_sqlite(engine: Engine, *, read_only: bool = False) -> None:
    """WAL, foreign keys, a busy timeout, and write transactions that lock up front.

    pysqlite begins transactions lazily and as DEFERRED, so two writers can
    both read and then deadlock when upgrading to a write lock (SQLITE_BUSY
    that the busy timeout cannot resolve). We take over BEGIN and issue
    ``BEGIN IMMEDIATE`` unless the connection is marked read-only.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if not read_only:  # setting the journal mode writes the file
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit
            # survives the application crashing (or being killed) at any moment, and
            # the database stays consistent on a power loss, which may undo the last
            # commits before the latest checkpoint (then re-run the ingests, see
            # README "Checking, backup and restore"). FULL costs an fsync per commit.
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        readonly = read_only or connection.get_execution_options().get("metastore_readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def refuses_writes(connection: Connection) -> bool:
    """Whether the database refuses writes to this connection's sessions.

    PostgreSQL: a hot standby (``pg_is_in_recovery()``), or
    ``default_transaction_read_only`` on; asked of the server, whatever mode
    this connection's own transaction is in. SQLite: a file opened
    read-only (``mode=ro``) or ``PRAGMA query_only``.
    """
    if connection.dialect.name == "postgresql":
        return bool(
            connection.exec_driver_sql(
                "SELECT pg_is_in_recovery()"
                " OR current_setting('default_transaction_read_only')::boolean"
            ).scalar()
        )
    if connection.engine.url.query.get("mode") == "ro":
        return True
    return bool(connection.exec_driver_sql("PRAGMA query_only").scalar())


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn SQLAlchemy's exceptions, and the drivers' own (the write path's statements run on
    the driver connection, see ``metastore.statements``), into ``DatabaseError`` naming the
    operation."""
    try:
        yield
    except exc.SQLAlchemyError as err:
        detail = getattr(err, "orig", None) or err
        raise DatabaseError(f"{what} failed: {str(detail).strip().splitlines()[0]}") from err
    except Exception as err:
        if not _is_driver_error(err):
            raise
        raise DatabaseError(f"{what} failed: {_first_line(err)}") from err


# SQLSTATEs of a transaction PostgreSQL gave up on so that another could go on
# (deadlock_detected, serialization_failure): run again, it goes through.
_LOST_TO_ANOTHER = frozenset({"40P01", "40001"})


def lost_to_another(err: BaseException) -> bool:
    """Whether ``err`` (a ``DatabaseError``, or what raised it) is a transaction the
    server aborted in favour of another one, a deadlock or a serialization failure:
    nothing was wrong with it, and running it again succeeds."""
    seen: BaseException | None = err
    while seen is not None:
        for candidate in (seen, getattr(seen, "orig", None)):
            if getattr(candidate, "sqlstate", None) in _LOST_TO_ANOTHER:
                return True
        seen = seen.__cause__
    return False


def _is_driver_error(err: Exception) -> bool:
    if isinstance(err, sqlite3.Error):
        return True
    psycopg = sys.modules.get("psycopg")  # loaded with any PostgreSQL engine, only then
    return psycopg is not None and isinstance(err, psycopg.Error)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@contextmanager
def writing(engine: Engine, what: str) -> Iterator[Connection]:
    """One write transaction (``BEGIN IMMEDIATE`` on SQLite); errors name ``what``."""
    with translate_errors(what), engine.begin() as connection:
        yield connection


@contextmanager
def reading(engine: Engine, what: str) -> Iterator[Connection]:
    """One read-only transaction (a plain ``BEGIN`` on SQLite); errors name ``what``."""
    with translate_errors(what), engine.connect() as connection:
        connection = connection.execution_options(metastore_readonly=True)
        with connection.begin():
            yield connection


class WriteLockBusy(Exception):
    """SQLite's write lock is taken right now (see ``writing_if_free``)."""


@contextmanager
def writing_if_free(engine: Engine, what: str) -> Iterator[Connection]:
    """A write transaction, but on SQLite only if the write lock is free at once.

    Raises ``WriteLockBusy`` otherwise. SQLite has one write lock, and its busy
    handler sleeps in steps of up to 100 ms: a consumer that waits for the
    lock behind a busy writer can starve for a second, holding up delivery.
    What can wait for another batch (a cursor save) asks with this instead.
    """
    if engine.dialect.name != "sqlite":
        with writing(engine, what) as connection:
            yield connection
        return
    with translate_errors(what), engine.connect() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        (patience,) = driver.execute("PRAGMA busy_timeout").fetchone()
        driver.execute("PRAGMA busy_timeout=0")
        try:
            try:
                transaction = connection.begin()
            except sa.exc.OperationalError as err:
                raise WriteLockBusy(what) from err
            with transaction:
                driver.execute(f"PRAGMA busy_timeout={int(patience)}")
                yield connection
        finally:
            driver.execute(f"PRAGMA busy_timeout={int(patience)}")


# -- the clock leases are measured in ------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def now(connection: Connection) -> sa.ColumnElement[datetime]:
    """The current time as SQL, for leases and due times.

    PostgreSQL: the server's clock (``clock_timestamp()``), so every
    machine sharing a lease reads one clock. SQLite is on this machine: its
    clock is the local one, kept (like ``CURRENT_TIMESTAMP``) as UTC without
    an offset.
    """
    if connection.dialect.name == "postgresql":
        return sa.func.clock_timestamp()
    return sa.literal(_utcnow(), sa.DateTime())


def later(connection: Connection, seconds: float) -> sa.ColumnElement[datetime]:
    """``seconds`` from ``now``, as SQL."""
    if connection.dialect.name == "postgresql":
        return sa.func.clock_timestamp() + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    return sa.literal(_utcnow() + timedelta(seconds=seconds), sa.DateTime())


def owner_id() -> str:
    """A lease owner id unique across machines and processes: host, pid, random suffix."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def upsert(connection: Connection, table: sa.Table) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support, for the connection's dialect.

    Both dialects spell ``on_conflict_do_update(index_elements=..., set_=...,
    where=...)`` the same way; only the constructor differs.
    """
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# -- migrations -------------------------------------------------------------


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the project's ``migrations/``."""
    ini = PROJECT_ROOT / "alembic.ini"
    if not ini.is_file():
        raise ConfigurationError(f"migrations not found: {ini} is missing")
    config = Config(str(ini))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision the code expects."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "migrations/ has no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    what = f"reading the schema revision of {describe(engine)}"
    with translate_errors(what), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (under a lock on PostgreSQL)."""
    _migrate(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Take the database back to ``revision``."""
    _migrate(engine, "downgrade", revision)


def _migrate(engine: Engine, direction: str, revision: str) -> None:
    """Alembic's upgrade or downgrade; an unknown revision is one line naming it."""
    with translate_errors(f"migrating {describe(engine)}"), _migration_lock(engine) as connection:
        try:
            getattr(command, direction)(alembic_config(connection), revision)
        except CommandError as err:
            raise ConfigurationError(
                f"cannot {direction} to revision {revision!r}: {err}"
            ) from None
        connection.commit()


def ensure_schema(engine: Engine, *, create: bool = True) -> None:
    """Migrate a brand-new database to head (unless not ``create``); refuse one that is behind.

    An existing database is never changed silently: a schema at another
    revision raises ``SchemaNotAtHead`` naming ``metastore db upgrade``.
    """
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    if current is None:
        with translate_errors("inspecting the database"), engine.connect() as connection:
            existing = set(sa.inspect(connection).get_table_names())
        if existing - {"alembic_version"}:
            raise SchemaNotAtHead(
                f"{redact(str(engine.url))} has tables but no metastore schema revision; "
                "it is not a metastore database, or run `metastore db upgrade`",
                current=None,
                head=head,
            )
        if not create:
            raise SchemaNotAtHead(
                f"{describe(engine)} holds no metastore index yet (nothing was ingested "
                "into it): ingest something, or run `metastore db upgrade`",
                current=None,
                head=head,
            )
        log.info("creating the metastore schema in %s", redact(str(engine.url)))
        upgrade(engine)
        return
    raise SchemaNotAtHead(
        f"the database {redact(str(engine.url))} is at schema revision {current}, "
        f"this metastore needs {head}: run `metastore db upgrade`",
        current=current,
        head=head,
    )


@dataclass(frozen=True, kw_only=True)
class SchemaState:
    """Where a database's schema is: its revision before and after, the code's head."""

    url: str  # redacted
    before: str | None
    current: str | None
    head: str

    @property
    def at_head(self) -> bool:
        return self.current == self.head


def schema_state(url: str | None = None, *, upgrade_to: str | None = None) -> SchemaState:
    """The schema revision of the database at ``url`` (resolved as ``MetaStore`` does).

    With ``upgrade_to`` (a revision or ``head``) the database is migrated
    there first; ``before`` is where it was.
    """
    engine = create_engine(url, read_only=upgrade_to is None)
    try:
        before = current_revision(engine)
        if upgrade_to is not None:
            upgrade(engine, upgrade_to)
        after = current_revision(engine) if upgrade_to is not None else before
    finally:
        engine.dispose()
    return SchemaState(
        url=redact(resolve_url(url)), before=before, current=after, head=head_revision()
    )


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        if connection.dialect.name != "postgresql":
            yield connection
            return
        connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            yield connection
        finally:
            connection.rollback()
            connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            connection.commit()
