"""Engines, dialect-specific statements and the schema-at-head check.

Everything that differs between SQLite and PostgreSQL at the connection
level lives here: the URL rules, SQLite's pragmas and write locking, the
upsert statement, the translation of SQLAlchemy's exceptions into
``metastore.errors``, the transaction helpers every public operation opens
(``reading``, ``writing``), the database clock leases are measured in
(``now``, ``later``) and lease owner ids.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from metastore.errors import ConfigurationError, DatabaseError, SchemaNotAtHead

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///metastore.db"
URL_ENV = "METASTORE_DATABASE_URL"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Taken by whoever migrates a PostgreSQL database, so that workers starting
# together on a brand-new database do not all try to create it.
_MIGRATION_LOCK_KEY = 0x6D657461  # "meta"


def resolve_url(url: str | None = None) -> str:
    """The database URL: the argument, else ``METASTORE_DATABASE_URL``, else the default."""
    chosen = url or os.environ.get(URL_ENV) or DEFAULT_URL
    # psycopg 3 is our PostgreSQL driver; accept the short spellings too.
    for prefix in ("postgresql://", "postgres://"):
        if chosen.startswith(prefix):
            chosen = "postgresql+psycopg://" + chosen[len(prefix) :]
    return chosen


def redact(url: str) -> str:
    """The URL as it may appear in logs and messages: no password."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparsable database URL>"


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def create_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """An engine for the URL with metastore's settings for its dialect."""
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
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
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
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        readonly = connection.get_execution_options().get("metastore_readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn SQLAlchemy's exceptions into ``DatabaseError`` naming the operation."""
    try:
        yield
    except exc.SQLAlchemyError as err:
        detail = getattr(err, "orig", None) or err
        raise DatabaseError(f"{what} failed: {str(detail).strip().splitlines()[0]}") from err


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


# Rows per multi-row statement: under SQLite's 32,766 and PostgreSQL's
# 65,535 bind parameters for tables of up to 32 columns.
UPSERT_CHUNK = 1000


def upsert_many(
    connection: Connection,
    table: sa.Table,
    rows: Sequence[Sequence[Any]],
    *,
    columns: Sequence[str],
    conflict: Sequence[str],
    returning: Sequence[str],
    touch: Mapping[str, str] | None = None,
    update: bool = True,
) -> list[Any]:
    """Multi-row upsert that writes only what changed; returns the written rows.

    ``INSERT INTO t (columns) VALUES (...), (...) ON CONFLICT (conflict) DO
    UPDATE SET <the other columns> = excluded.<column>, <touch> WHERE <any
    of them differs> RETURNING <returning>``: a row whose content is
    unchanged is neither written nor returned. Both SQLite (>= 3.35) and
    PostgreSQL spell it so; only the placeholder, the JSONB cast and the
    null-safe inequality differ. The SQL is built once per shape and the
    rows go straight to the driver: this is the hot path of every ingest.
    With ``update=False`` an existing row is left alone (``DO NOTHING``).
    """
    written: list[Any] = []
    for start in range(0, len(rows), UPSERT_CHUNK):
        chunk = rows[start : start + UPSERT_CHUNK]
        sql = _upsert_sql(
            connection.dialect,
            table,
            tuple(columns),
            tuple(conflict),
            tuple(returning),
            tuple(sorted((touch or {}).items())),
            update,
            len(chunk),
        )
        flat = [value for row in chunk for value in row]
        written.extend(connection.exec_driver_sql(sql, tuple(flat)).fetchall())
    return written


def insert_many(
    connection: Connection,
    table: sa.Table,
    rows: Sequence[Sequence[Any]],
    *,
    columns: Sequence[str],
) -> None:
    """Plain bulk insert of rows known to be new, in the caller's transaction.

    PostgreSQL: ``COPY ... FROM STDIN`` on the connection's own psycopg
    connection (same transaction), the fastest way in. SQLite: one
    ``executemany`` of a prepared ``INSERT``. A conflict here is a bug in the
    caller and fails the transaction.
    """
    if not rows:
        return
    quote = connection.dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    if connection.dialect.name == "postgresql":
        driver = connection.connection.driver_connection
        statement = f"COPY {quote(table.name)} ({names}) FROM STDIN"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(row)
        return
    slots = ", ".join("?" * len(columns))
    connection.exec_driver_sql(
        f"INSERT INTO {quote(table.name)} ({names}) VALUES ({slots})", list(rows)
    )


@functools.lru_cache(maxsize=512)
def _upsert_sql(
    dialect: sa.Dialect,
    table: sa.Table,
    columns: tuple[str, ...],
    conflict: tuple[str, ...],
    returning: tuple[str, ...],
    touch: tuple[tuple[str, str], ...],
    update: bool,
    count: int,
) -> str:
    quote = dialect.identifier_preparer.quote
    sqlite_ = dialect.name == "sqlite"
    placeholder = "?" if sqlite_ else "%s"
    differs = "IS NOT" if sqlite_ else "IS DISTINCT FROM"
    slots = []
    for name in columns:
        is_json = isinstance(table.c[name].type, sa.JSON)
        slots.append(f"{placeholder}::jsonb" if is_json and not sqlite_ else placeholder)
    group = "(" + ", ".join(slots) + ")"
    target = quote(table.name)
    updated = [name for name in columns if name not in conflict]
    assignments = [f"{quote(n)} = excluded.{quote(n)}" for n in updated]
    assignments += [f"{quote(n)} = {expression}" for n, expression in touch]
    condition = " OR ".join(f"{target}.{quote(n)} {differs} excluded.{quote(n)}" for n in updated)
    action = f"DO UPDATE SET {', '.join(assignments)} WHERE {condition}" if update else "DO NOTHING"
    return (
        f"INSERT INTO {target} ({', '.join(quote(n) for n in columns)}) "
        f"VALUES {', '.join([group] * count)} "
        f"ON CONFLICT ({', '.join(quote(n) for n in conflict)}) {action} "
        f"RETURNING {', '.join(quote(n) for n in returning)}"
    )


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
    with translate_errors("reading the schema revision"), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (under a lock on PostgreSQL)."""
    with translate_errors("migrating the database"), _migration_lock(engine) as connection:
        command.upgrade(alembic_config(connection), revision)
        connection.commit()


def downgrade(engine: Engine, revision: str) -> None:
    """Take the database back to ``revision``."""
    with translate_errors("migrating the database"), _migration_lock(engine) as connection:
        command.downgrade(alembic_config(connection), revision)
        connection.commit()


def ensure_schema(engine: Engine) -> None:
    """Migrate a brand-new database to head; refuse one that is behind.

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
    engine = create_engine(url)
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
