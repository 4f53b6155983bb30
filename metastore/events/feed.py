"""Reading the change feed without a cursor of one's own, the consumer registry, retention."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from metastore import db
from metastore.errors import ConfigurationError, ConsumerError
from metastore.events.consumer import Consumer
from metastore.events.wakeup import wakeup_for
from metastore.outbox import (
    EventType,
    Handler,
    as_utc,
    head,
    parse_types,
    read_batch,
    sequence_number,
)
from metastore.progress import Progress, Reporting
from metastore.schema import consumers, outbox
from metastore.store import MetaStore

log = logging.getLogger(__name__)

_PRUNE_CHUNK = 10_000


@dataclass(frozen=True, kw_only=True)
class ConsumerInfo:
    """A registered consumer as ``metastore consumers`` shows it."""

    name: str
    last_seq: int
    #: Events in the outbox after ``last_seq`` (of every type).
    lag: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> ConsumerInfo:
        expires = row["lease_expires_at"]
        return cls(
            name=row["name"],
            last_seq=row["last_seq"],
            lag=row["lag"],
            lease_owner=row["lease_owner"],
            lease_expires_at=None if expires is None else as_utc(expires),
            updated_at=as_utc(row["updated_at"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        expires = self.lease_expires_at
        return {
            "name": self.name,
            "last_seq": self.last_seq,
            "lag": self.lag,
            "lease_owner": self.lease_owner,
            "lease_expires_at": None if expires is None else expires.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def tail(
    store: MetaStore,
    handler: Handler,
    *,
    consumer: str | None = None,
    after: int = 0,
    events: Iterable[EventType | str] | None = None,
    follow: bool = False,
    stop: threading.Event | None = None,
    poll_interval: float = 1.0,
    limit: int = 1000,
    lease_seconds: float = 60.0,
) -> int:
    """Hand events to ``handler`` in order; returns how many.

    Without ``consumer`` it reads from ``after`` and remembers nothing. With
    ``consumer`` it reads from that consumer's cursor and advances it (a
    failing handler is not retried: it raises ``HandlerFailed`` and the
    cursor stays before that event). ``follow`` keeps going live until
    ``stop`` is set; otherwise it returns once it has caught up.
    """
    if consumer is not None:
        with Consumer(
            store,
            consumer,
            events,
            poll_interval=poll_interval,
            max_attempts=1,
            lease_seconds=lease_seconds,
        ) as durable:
            if follow:
                return durable.run(handler, stop, limit=limit)
            if not durable.acquire():
                raise ConsumerError(
                    f"consumer {consumer!r} is leased by another process", consumer=consumer
                )
            total = 0
            while True:
                handled, more = durable.process_batch(handler, limit, stop)
                total += handled
                if not more:
                    return total
    types = parse_types(events)
    position, total = sequence_number(after, "after"), 0
    wakeup = wakeup_for(store.engine) if follow else None
    try:
        while not (stop is not None and stop.is_set()):
            with db.reading(store.engine, "reading the change feed") as connection:
                batch, reach = read_batch(connection, position, types, limit)
            for event in batch:
                handler(event)
                total += 1
            position = reach
            if len(batch) == limit:
                continue
            if wakeup is None:
                break
            wakeup.wait(poll_interval, stop)
    finally:
        if wakeup is not None:
            wakeup.close()
    return total


def list_consumers(store: MetaStore) -> list[ConsumerInfo]:
    """Every registered consumer with its cursor, lease and lag, by name."""
    lag = (
        sa.select(sa.func.count())
        .where(outbox.c.seq > consumers.c.last_seq)
        .scalar_subquery()
        .label("lag")
    )
    query = sa.select(*consumers.c, lag).order_by(consumers.c.name)
    with db.reading(store.engine, "listing consumers") as connection:
        return [ConsumerInfo.from_row(row) for row in connection.execute(query).mappings()]


def remove_consumer(store: MetaStore, name: str) -> bool:
    """Forget a consumer (its cursor and lease); False if there was none.

    A removed consumer no longer holds back ``prune``; if it runs again it
    starts afresh.
    """
    with db.writing(store.engine, f"removing consumer {name!r}") as connection:
        removed = connection.execute(sa.delete(consumers).where(consumers.c.name == name))
    return bool(removed.rowcount)


def prune(
    store: MetaStore,
    *,
    before: int | None = None,
    older_than: timedelta | None = None,
    force: bool = False,
    progress: Reporting = None,
) -> int:
    """Delete old events; returns how many.

    ``before`` deletes events with a lower sequence number, ``older_than``
    those written longer ago (both given: both must hold). Only events that
    every registered consumer has processed go, unless ``force``. Deletes
    in chunks, one transaction each, so writers are never held up long.
    """
    if before is None and older_than is None:
        raise ConfigurationError("say what to prune: before a sequence number or older than")
    if older_than is not None and older_than < timedelta(0):
        raise ConfigurationError(f"older_than must not be negative, not {older_than}")
    engine = store.engine
    with db.reading(engine, "planning the prune") as connection:
        first = connection.execute(sa.select(sa.func.min(outbox.c.seq))).scalar()
        last = head(connection)
        slowest = connection.execute(sa.select(sa.func.min(consumers.c.last_seq))).scalar()
        cutoff = None
        if older_than is not None:
            now = connection.execute(sa.select(db.now(connection))).scalar_one()
            cutoff = now - older_than
    if first is None or last is None:
        return 0
    upper = last if before is None else min(last, before - 1)
    if slowest is not None and not force:
        upper = min(upper, slowest)
    if upper < first:
        return 0
    deleted = 0
    with Progress(
        "pruning the change feed", total=upper - first + 1, unit="seq", display=progress
    ) as bar:
        for low in range(first - 1, upper, _PRUNE_CHUNK):
            high = min(low + _PRUNE_CHUNK, upper)
            statement = sa.delete(outbox).where(outbox.c.seq > low, outbox.c.seq <= high)
            if cutoff is not None:
                statement = statement.where(outbox.c.created_at < cutoff)
            with db.writing(engine, "pruning the change feed") as connection:
                deleted += connection.execute(statement).rowcount
            bar.update(high - low)
    log.info("pruned %s events up to seq %s", deleted, upper)
    return deleted
