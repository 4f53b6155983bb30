"""The change feed for services: durable consumers, live wake-ups, retention.

A ``Consumer`` keeps its own cursor in ``consumers`` and hands events to a
handler, at least once, in sequence order, from where it left off; it
wakes on ``NOTIFY`` on PostgreSQL and polls on SQLite. ``tail`` reads
without a cursor of its own; ``prune`` deletes what every consumer has
processed. The outbox itself (event types, writing, ordered reading, and
why no event is ever skipped) is ``metastore.outbox``; its names are
re-exported here.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from metastore import db
from metastore.errors import (
    ConfigurationError,
    ConsumerError,
    DatabaseError,
    HandlerFailed,
    LeaseLost,
)
from metastore.outbox import (
    EVENTS,
    NOTIFY_CHANNEL,
    Event,
    EventType,
    Handler,
    as_utc,
    head,
    parse_types,
    read_batch,
    read_changes,
    write_events,
)
from metastore.progress import Progress
from metastore.schema import consumers, outbox

if TYPE_CHECKING:
    from metastore.store import MetaStore

__all__ = [
    "EVENTS",
    "NOTIFY_CHANNEL",
    "Consumer",
    "ConsumerInfo",
    "Event",
    "EventType",
    "Handler",
    "list_consumers",
    "parse_types",
    "prune",
    "read_changes",
    "remove_consumer",
    "tail",
    "write_events",
]

log = logging.getLogger(__name__)

_NAME_MAX = 128
# How often a wait looks at its stop event, in seconds.
_STOP_CHECK = 0.2
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


@contextmanager
def _reading(engine: Engine, what: str) -> Iterator[Connection]:
    with db.translate_errors(what), engine.connect() as connection:
        connection = connection.execution_options(metastore_readonly=True)
        with connection.begin():
            yield connection


@contextmanager
def _writing(engine: Engine, what: str) -> Iterator[Connection]:
    with db.translate_errors(what), engine.begin() as connection:
        yield connection


class _Busy(Exception):
    """SQLite's write lock is taken right now."""


@contextmanager
def _writing_if_free(engine: Engine, what: str) -> Iterator[Connection]:
    """A write transaction, but on SQLite only if the write lock is free at once.

    Raises ``_Busy`` otherwise. SQLite has one write lock, and its busy
    handler sleeps in steps of up to 100 ms: a consumer that waits for the
    lock behind a busy writer can starve for a second, holding up delivery.
    What can wait for another batch (a cursor save) asks with this instead.
    """
    if engine.dialect.name != "sqlite":
        with _writing(engine, what) as connection:
            yield connection
        return
    with db.translate_errors(what), engine.connect() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        (patience,) = driver.execute("PRAGMA busy_timeout").fetchone()
        driver.execute("PRAGMA busy_timeout=0")
        try:
            try:
                transaction = connection.begin()
            except sa.exc.OperationalError as err:
                raise _Busy(what) from err
            with transaction:
                driver.execute(f"PRAGMA busy_timeout={int(patience)}")
                yield connection
        finally:
            driver.execute(f"PRAGMA busy_timeout={int(patience)}")


# -- waking up -----------------------------------------------------------------


class Wakeup(Protocol):
    """Waits for new outbox rows: ``wait`` returns when some may have committed, or at ``timeout``."""

    def wait(self, timeout: float, stop: threading.Event | None) -> None: ...

    def close(self) -> None: ...


class _Poll:
    """SQLite (and any other database): wait the poll interval, then read again."""

    def wait(self, timeout: float, stop: threading.Event | None) -> None:
        _sleep(timeout, stop)

    def close(self) -> None:
        pass


