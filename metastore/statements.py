"""Statements on the driver's own connection: the write path's hot statements.

SQLAlchemy's execution machinery costs ~50 us a statement on SQLite, more
than most statements themselves, and psycopg's pipeline mode (several
statements in one round trip to PostgreSQL) is reached only through the
driver. So the fixed statements of every write (the upsert, the bulk
inserts, the look-ups by UID list, the outbox insert) go to the driver
connection under a SQLAlchemy ``Connection``, in its transaction; the
errors they raise are translated by ``db.translate_errors`` like
SQLAlchemy's. Placeholders are the driver's: ``?`` on SQLite, ``%s`` (or
``%b``, binary) on PostgreSQL.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def driver(connection: Connection) -> Any:
    """The driver's own connection (sqlite3 or psycopg) under ``connection``, in its transaction."""
    return connection.connection.driver_connection


def send(connection: Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    """One statement on the driver connection; its cursor, to read once it has run.

    Placeholders are the driver's: ``?`` on SQLite, ``%s`` on PostgreSQL
    (see ``placeholder``); ``any_of`` spells a list condition for both.
    Inside ``pipeline`` the statement is only sent: read its cursor after
    the block (reading it inside costs a round trip of its own).
    """
    cursor = driver(connection).cursor()
    cursor.execute(sql, params)
    return cursor


def run(connection: Connection, sql: str, params: Sequence[Any] = ()) -> None:
    """One statement without rows on the driver connection (see ``send``)."""
    send(connection, sql, params)


def fetch(connection: Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """One statement on the driver connection; its rows (see ``send``)."""
    return list(send(connection, sql, params).fetchall())


@contextmanager
def pipeline(connection: Connection) -> Iterator[None]:
    """Statements sent (``send``, ``run``) in the block go to PostgreSQL in one round trip
    (psycopg's pipeline mode: sent at once, their errors raised at the end of the block);
    on SQLite, in process, they simply run."""
    if connection.dialect.name != "postgresql":
        yield
        return
    with driver(connection).pipeline():
        yield


def placeholder(connection: Connection) -> str:
    """The driver's parameter placeholder."""
    return "%s" if connection.dialect.name == "postgresql" else "?"


def any_of(connection: Connection, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """``IN (?, ...)`` with its parameters (SQLite), ``= ANY(%b)`` with one array (PostgreSQL):
    one statement text, so one prepared statement, whatever the number of values.

    ``%b``: psycopg sends the array in binary form; in text form it escapes
    each element in Python, ten times slower for JSON text.
    """
    if connection.dialect.name == "postgresql":
        return "= ANY(%b)", [list(values)]
    return f"IN ({', '.join('?' * len(values))})", list(values)


# Rows per multi-row statement: under SQLite's 32,766 and PostgreSQL's
# 65,535 bind parameters for tables of up to 32 columns.
UPSERT_CHUNK = 1000


def upsert_many(
    connection: Connection, table: sa.Table, rows: Sequence[Sequence[Any]], **options: Any
) -> list[Any]:
    """Multi-row upsert that writes only what changed; returns the written rows.

    ``options`` as ``send_upsert``'s: ``INSERT INTO t (columns) VALUES (...),
    (...) ON CONFLICT (conflict) DO UPDATE SET <the other columns> =
    excluded.<column>, <touch> WHERE <any of them differs> RETURNING
    <returning>``: a row whose content is unchanged is neither written nor
    returned. Both SQLite (>= 3.35) and PostgreSQL spell it so; only the
    placeholder, the JSONB cast and the null-safe inequality differ. The
    SQL is built once per shape and the rows go straight to the driver:
    this is the hot path of every ingest. With ``update=False`` an existing
    row is left alone (``DO NOTHING``).
    """
    cursors = send_upsert(connection, table, rows, **options)
    return [row for cursor in cursors for row in cursor.fetchall()]


def send_upsert(
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
    """``upsert_many``'s statements (one per ``UPSERT_CHUNK`` rows), sent (see ``send``);
    their cursors."""
    cursors = []
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
        cursors.append(send(connection, sql, [value for row in chunk for value in row]))
    return cursors


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
