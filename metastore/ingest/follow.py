"""Following an archive's change feed: each change queued as a job, its cursor kept in the database.

A :class:`Follower` reads its archive's feed (:mod:`metastore.sources.feeds`)
from the cursor kept in ``followers`` (one row per source), and for each page:

1. studies the feed says were deleted are looked up directly (QIDO-RS on
   their UID) and, when gone, removed from the source's series lists with
   their event (``STUDY_DELETED`` or ``SERIES_REMOVED``, as ``sync --prune``).
   A feed that forgets deletions (Orthanc) gives its study count instead:
   at most every ``check`` seconds the follower asks it, and when it fell
   (or is below what the index holds, or ``sweep`` seconds have passed) it
   compares the archive's list of study ids with the index and looks up
   the missing ones directly;
2. studies the feed says changed are queued on the ingest job queue (the
   same queue and the same one-row-per-study as ``metastore sync``, so a
   sync racing the follower makes one job per study);
3. the cursor is saved past the page;
4. with ``pull``, the queued studies are pulled here and now (otherwise
   ``metastore worker`` processes pull them).

Killed at any point, a follower resumes from its saved cursor: what it did
after the last save is done again, which changes nothing (queueing is
idempotent, a study pulled twice writes no second event, a study removed
is not removed twice). One process at a time follows a source: the
``followers`` row carries a lease, as consumers do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from threading import Event as StopFlag
from typing import Any

import sqlalchemy as sa

from metastore import db
from metastore.errors import ConfigurationError, LeaseLost, MetastoreError
from metastore.ingest.queue import JobQueue
from metastore.ingest.sync import confirm_gone, prune_studies
from metastore.ingest.worker import Worker
from metastore.schema import followers, series, studies
from metastore.sources import Source, SourceConfig, open_source
from metastore.sources.feeds import DELETED, ChangeFeed
from metastore.store import MetaStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FollowStep:
    """One page of the feed handled."""

    changes: int = 0
    queued: int = 0
    removed: int = 0
    pulled: int = 0
    position: str | None = None

    def __str__(self) -> str:
        return (
            f"{self.changes} changes: {self.queued} studies queued, {self.pulled} pulled, "
            f"{self.removed} removed; cursor {self.position}"
        )


@dataclass(kw_only=True)
class FollowSummary:
    """What a follower did until it stopped."""

    pages: int = 0
    changes: int = 0
    queued: int = 0
    removed: int = 0
    pulled: int = 0

    def add(self, step: FollowStep) -> None:
        self.pages += 1
        self.changes += step.changes
        self.queued += step.queued
        self.removed += step.removed
        self.pulled += step.pulled

    def __str__(self) -> str:
        return (
            f"{self.changes} changes in {self.pages} pages: {self.queued} studies queued, "
            f"{self.pulled} pulled, {self.removed} removed"
        )


class Follower:
    """Follows ``feed`` into the index as the source ``config`` (its DICOMweb side)."""

    def __init__(
        self,
        store: MetaStore,
        feed: ChangeFeed,
        config: SourceConfig,
        *,
        lease: float = 60.0,
        start: str = "earliest",
        pull: bool = True,
        batch: int = 200,
        check: float = 1.0,
        sweep: float = 300.0,
    ) -> None:
        if start not in ("earliest", "latest"):
            raise ConfigurationError(f"start must be 'earliest' or 'latest', not {start!r}")
        if batch < 1 or lease <= 0:
            raise ConfigurationError("batch must be at least 1 and lease more than 0")
        self.store, self.feed, self.config = store, feed, config
        self.lease, self.start, self.pull, self.batch = lease, start, pull, batch
        self.owner = db.owner_id()
        self.position: str | None = None
        self._source_id = store.register_source(
            config.name, config.kind, root_url=config.root, settings=dict(config.settings)
        ).id
        self._renewed: float | None = None
        self._archive: Source | None = None
        self.check, self.sweep = check, sweep
        self._checked = self._swept = float("-inf")
        self._archive_count: int | None = None

    # -- the lease and the cursor --------------------------------------------

    def acquire(self) -> bool:
        """Take (or keep) the source's follower lease; False while another process holds it."""
        with db.writing(self.store.engine, f"taking the follower of {self.config.name}") as conn:
            exists = conn.execute(
                sa.select(followers.c.source_id).where(followers.c.source_id == self._source_id)
            ).first()
            if exists is None:
                begin = self.feed.latest() if self.start == "latest" else None
                conn.execute(
                    db.upsert(conn, followers)
                    .values(source_id=self._source_id, kind=self.feed.kind, position=begin)
                    .on_conflict_do_nothing(index_elements=[followers.c.source_id])
                )
            now = db.now(conn)
            row = conn.execute(
                sa.update(followers)
                .where(
                    followers.c.source_id == self._source_id,
                    sa.or_(
                        followers.c.lease_owner.is_(None),
                        followers.c.lease_owner == self.owner,
                        followers.c.lease_expires_at < now,
                    ),
                )
                .values(
                    lease_owner=self.owner,
                    lease_expires_at=db.later(conn, self.lease),
                    updated_at=now,
                )
                .returning(followers.c.position)
            ).first()
        if row is None:
            return False
        self.position = row.position
        self._renewed = time.monotonic()
        return True

    def _save(self, position: str | None) -> None:
        """Save the cursor and renew the lease; ``LeaseLost`` when another process took it."""
        with db.writing(self.store.engine, "saving a follower's cursor") as conn:
            saved = conn.execute(
                sa.update(followers)
                .where(
                    followers.c.source_id == self._source_id, followers.c.lease_owner == self.owner
                )
                .values(
                    position=position,
                    lease_expires_at=db.later(conn, self.lease),
                    updated_at=db.now(conn),
                )
            ).rowcount
        if saved != 1:
            self._renewed = None
            raise LeaseLost(f"the follower of {self.config.name} was taken over")
        self.position = position
        self._renewed = time.monotonic()

    def release(self) -> None:
        """Give the lease up (the cursor stays)."""
        if self._renewed is None:
            return
        with db.writing(self.store.engine, "releasing a follower") as conn:
            conn.execute(
                sa.update(followers)
                .where(
                    followers.c.source_id == self._source_id, followers.c.lease_owner == self.owner
                )
                .values(lease_owner=None, lease_expires_at=None)
            )
        self._renewed = None

    # -- one page -------------------------------------------------------------

    @property
    def archive(self) -> Source:
        """The archive's DICOMweb side (for study rows and direct looks)."""
        if self._archive is None:
            self._archive = open_source(self.config)
        return self._archive

    def step(self, stop: StopFlag | None = None) -> tuple[FollowStep, bool]:
        """Handle the next page of the feed; the step, and whether the feed had no more."""
        page = self.feed.read(self.position, self.batch)
        deleted = {c.study_uid or c.resource for c in page.changes if c.action == DELETED}
        try:
            removed = self._removals(deleted | set(self._missing()))
        except MetastoreError:
            self._archive_count = None  # the next check compares the lists again
            raise
        units: dict[str, dict[str, Any]] = {}
        for change in page.changes:
            if change.action != DELETED and change.study_uid and change.study_uid not in units:
                look = {"StudyInstanceUID": change.study_uid, "limit": 1}
                found = list(self.archive.search_studies(look))
                if found:
                    units[change.study_uid] = {"study": found[0]}
        queue = JobQueue(self.store)
        queued = queue.enqueue(self.config.name, units.items()) if units else 0
        if page.position != self.position or self._lease_due():
            self._save(page.position)
        pulled = 0
        if self.pull and units:
            secrets = {self.config.name: dict(self.config.headers)}
            worker = Worker(self.store, source=self.config.name, secrets=secrets, poll=0.1)
            pulled = worker.run(once=True, stop=stop).studies
        step = FollowStep(
            changes=len(page.changes),
            queued=queued,
            removed=removed,
            pulled=pulled,
            position=page.position,
        )
        return step, page.done

    def _lease_due(self) -> bool:
        return self._renewed is None or time.monotonic() - self._renewed > self.lease / 3

    def _removals(self, studies_or_ids: set[str]) -> int:
        """Remove the studies (by UID or archive id) a direct look confirms gone."""
        if not studies_or_ids:
            return 0
        uids = {uid for uid, resource in self._indexed_ids() if {uid, resource} & studies_or_ids}
        gone = confirm_gone(self.archive, sorted(uids))
        return len(prune_studies(self.store, self.config.name, gone))

    def _missing(self) -> list[str]:
        """The archive ids of indexed studies the archive no longer lists (when a check is due)."""
        now = time.monotonic()
        if now - self._checked < self.check:
            return []
        self._checked = now
        total = self.feed.study_count()
        if total is None:
            return []
        before, self._archive_count = self._archive_count, total
        due = before is None or total < before or now - self._swept >= self.sweep
        if not due and self._held_count() <= total:
            return []
        self._swept = now
        present = self.feed.study_ids()
        return [r for _uid, r in self._indexed_ids() if r is not None and r not in present]

    def _held(self) -> Any:
        return sa.exists().where(
            series.c.study_id == studies.c.id, series.c.source_id == self._source_id
        )

    def _held_count(self) -> int:
        query = sa.select(sa.func.count()).select_from(studies).where(self._held())
        with db.reading(self.store.engine, "counting a source's studies") as conn:
            return int(conn.execute(query).scalar_one())

    def _indexed_ids(self) -> list[tuple[str, str | None]]:
        """(study UID, the archive's id of it) of every study this source holds."""
        query = sa.select(studies.c.study_uid, studies.c.patient_id).where(self._held())
        with db.reading(self.store.engine, "matching deleted studies") as conn:
            return [
                (uid, self.feed.resource_id(patient, uid)) for uid, patient in conn.execute(query)
            ]

    def close(self) -> None:
        self.release()
        if self._archive is not None:
            self._archive.close()
            self._archive = None