class _Listen:
    """PostgreSQL: a dedicated connection that ``LISTEN``s on the outbox channel.

    It listens before the first read, so a commit between a read and the
    next wait is never missed: its notification waits in the connection.
    A lost connection is reopened, and the wait then returns at once, so
    the caller reads whatever committed while nobody was listening.
    ``timeout`` bounds a wait all the same, as a poll.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: psycopg.Connection[Any] | None = None
        self._connect()

    def _connect(self) -> psycopg.Connection[Any] | None:
        if self._connection is None:
            try:
                pooled = self._engine.raw_connection()
            except sa.exc.SQLAlchemyError as err:
                log.warning("cannot listen for outbox notifications, polling: %s", err)
                return None
            connection = cast("psycopg.Connection[Any]", pooled.driver_connection)
            pooled.detach()  # ours for good: a LISTENing connection must not go back to the pool
            try:
                connection.autocommit = True
                connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            except psycopg.Error as err:
                log.warning("cannot listen for outbox notifications, polling: %s", err)
                connection.close()
                return None
            self._connection = connection
        return self._connection

    def wait(self, timeout: float, stop: threading.Event | None) -> None:
        deadline = time.monotonic() + timeout
        while not (stop is not None and stop.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            connection = self._connection
            if connection is None:
                if self._connect() is not None:
                    return  # listening again: the caller reads what came meanwhile
                _sleep(min(remaining, 1.0), stop)
                continue
            # Yields every notification already received, then waits. Closed at
            # once: a suspended generator would keep the connection's lock.
            notifications = connection.notifies(timeout=min(remaining, _STOP_CHECK))
            try:
                if next(notifications, None):
                    return
            except psycopg.Error as err:
                log.warning("lost the outbox notification connection: %s", err)
                self.close()
            finally:
                notifications.close()

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None


def wakeup_for(engine: Engine) -> Wakeup:
    """LISTEN/NOTIFY on PostgreSQL, polling elsewhere; ``close()`` it when done."""
    return _Listen(engine) if engine.dialect.name == "postgresql" else _Poll()


def _sleep(seconds: float, stop: threading.Event | None) -> bool:
    """Sleep, waking early when ``stop`` is set; True if it is."""
    if stop is None:
        time.sleep(max(seconds, 0.0))
        return False
    return stop.wait(max(seconds, 0.0))


def _backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: about base, 2*base, 4*base ... up to cap."""
    delay: float = min(cap, base * 2 ** min(attempt - 1, 30))
    return delay * random.uniform(0.5, 1.0)


# -- durable consumers -----------------------------------------------------------


def _now(connection: Connection) -> sa.ColumnElement[datetime]:
    """The time leases are measured in: the server's clock on PostgreSQL.

    Several machines share a PostgreSQL consumer's lease, so they all read
    one clock. SQLite is on this machine: its clock is the local one, kept
    (like CURRENT_TIMESTAMP) as UTC without an offset.
    """
    if connection.dialect.name == "postgresql":
        return sa.func.clock_timestamp()
    return sa.literal(datetime.now(UTC).replace(tzinfo=None), sa.DateTime())


def _later(connection: Connection, seconds: float) -> sa.ColumnElement[datetime]:
    if connection.dialect.name == "postgresql":
        return sa.func.clock_timestamp() + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    later = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=seconds)
    return sa.literal(later, sa.DateTime())


def _owner_id() -> str:
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > _NAME_MAX:
        raise ConfigurationError(
            f"a consumer name must be a non-empty string of at most {_NAME_MAX} characters, "
            f"not {name!r}"
        )
    return name


