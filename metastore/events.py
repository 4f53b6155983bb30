"""The change feed: event types, event rows, and reading the outbox.

Writers put one ``outbox`` row per event in the same transaction as the
change it announces; readers page through the outbox by sequence number.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore.schema import outbox


class EventType(enum.StrEnum):
    """What an outbox row announces (after OHIF's ``DicomMetadataStore`` events)."""

    SERIES_ADDED = "SERIES_ADDED"
    INSTANCES_ADDED = "INSTANCES_ADDED"
    STUDY_DELETED = "STUDY_DELETED"


#: The event names, as ``EVENTS.SERIES_ADDED`` etc. (OHIF spells it so).
EVENTS = EventType


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
            created_at=row["created_at"],
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


_COLUMNS = (
    outbox.c.seq,
    outbox.c.event_type,
    outbox.c.study_uid,
    outbox.c.series_uid,
    outbox.c.source,
    outbox.c.payload,
    outbox.c.created_at,
)


def write_events(connection: Connection, rows: list[dict[str, Any]]) -> list[Event]:
    """Insert outbox rows (keys: event_type, study_uid, series_uid, source, payload).

    The caller owns the transaction: the events commit with the change.
    On PostgreSQL each row records its transaction id, which lets readers
    hold back rows that an older, still-running transaction could precede.
    """
    if not rows:
        return []
    statement = sa.insert(outbox)
    if connection.dialect.name == "postgresql":
        statement = statement.values(txid=sa.text("pg_current_xact_id()::text::bigint"))
    result = connection.execute(statement.returning(*_COLUMNS, sort_by_parameter_order=True), rows)
    return [Event.from_row(row) for row in result.mappings()]


def read_changes(connection: Connection, after: int = 0, limit: int = 1000) -> list[Event]:
    """Events with a sequence number above ``after``, in order, at most ``limit``."""
    query = sa.select(*_COLUMNS).where(outbox.c.seq > after).order_by(outbox.c.seq).limit(limit)
    return [Event.from_row(row) for row in connection.execute(query).mappings()]