def follow(
    store: MetaStore,
    feed: ChangeFeed,
    config: SourceConfig,
    *,
    stop: StopFlag,
    poll: float = 0.5,
    batch: int = 200,
    start: str = "earliest",
    pull: bool = True,
    lease: float = 60.0,
    sweep: float = 300.0,
    report: Callable[[FollowStep], None] | None = None,
) -> FollowSummary:
    """Follow the feed until ``stop`` is set (see the module docstring).

    Waits ``poll`` seconds when the feed has nothing new, and while another
    process holds the follower's lease. A failing step (the archive or the
    database away) is logged and tried again after a pause; the cursor has
    not moved past it.
    """
    follower = Follower(
        store, feed, config, lease=lease, start=start, pull=pull, batch=batch, sweep=sweep
    )
    summary = FollowSummary()
    failures = 0
    try:
        while not stop.is_set():
            if not follower.acquire():
                stop.wait(poll)
                continue
            try:
                step, done = follower.step(stop)
            except MetastoreError as err:  # logged and tried again: the cursor has not moved
                failures += 1
                log.error("follower of %s: %s; trying again", config.name, err)
                stop.wait(min(poll * 2**failures, 30.0))
                continue
            failures = 0
            summary.add(step)
            if report is not None:
                report(step)
            if done and not step.changes:
                stop.wait(poll)
    finally:
        follower.close()
    return summary
