"""Durable consumers of the change feed: a cursor in ``consumers``, a lease, at-least-once delivery."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore import db
from metastore.errors import ConfigurationError, DatabaseError, HandlerFailed, LeaseLost
from metastore.events.wakeup import sleep, wakeup_for
from metastore.names import check_name
from metastore.outbox import Event, EventType, Handler, head, parse_types, read_batch
from metastore.retry import backoff
from metastore.schema import consumers
from metastore.store import MetaStore

log = logging.getLogger(__name__)


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
        self.name = check_name(name, "consumer", ConfigurationError)
        self.events = parse_types(events)
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max(max_retry_delay, retry_delay)
        self.max_attempts = max_attempts
        self.start = start
        #: This process's lease owner id (host:pid:random).
        self.owner = db.owner_id()
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
        with db.writing(engine, f"taking the lease of consumer {self.name!r}") as connection:
            start = (head(connection) or 0) if self.start == "latest" else 0
            register = db.upsert(connection, consumers).values(name=self.name, last_seq=start)
            connection.execute(register.on_conflict_do_nothing(index_elements=[consumers.c.name]))
            began = time.monotonic()
            now = db.now(connection)
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
                    lease_expires_at=db.later(connection, self.lease_seconds),
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
            with (db.writing if wait else db.writing_if_free)(
                self.store.engine, what
            ) as connection:
                began = time.monotonic()
                saved = self._write_cursor(connection)
        except db.WriteLockBusy:
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
                    lease_expires_at=db.later(connection, self.lease_seconds),
                    updated_at=db.now(connection),
                )
            ).rowcount
        )

    def close(self) -> None:
        """Save the cursor and release the lease. Closing twice is harmless."""
        if self._lease_until is None:
            return
        engine = self.store.engine
        with db.writing(engine, f"releasing consumer {self.name!r}") as connection:
            connection.execute(
                sa.update(consumers)
                .where(consumers.c.name == self.name, consumers.c.lease_owner == self.owner)
                .values(
                    last_seq=self._position,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=db.now(connection),
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
        return self.process_batch(handler, limit, stop)[0]

    def process_batch(
        self, handler: Handler, limit: int, stop: threading.Event | None
    ) -> tuple[int, bool]:
        """Like ``process``: (events handled, whether more are waiting)."""
        if limit < 1:
            raise ConfigurationError(f"limit must be at least 1, not {limit}")
        if not self.acquire():
            return 0, False
        with db.reading(self.store.engine, "reading the change feed") as connection:
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
                delay = backoff(attempt, self.retry_delay, self.max_retry_delay)
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
            if sleep(min(remaining, self.lease_seconds / 4), stop):
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
                    handled, more = self.process_batch(handler, limit, stop)
                    failures = 0
                except LeaseLost as err:
                    log.warning("%s", err)
                    handled, more = 0, False
                except DatabaseError as err:
                    failures += 1
                    delay = backoff(failures, self.retry_delay, self.max_retry_delay)
                    log.warning("consumer %s: %s; retrying in %.1fs", self.name, err, delay)
                    sleep(delay, stop)
                    continue
                total += handled
                if more:
                    continue
                if self._lease_until is None:  # someone else holds it: no hurry
                    sleep(self.poll_interval, stop)
                else:
                    wakeup.wait(self.poll_interval, stop)
        finally:
            wakeup.close()
        return total
