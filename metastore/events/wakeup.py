"""Waking a change-feed reader when events commit: ``LISTEN`` on PostgreSQL, polling elsewhere."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol, cast

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from metastore.outbox import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

# How often a wait looks at its stop event, in seconds.
_STOP_CHECK = 0.2


class Wakeup(Protocol):
    def wait(self, timeout: float, stop: threading.Event | None) -> None: ...

    def close(self) -> None: ...


class _Poll:
    """SQLite (and any other database): wait the poll interval, then read again."""

    def wait(self, timeout: float, stop: threading.Event | None) -> None:
        sleep(timeout, stop)

    def close(self) -> None:
        pass


class _Listen:
    """PostgreSQL: a dedicated connection that ``LISTEN``s on the outbox channel.

    It listens before the first read, so a commit between a read and the
    next wait is never missed: its notification waits in the connection.
    A lost connection is reopened, and the wait then returns at once, so
    the caller reads whatever committed while nobody was listening.
    ``timeout`` bounds a wait all the same, as a poll. A server that
    refuses ``LISTEN`` (a hot standby) is polled, said once, and asked
    again at each wait.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: psycopg.Connection[Any] | None = None
        self._polling = False  # said so; said again only once listening works again
        self._connect()

    def _cannot_listen(self, err: Exception) -> None:
        if not self._polling:
            log.warning("cannot listen for outbox notifications, polling: %s", err)
        else:
            log.debug("still cannot listen for outbox notifications: %s", err)
        self._polling = True

    def _connect(self) -> psycopg.Connection[Any] | None:
        if self._connection is None:
            try:
                pooled = self._engine.raw_connection()
            except (sa.exc.SQLAlchemyError, psycopg.Error) as err:  # the pool raises the driver's
                self._cannot_listen(err)
                return None
            connection = cast("psycopg.Connection[Any]", pooled.driver_connection)
            pooled.detach()  # ours for good: a LISTENing connection must not go back to the pool
            try:
                connection.autocommit = True
                connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            except psycopg.Error as err:
                self._cannot_listen(err)
                connection.close()
                return None
            if self._polling:
                log.info("listening for outbox notifications again")
                self._polling = False
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
                sleep(min(remaining, 1.0), stop)
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
    return _Listen(engine) if engine.dialect.name == "postgresql" else _Poll()


def sleep(seconds: float, stop: threading.Event | None) -> bool:
    """Sleep, waking early when ``stop`` is set; True if it is."""
    if stop is None:
        time.sleep(max(seconds, 0.0))
        return False
    return stop.wait(max(seconds, 0.0))
