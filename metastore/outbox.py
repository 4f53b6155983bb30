"""The outbox: event types, event rows, writing them and reading them in order.

Writers put one ``outbox`` row per event in the same transaction as the
change it announces (``write_events``); readers page through the outbox by
sequence number (``read_changes``). Durable consumers build on this in
``metastore.events``.

Why a reader never skips an event
---------------------------------
A reader that remembers "the highest sequence number seen" skips an event
when a lower number becomes visible after a higher one: PostgreSQL takes
``nextval`` at insert time but makes the row visible at commit, and two
writers can commit in the other order. Filtering rows by the writers'
transaction ids (``txid < pg_snapshot_xmin(pg_current_snapshot())``) does
not close the gap on its own: a transaction gets its id at its *first*
write (the study rows), long before it takes a sequence number, so writer A
(xid 100) can take seq 51 after writer B (xid 101) took seq 50; once A
commits, row 51 passes the filter while row 50 is still invisible.

So on PostgreSQL ``write_events`` takes a transaction-level advisory lock
before it inserts: from the moment a transaction takes outbox sequence
numbers until it ends, no other transaction can take any. PostgreSQL makes
a commit visible before it releases the transaction's locks (``xact.c``:
``ProcArrayEndTransaction`` "must be done before releasing locks"), so the
next writer's numbers are taken after the previous writer is visible:
sequence order is commit order, and at any moment at most one transaction
holds numbers that are not yet visible, all of them higher than every
visible one. A reader that sees ``seq = n`` has seen, or will never see,
everything below ``n``. The lock is held from the outbox insert (the last
statement of every write) to the commit: only commit itself is serialized,
never the work of a write.

SQLite needs nothing more: a write transaction starts with ``BEGIN
IMMEDIATE`` and holds the database's single write lock until it ends, so
only one transaction at a time can take sequence numbers (``AUTOINCREMENT``,
which never reuses a number, even after a prune), and it commits before the
next writer can start. A WAL reader sees a prefix of the commit order.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore import statements
from metastore.errors import ConfigurationError
from metastore.schema import outbox


class EventType(enum.StrEnum):
    """What an outbox row announces (after OHIF's ``DicomMetadataStore`` events)."""

    SERIES_ADDED = "SERIES_ADDED"
    INSTANCES_ADDED = "INSTANCES_ADDED"
    STUDY_DELETED = "STUDY_DELETED"
    #: A source's series removed from a study that other sources still hold
    #: (the archive deleted them); payload: ``SeriesInstanceUIDs``, ``numInstances``.
    SERIES_REMOVED = "SERIES_REMOVED"


#: The event names, as ``EVENTS.SERIES_ADDED`` etc. (OHIF spells it so).
EVENTS = EventType

#: A consumer's handler: called once per event; raising means "not handled".
Handler = Callable[["Event"], None]

#: The channel ``write_events`` notifies on PostgreSQL.
NOTIFY_CHANNEL = "metastore_outbox"

# Held (transaction-level) by the one transaction that may take outbox
# sequence numbers; see the module docstring. "outb" in ASCII.
_OUTBOX_LOCK_KEY = 0x6F757462


def as_utc(value: datetime) -> datetime:
    """A time read from the database, with its offset (SQLite keeps UTC without one)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, kw_only=True)
class Event:
    """One row of the change feed."""

    seq: int
    type: EventType
    study_uid: str
    series_uid: str | None
    source: str | None
    payload: Mapping[str, Any]
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Event:
        """An event from an ``outbox`` row (a mapping keyed by column)."""
        return cls(
            seq=row["seq"],
            type=EventType(row["event_type"]),
            study_uid=row["study_uid"],
            series_uid=row["series_uid"],
            source=row["source"],
            payload=row["payload"],
            created_at=as_utc(row["created_at"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The event as plain JSON-ready data."""
        return {
            "seq": self.seq,
            "type": str(self.type),
            "study_uid": self.study_uid,
            "series_uid": self.series_uid,
            "source": self.source,
            "payload": dict(self.payload),
            "created_at": self.created_at.isoformat(),
        }


def parse_types(spec: str | Iterable[str] | None) -> frozenset[EventType] | None:
    """Event types from ``"SERIES_ADDED,INSTANCES_ADDED"`` or a list; None means all."""
    if spec is None:
        return None
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen: set[EventType] = set()
    for name in (n.strip() for n in names):
        if not name:
            continue
        try:
            chosen.add(EventType(name.upper()))
        except ValueError:
            known = ", ".join(EventType)
            raise ConfigurationError(f"unknown event type {name!r} (known: {known})") from None
    return frozenset(chosen) or None


# -- writing and reading the outbox ------------------------------------------

_COLUMNS = (
    outbox.c.seq,
    outbox.c.event_type,
    outbox.c.study_uid,
    outbox.c.series_uid,
    outbox.c.source,
    outbox.c.payload,
    outbox.c.created_at,
)


def event_row(
    kind: EventType,
    study_uid: str,
    series_uid: str | None,
    source: str | None,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """An outbox row for ``write_events``: its payload names the study, series and source."""
    payload: dict[str, Any] = {"StudyInstanceUID": study_uid}
    if series_uid is not None:
        payload["SeriesInstanceUID"] = series_uid
    if source is not None:
        payload["source"] = source
    payload.update(extra)
    return {
        "event_type": str(kind),
        "study_uid": study_uid,
        "series_uid": series_uid,
        "source": source,
        "payload": payload,
    }


def write_events(connection: Connection, rows: list[dict[str, Any]]) -> list[Event]:
    """Insert outbox rows (keys: event_type, study_uid, series_uid, source, payload).

    The caller owns the transaction: the events commit with the change.
    Make this the last statement of the transaction: on PostgreSQL it takes
    the outbox lock, which every other event writer waits for until this
    transaction ends (see the module docstring), and queues a ``NOTIFY``
    that wakes consumers when it commits. Each row records its transaction
    id, for diagnosis. The events come back in sequence order.
    """
    return send_events(connection, rows)()


def send_events(connection: Connection, rows: list[dict[str, Any]]) -> Callable[[], list[Event]]:
    """``write_events``' statements, sent (``statements.send``: inside a pipeline they go
    with the others); returns what reads the events once they have run."""
    if not rows:
        return list
    cursors = []
    if connection.dialect.name == "postgresql":
        _take_outbox_lock_and_notify(connection)
        columns = [[row[name] for row in rows] for name in _WRITTEN]
        columns[-1] = [orjson.dumps(payload).decode() for payload in columns[-1]]
        cursors.append(statements.send(connection, _INSERT_POSTGRES, columns))
    else:
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            values = [
                orjson.dumps(row[name]).decode() if name == "payload" else row[name]
                for row in chunk
                for name in _WRITTEN
            ]
            slots = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
            cursors.append(statements.send(connection, _INSERT_SQLITE.format(slots=slots), values))

    def read() -> list[Event]:
        found = [row for cursor in cursors for row in cursor.fetchall()]
        return [_event(row) for row in sorted(found)]

    return read


_WRITTEN = ("event_type", "study_uid", "series_uid", "source", "payload")
_CHUNK = 1000  # rows per statement on SQLite (5 parameters each)
_RETURNED = ("seq", "event_type", "study_uid", "series_uid", "source", "payload", "created_at")
_RETURNING = f"RETURNING {', '.join(_RETURNED)}"
# One array per column, in order (WITH ORDINALITY ... ORDER BY: sequence numbers follow it).
_INSERT_POSTGRES = (
    "INSERT INTO outbox (event_type, study_uid, series_uid, source, payload, txid) "
    "SELECT e, s, se, so, p::jsonb, pg_current_xact_id()::text::bigint "
    "FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) "
    "WITH ORDINALITY AS u(e, s, se, so, p, n) ORDER BY n " + _RETURNING
)
_INSERT_SQLITE = (
    "INSERT INTO outbox (event_type, study_uid, series_uid, source, payload) VALUES {slots} "
    + _RETURNING
)


def _event(row: tuple[Any, ...]) -> Event:
    """An event from the driver's row (SQLite gives JSON and times as text)."""
    found = dict(zip(_RETURNED, row, strict=True))
    if isinstance(found["payload"], str):
        found["payload"] = orjson.loads(found["payload"])
    if isinstance(found["created_at"], str):
        found["created_at"] = datetime.fromisoformat(found["created_at"])
    return Event.from_row(found)


def _take_outbox_lock_and_notify(connection: Connection) -> None:
    """PostgreSQL: serialize outbox writers until commit; wake listeners at commit.

    ``pg_advisory_xact_lock`` is released when the transaction ends, after
    its commit is visible. ``pg_notify`` is delivered at commit, never on
    rollback, and PostgreSQL folds a transaction's identical notifications
    into one.
    """
    statements.run(
        connection,
        "SELECT pg_advisory_xact_lock(%s), pg_notify(%s, '')",
        (_OUTBOX_LOCK_KEY, NOTIFY_CHANNEL),
    )


#: The largest sequence number either engine can hold (a signed 64-bit integer).
MAX_SEQ = 2**63 - 1


def sequence_number(value: int, name: str, *, low: int = 0) -> int:
    """``value`` if it is an integer from ``low`` to ``MAX_SEQ``; else ``ConfigurationError``."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_SEQ:
        raise ConfigurationError(
            f"{name} must be an integer from {low} to {MAX_SEQ}, not {value!r}"
        )
    return value


def read_changes(
    connection: Connection,
    after: int = 0,
    limit: int = 1000,
    *,
    types: Collection[EventType] | None = None,
    until: int | None = None,
) -> list[Event]:
    """Events with a sequence number above ``after``, in order, at most ``limit``.

    Never skips: what it returns is final below its last sequence number
    (see the module docstring). ``types`` keeps only those event types;
    ``until`` stops at that sequence number.
    """
    after = sequence_number(after, "after")
    limit = sequence_number(limit, "limit", low=1)
    query = sa.select(*_COLUMNS).where(outbox.c.seq > after).order_by(outbox.c.seq).limit(limit)
    if types:
        query = query.where(outbox.c.event_type.in_(sorted(str(t) for t in types)))
    if until is not None:
        query = query.where(outbox.c.seq <= until)
    return [Event.from_row(row) for row in connection.execute(query).mappings()]


def head(connection: Connection) -> int | None:
    """The highest sequence number in the outbox, or None when it is empty."""
    highest: int | None = connection.execute(sa.select(sa.func.max(outbox.c.seq))).scalar()
    return highest


def read_batch(
    connection: Connection, after: int, types: Collection[EventType] | None, limit: int
) -> tuple[list[Event], int]:
    """The next events after ``after``, and how far the reader has then read.

    The head is read first and the events below it second, so that with a
    type filter the reader can move past events it does not want without
    passing one that committed in between.
    """
    highest = head(connection)
    if highest is None or highest <= after:
        return [], after
    batch = read_changes(connection, after, limit, types=types, until=highest)
    return batch, highest if len(batch) < limit else batch[-1].seq
