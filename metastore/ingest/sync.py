"""Staying in sync with an archive by counts: one crawl, a comparison in SQL, pull what differs.

:func:`sync_source` is ``metastore sync dicomweb``: it crawls the archive's
studies once (paged QIDO-RS, with their series and instance counts),
compares the crawl with the index in SQL (:mod:`metastore.ingest.compare`),
queues only the new studies and those whose counts differ, and drains the
queue; a queued study's worker pulls only the series whose counts differ
(``changed_series`` in the job). Unchanged studies cost nothing past the
crawl and write nothing.

With ``prune``, a study the index holds from this source but the crawl did
not list is looked up directly (a QIDO-RS on its UID): only when that says
it is gone is it removed from the source's series lists and announced
(``STUDY_DELETED`` when no other source holds it, else ``SERIES_REMOVED``).
A short page, a failed crawl or a study outside the crawl's query never
removes anything. Workers of a pruning sync also remove the series a
changed study no longer has.

:func:`sync_every` repeats a sync every so many seconds until stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from threading import Event as StopFlag
from typing import Any

from metastore.errors import ConfigurationError, MetastoreError
from metastore.ingest.compare import compare_listing, study_counts
from metastore.ingest.prefetch import DEFAULT_DEPTH
from metastore.ingest.queue import JobQueue
from metastore.ingest.runner import drain
from metastore.ingest.summary import IngestSummary
from metastore.outbox import Event
from metastore.progress import Progress, Reporting
from metastore.sources import Source, SourceConfig, open_source
from metastore.store import MetaStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SyncReport:
    """What one sync found and did."""

    source: str
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    #: Held by the index, not listed by the crawl (gone, or outside its query).
    unlisted: int = 0
    #: Confirmed gone by a direct look, and removed (``prune`` only).
    gone: int = 0
    queued: int = 0
    #: HTTP requests of the crawl and the direct looks (the workers' are in ``ingest``).
    requests: int = 0
    seconds: float = 0.0
    events: tuple[Event, ...] = ()
    ingest: IngestSummary | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.ingest is None or self.ingest.ok

    def __str__(self) -> str:
        line = (
            f"{self.source}: new {self.new}, changed {self.changed}, "
            f"unchanged {self.unchanged}, gone {self.gone}"
        )
        if self.unlisted > self.gone:
            line += f" ({self.unlisted - self.gone} unlisted kept)"
        line += f"; {self.requests} crawl requests, {self.seconds:.2f}s"
        return line if self.ingest is None else f"{line}\n{self.ingest}"


def confirm_gone(source: Source, study_uids: Iterable[str]) -> list[str]:
    """The studies a direct QIDO-RS on their UID no longer finds (one request each)."""
    gone = []
    for uid in study_uids:
        if not any(True for _ in source.search_studies({"StudyInstanceUID": uid, "limit": 1})):
            gone.append(uid)
        else:
            log.debug("%s: study %s is unlisted but still there", source.config.name, uid)
    return gone


def prune_studies(store: MetaStore, source: str, study_uids: Iterable[str]) -> list[Event]:
    """Remove confirmed-gone studies from the source's series lists; their events."""
    events = []
    for uid in study_uids:
        event = store.remove_series(uid, source=source)
        if event is not None:
            log.info("%s: study %s is gone from the archive: %s", source, uid, event.type)
            events.append(event)
    return events


def sync_source(
    url: str | None,
    config: SourceConfig,
    *,
    query: Mapping[str, Any] | None = None,
    prune: bool = False,
    workers: int = 1,
    lease: float = 60.0,
    max_attempts: int = 5,
    prefetch: int = DEFAULT_DEPTH,
    progress: Reporting = None,
    stop: StopFlag | None = None,
) -> SyncReport:
    """Bring the index up to date with ``config``'s archive (see the module docstring).

    ``progress`` shows the queued studies as they are pulled; ``stop`` ends
    the pull after the current study (one worker), the rest stays queued.
    """
    if workers < 1:
        raise ConfigurationError("workers must be at least 1")
    started = time.monotonic()
    with MetaStore(url) as store:
        store.register_source(
            config.name, config.kind, root_url=config.root, settings=dict(config.settings)
        )
        opened = open_source(config)
        try:
            rows = {}
            for row in opened.search_studies(dict(query or {})):
                uid = row.get("StudyInstanceUID")
                if isinstance(uid, str) and uid:
                    rows[uid] = row
            found = compare_listing(
                store, config.name, {uid: study_counts(row) for uid, row in rows.items()}
            )
            gone = confirm_gone(opened, found.unlisted) if prune else []
            requests = int(getattr(opened, "requests", 0))
        finally:
            opened.close()
        params = {"changed_series": True, "prune": prune}
        units = {uid: {"study": rows[uid], **params} for uid in [*found.new, *found.changed]}
        queued = JobQueue(store).enqueue(config.name, units.items(), max_attempts=max_attempts)
        events = prune_studies(store, config.name, gone)
        url = store.url
    done = None
    if units:
        with Progress(f"sync {config.name}", unit="studies", display=progress) as shown:
            shown.set_total(queued)
            done = drain(
                url,
                workers=workers,
                source=config.name,
                secrets={config.name: config.headers},
                lease=lease,
                poll=0.2,
                prefetch=prefetch,
                progress=shown,
                stop=stop,
            )
    return SyncReport(
        source=config.name,
        new=len(found.new),
        changed=len(found.changed),
        unchanged=found.unchanged,
        unlisted=len(found.unlisted),
        gone=len(events),
        queued=queued,
        requests=requests,
        seconds=time.monotonic() - started,
        events=tuple(events),
        ingest=done,
    )


def sync_every(
    every: float,
    stop: StopFlag,
    report: Callable[[SyncReport], None],
    sync: Callable[[], SyncReport],
) -> int:
    """Run ``sync`` now and then every ``every`` seconds until ``stop`` is set; how many ran.

    A sync that fails (the archive down, the database busy) is logged and
    tried again at the next turn; the loop stops only on ``stop``.
    """
    if every <= 0:
        raise ConfigurationError("--every must be more than 0 seconds")
    runs = 0
    while not stop.is_set():
        began = time.monotonic()
        try:
            report(sync())
        except MetastoreError as err:
            log.error("sync failed, trying again in %.0fs: %s", every, err)
        runs += 1
        stop.wait(max(0.0, every - (time.monotonic() - began)))
    return runs
