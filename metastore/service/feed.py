"""The change feed over HTTP: ``/changefeed`` pages and its long-poll.

Pages come from ``metastore.outbox.read_batch``, the read path every
consumer uses, so the HTTP feed has the store's guarantee: commit order,
nothing skipped (see ``metastore.outbox``). A page names ``next``, the
position to ask from next time; with a type filter it can pass events the
client did not ask for, never one it did.

A long-poll (``wait=SECONDS``) that finds nothing new waits for the next
commit: on PostgreSQL through one ``LISTEN`` connection for the whole
service (``metastore.events.wakeup_for``), elsewhere by polling, in one
background thread that wakes every waiting request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Collection
from typing import Any

from metastore.events.wakeup import wakeup_for
from metastore.outbox import EventType, head, read_batch
from metastore.store import MetaStore

log = logging.getLogger(__name__)

_LISTEN_TIMEOUT = 5.0


def read_page(
    store: MetaStore, after: int, limit: int, types: Collection[EventType] | None
) -> dict[str, Any]:
    """One page of the feed after ``after``: ``{"events": [...], "next": seq}``."""
    with store.reading("reading the change feed") as connection:
        batch, reach = read_batch(connection, after, types, limit)
    return {"events": [event.to_dict() for event in batch], "next": reach}


def latest(store: MetaStore) -> dict[str, int]:
    """The highest sequence number in the feed (0 when empty)."""
    with store.reading("reading the change feed head") as connection:
        return {"seq": head(connection) or 0}


class FeedWaker:
    """Wakes long-polling requests when the outbox may have grown.

    One thread waits on the store's wakeup (LISTEN/NOTIFY on PostgreSQL,
    a poll elsewhere) and bumps a generation counter on the event loop. A
    request notes the generation before it reads, so a commit between its
    read and its wait is never slept through.
    """

    def __init__(self, store: MetaStore, poll_interval: float) -> None:
        self._store = store
        self._interval = poll_interval
        self._generation = 0
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        """Bumped after each wakeup."""
        return self._generation

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._loop = asyncio.get_running_loop()
            self._changed = asyncio.Event()
            self._thread = threading.Thread(
                target=self._run, name="metastore-feed-waker", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        engine = self._store.engine
        wakeup = wakeup_for(engine)
        # LISTEN returns early on a notification: its timeout is only a safety net.
        interval = self._interval if engine.dialect.name == "sqlite" else _LISTEN_TIMEOUT
        try:
            while not self._stop.is_set():
                wakeup.wait(interval, self._stop)
                loop = self._loop
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(self._bump)
        except Exception:
            log.exception("the change-feed waker stopped; long-polls fall back to their timeout")
        finally:
            wakeup.close()

    def _bump(self) -> None:
        self._generation += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait(self, since: int, timeout: float) -> None:
        """Return once the generation has passed ``since``, or after ``timeout`` seconds."""
        self._start()
        if self._generation != since or self._changed is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def close(self) -> None:
        """Stop the thread (waiting at most one interval)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=_LISTEN_TIMEOUT + 1.0)