class Consumer:
    """A durable reader of the change feed: its cursor lives in ``consumers``.

    ``process(handler)`` hands the handler every event available now, one
    at a time, in sequence order, from where this consumer left off;
    ``run(handler, stop)`` keeps doing so live until ``stop`` is set. The
    cursor advances only past events whose handler returned, and is saved
    after each batch, so delivery is at least once: after a crash the
    events handled since the last save come again (handlers should be
    idempotent, for instance keyed by ``event.seq``).

    A handler that raises is called again with the same event after a
    backoff (``retry_delay`` doubling up to ``max_retry_delay``), forever
    unless ``max_attempts`` is given (then ``HandlerFailed``); the consumer
    never moves past it. ``events`` restricts the types handed out; the
    cursor still moves past the others.

    Consumers of different names are independent. Processes running the
    same name share it through a lease (``lease_seconds``): only the holder
    reads, and it renews the lease whenever less than half of it is left,
    before each handler call, so a handler call must return within half
    the lease. A crashed holder's lease expires and another takes over.
    ``start`` (``"earliest"`` or ``"latest"``) is where a new consumer
    begins. Close the consumer (or use it as a context manager) to save its
    cursor and release the lease.
    """

    def __init__(
        self,
        store: MetaStore,
        name: str,
        events: Iterable[EventType | str] | None = None,
        *,
        lease_seconds: float = 60.0,
        poll_interval: float = 1.0,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        max_attempts: int | None = None,
        start: str = "earliest",
    ) -> None:
        if start not in ("earliest", "latest"):
            raise ConfigurationError(f"start must be 'earliest' or 'latest', not {start!r}")
        if lease_seconds <= 0 or poll_interval <= 0 or retry_delay <= 0:
            raise ConfigurationError("lease_seconds, poll_interval and retry_delay must be > 0")
        self.store = store
        self.name = _check_name(name)
        self.events = parse_types(events)
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max(max_retry_delay, retry_delay)
        self.max_attempts = max_attempts
        self.start = start
        #: This process's lease owner id (host:pid:random).
        self.owner = _owner_id()
        self._position = 0  # handled up to here (meaningful while leased)
        self._saved = 0  # what ``consumers.last_seq`` holds
        self._lease_until: float | None = None  # monotonic; None when not leased

    def __repr__(self) -> str:
        return f"<Consumer {self.name!r} at {self._position}>"

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def position(self) -> int:
        """The sequence number handled up to (as of the last lease taken)."""
        return self._position

    @property
    def leased(self) -> bool:
        """Whether this consumer holds its lease (as far as it knows)."""
        return self._lease_until is not None and time.monotonic() < self._lease_until

    # -- the lease -----------------------------------------------------------

    def acquire(self) -> bool:
        """Take or renew the lease; False while another process holds it."""
        if self._lease_until is not None:
            try:
                self._keep_lease()
                return True
            except LeaseLost:
                pass
        return self._take()

    def _take(self) -> bool:
        engine = self.store.engine
        with _writing(engine, f"taking the lease of consumer {self.name!r}") as connection:
            start = (head(connection) or 0) if self.start == "latest" else 0
            register = db.upsert(connection, consumers).values(name=self.name, last_seq=start)
            connection.execute(register.on_conflict_do_nothing(index_elements=[consumers.c.name]))
            began = time.monotonic()
            now = _now(connection)
            taken = connection.execute(
                sa.update(consumers)
                .where(
                    consumers.c.name == self.name,
                    sa.or_(
                        consumers.c.lease_owner.is_(None),
                        consumers.c.lease_owner == self.owner,
                        consumers.c.lease_expires_at.is_(None),
                        consumers.c.lease_expires_at < now,
                    ),
                )
                .values(
                    lease_owner=self.owner,
                    lease_expires_at=_later(connection, self.lease_seconds),
                    updated_at=now,
                )
                .returning(consumers.c.last_seq)
            ).scalar()
        if taken is None:
            return False
        self._position = self._saved = int(taken)
        self._lease_until = began + self.lease_seconds
        log.info("consumer %s: took the lease (%s) at %s", self.name, self.owner, taken)
        return True

    def _keep_lease(self) -> None:
        """Renew the lease when less than half of it is left."""
        if self._lease_until is None:
            raise LeaseLost(f"consumer {self.name!r} does not hold its lease", consumer=self.name)
        if self._lease_until - time.monotonic() < self.lease_seconds / 2:
            self._save(renew=True)

    def _save(self, *, renew: bool = False, wait: bool = True) -> None:
        """Write the cursor (and extend the lease); raises ``LeaseLost`` if it was taken.

        With ``wait=False`` a save that would wait for SQLite's write lock is
        put off (the cursor stays in memory until the next save).
        """
        if self._lease_until is None or (not renew and self._position == self._saved):
            return
        what = f"saving the cursor of consumer {self.name!r}"
        try:
            with (_writing if wait else _writing_if_free)(self.store.engine, what) as connection:
                began = time.monotonic()
                saved = self._write_cursor(connection)
        except _Busy:
            log.debug("consumer %s: the database is busy; the cursor is saved later", self.name)
            return
        if not saved:
            self._lease_until = None
            raise LeaseLost(
                f"consumer {self.name!r} lost its lease to another process; "
                f"events after {self._saved} will be handled again",
                consumer=self.name,
                seq=self._position,
            )
        self._saved = self._position
        self._lease_until = began + self.lease_seconds

    def _write_cursor(self, connection: Connection) -> int:
        """The cursor and a fresh lease, if this consumer still holds it; rows updated."""
        return int(
            connection.execute(
                sa.update(consumers)
                .where(consumers.c.name == self.name, consumers.c.lease_owner == self.owner)
                .values(
                    last_seq=self._position,
                    lease_expires_at=_later(connection, self.lease_seconds),
                    updated_at=_now(connection),
                )
            ).rowcount
        )

    def close(self) -> None:
        """Save the cursor and release the lease. Closing twice is harmless."""
        if self._lease_until is None:
            return
        engine = self.store.engine
        with _writing(engine, f"releasing consumer {self.name!r}") as connection:
            connection.execute(
                sa.update(consumers)
                .where(consumers.c.name == self.name, consumers.c.lease_owner == self.owner)
                .values(
                    last_seq=self._position,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=_now(connection),
                )
            )
        self._saved = self._position
        self._lease_until = None

    # -- handing out events -------------------------------------------------

    def process(
        self, handler: Handler, limit: int = 1000, *, stop: threading.Event | None = None
    ) -> int:
        """Hand the handler what is available now (at most ``limit`` events).

        Returns how many events the handler handled: 0 when there is nothing
        new or another process holds the lease. Setting ``stop`` ends a
        retry wait early (the failing event stays unhandled).
        """
        return self._process(handler, limit, stop)[0]

    def _process(
        self, handler: Handler, limit: int, stop: threading.Event | None
    ) -> tuple[int, bool]:
        """(events handled, whether more are waiting)."""
        if limit < 1:
            raise ConfigurationError(f"limit must be at least 1, not {limit}")
        if not self.acquire():
            return 0, False
        with _reading(self.store.engine, "reading the change feed") as connection:
            batch, reach = read_batch(connection, self._position, self.events, limit)
        handled = 0
        try:
            for event in batch:
                if not self._deliver(handler, event, stop):
                    return handled, False
                self._position = event.seq
                handled += 1
            self._position = max(self._position, reach)
        finally:
            self._save(wait=False)
        return handled, len(batch) == limit

    def _deliver(self, handler: Handler, event: Event, stop: threading.Event | None) -> bool:
        """Call the handler until it returns; False if ``stop`` ended the retries."""
        attempt = 0
        while True:
            self._keep_lease()
            try:
                handler(event)
            except Exception as err:
                attempt += 1
                if self.max_attempts is not None and attempt >= self.max_attempts:
                    log.error(
                        "consumer %s: handler failed on event %s, attempt %s of %s: %s",
                        self.name,
                        event.seq,
                        attempt,
                        self.max_attempts,
                        err,
                        exc_info=True,
                    )
                    raise HandlerFailed(
                        f"consumer {self.name!r}: the handler failed {attempt} times "
                        f"on event {event.seq}: {err}",
                        consumer=self.name,
                        seq=event.seq,
                        attempts=attempt,
                    ) from err
                delay = _backoff(attempt, self.retry_delay, self.max_retry_delay)
                log.warning(
                    "consumer %s: handler failed on event %s (attempt %s): %s; retrying in %.1fs",
                    self.name,
                    event.seq,
                    attempt,
                    err,
                    delay,
                    exc_info=attempt == 1,  # the traceback once, not every retry
                )
                self._save()  # what was handled stays handled if we crash while waiting
                if self._pause(delay, stop):
                    return False
            else:
                if attempt:
                    log.info(
                        "consumer %s: event %s handled after %s failures",
                        self.name,
                        event.seq,
                        attempt,
                    )
                return True

    def _pause(self, seconds: float, stop: threading.Event | None) -> bool:
        """Wait between retries, keeping the lease; True if ``stop`` was set."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if _sleep(min(remaining, self.lease_seconds / 4), stop):
                return True
            self._keep_lease()
        return stop is not None and stop.is_set()

    def run(
        self, handler: Handler, stop: threading.Event | None = None, *, limit: int = 1000
    ) -> int:
        """Hand out events live until ``stop`` is set; returns how many were handled.

        Waits for ``NOTIFY`` on PostgreSQL (``poll_interval`` bounds each
        wait) and polls every ``poll_interval`` seconds on SQLite. While
        another process holds the lease it waits, and takes over when that
        lease is released or expires. A database failure is logged and
        retried with backoff.
        """
        total = 0
        failures = 0
        wakeup = wakeup_for(self.store.engine)
        try:
            while not (stop is not None and stop.is_set()):
                try:
                    handled, more = self._process(handler, limit, stop)
                    failures = 0
                except LeaseLost as err:
                    log.warning("%s", err)
                    handled, more = 0, False
                except DatabaseError as err:
                    failures += 1
                    delay = _backoff(failures, self.retry_delay, self.max_retry_delay)
                    log.warning("consumer %s: %s; retrying in %.1fs", self.name, err, delay)
                    _sleep(delay, stop)
                    continue
                total += handled
                if more:
                    continue
                if self._lease_until is None:  # someone else holds it: no hurry
                    _sleep(self.poll_interval, stop)
                else:
                    wakeup.wait(self.poll_interval, stop)
        finally:
            wakeup.close()
        return total


# -- reading without a consumer, registry, retention -----------------------------


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
            store, consumer, events, poll_interval=poll_interval, max_attempts=1
        ) as durable:
            if follow:
                return durable.run(handler, stop, limit=limit)
            if not durable.acquire():
                raise ConsumerError(
                    f"consumer {consumer!r} is leased by another process", consumer=consumer
                )
            total = 0
            while True:
                handled, more = durable._process(handler, limit, stop)
                total += handled
                if not more:
                    return total
    types = parse_types(events)
    position, total = after, 0
    wakeup = wakeup_for(store.engine) if follow else None
    try:
        while not (stop is not None and stop.is_set()):
            with _reading(store.engine, "reading the change feed") as connection:
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
    with _reading(store.engine, "listing consumers") as connection:
        return [ConsumerInfo.from_row(row) for row in connection.execute(query).mappings()]


def remove_consumer(store: MetaStore, name: str) -> bool:
    """Forget a consumer (its cursor and lease); False if there was none.

    A removed consumer no longer holds back ``prune``; if it runs again it
    starts afresh.
    """
    with _writing(store.engine, f"removing consumer {name!r}") as connection:
        removed = connection.execute(sa.delete(consumers).where(consumers.c.name == name))
    return bool(removed.rowcount)


def prune(
    store: MetaStore,
    *,
    before: int | None = None,
    older_than: timedelta | None = None,
    force: bool = False,
    progress: bool | None = None,
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
    with _reading(engine, "planning the prune") as connection:
        first = connection.execute(sa.select(sa.func.min(outbox.c.seq))).scalar()
        last = head(connection)
        slowest = connection.execute(sa.select(sa.func.min(consumers.c.last_seq))).scalar()
        cutoff = None
        if older_than is not None:
            now = connection.execute(sa.select(_now(connection))).scalar_one()
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
        "pruning the change feed", total=upper - first + 1, unit="seq", bar=progress
    ) as bar:
        for low in range(first - 1, upper, _PRUNE_CHUNK):
            high = min(low + _PRUNE_CHUNK, upper)
            statement = sa.delete(outbox).where(outbox.c.seq > low, outbox.c.seq <= high)
            if cutoff is not None:
                statement = statement.where(outbox.c.created_at < cutoff)
            with _writing(engine, "pruning the change feed") as connection:
                deleted += connection.execute(statement).rowcount
            bar.update(high - low)
    log.info("pruned %s events up to seq %s", deleted, upper)
    return deleted
