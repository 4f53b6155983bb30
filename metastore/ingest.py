"""The ingest job queue and the workers that drain it.

A job (one ``ingest_jobs`` row) names a registered source and a unit of
work in that source's terms: a StudyInstanceUID. Workers are
source-agnostic: a worker claims a job, opens the job's source through the
registry (:func:`metastore.sources.open_source`, with the configuration kept
in the ``sources`` table and the credentials the worker itself was given),
and pulls the study: the series rows (one ``add_series_metadata``), then each
series' instances (one ``add_instances``, so one transaction, per series).
Every write is idempotent, so a job done twice changes nothing the second
time.

Claims take a lease. Before each write a worker checks that it still holds
the job (renewing the lease once a third of it has passed) and stops if it
has lost it; a worker that dies simply lets it run out, and the next claim
takes the job over. On PostgreSQL the claim is ``FOR UPDATE SKIP LOCKED``,
so any number of workers on any number of machines share the queue; on
SQLite each write transaction starts with ``BEGIN IMMEDIATE`` (see
:mod:`metastore.db`), one writer at a time.

Failures that may pass (a source unavailable, a bad answer, the database)
are retried with exponential backoff and jitter (or after the source's
``Retry-After``) until the job's ``max_attempts``; bad metadata and bad
configuration fail the job at once. The error is kept in ``last_error``,
with every credential the worker holds blanked out.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from threading import Event as StopFlag
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore import db
from metastore.errors import (
    ConfigurationError,
    InvalidMetadata,
    LeaseLost,
    MetastoreError,
    SourceRefused,
    SourceUnavailable,
    UnknownSource,
)
from metastore.schema import ingest_jobs, sources
from metastore.sources import Source, SourceConfig, open_source
from metastore.store import MetaStore, SourceInfo

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATES = (QUEUED, RUNNING, DONE, FAILED)
_CHUNK = 1000  # rows per multi-row insert, far below either bind-parameter limit
_ERROR_MAX = 4000
# Errors a retry cannot cure: the job fails at once.
_PERMANENT = (InvalidMetadata, ConfigurationError, UnknownSource, SourceRefused)

#: Reports progress: (quantity, amount), quantities ``studies``, ``series``,
#: ``instances``, ``failures``, ``retries``.
ProgressCallback = Callable[[str, int], None]


@dataclass(frozen=True, kw_only=True)
class Job:
    """One row of the job queue."""

    id: int
    source_id: int
    unit: str
    params: Mapping[str, Any]
    state: str
    attempts: int
    max_attempts: int
    next_try_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Job:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data (without its params, which may be large)."""
        out = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "params"}
        for key in ("next_try_at", "lease_expires_at", "created_at", "updated_at"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _now(connection: Connection) -> Any:
    """The current time as SQL: the server's clock on PostgreSQL (one clock for
    every worker machine), this process's UTC clock on SQLite (one machine)."""
    if connection.dialect.name == "postgresql":
        return sa.func.clock_timestamp()
    return sa.literal(_utcnow(), ingest_jobs.c.next_try_at.type)


def _later(connection: Connection, seconds: float) -> Any:
    """``seconds`` from now, as SQL (see ``_now``)."""
    if connection.dialect.name == "postgresql":
        return sa.func.clock_timestamp() + sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    return sa.literal(_utcnow() + timedelta(seconds=seconds), ingest_jobs.c.next_try_at.type)


class JobQueue:
    """The ``ingest_jobs`` table of a store, as a queue with leases."""

    def __init__(self, store: MetaStore) -> None:
        self.store = store

    def _source_id(self, connection: Connection, name: str) -> int:
        found = connection.execute(
            sa.select(sources.c.id).where(sources.c.name == name)
        ).scalar_one_or_none()
        if found is None:
            raise UnknownSource(f"no source named {name!r} is registered", source=name)
        return int(found)

    def enqueue(
        self,
        source: str,
        units: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        max_attempts: int = 5,
    ) -> int:
        """Queue (unit, params) jobs for a registered source; returns how many were queued.

        A unit already queued, done or failed is queued afresh (a re-run brings
        the index up to date); one that a live worker holds is left alone.
        """
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        total = 0
        with db.translate_errors("queueing ingest jobs"), self.store.engine.begin() as connection:
            source_id = self._source_id(connection, source)
            now = _now(connection)
            rows = [
                {"source_id": source_id, "unit": unit, "params": dict(params)}
                for unit, params in dict(units).items()
            ]
            for start in range(0, len(rows), _CHUNK):
                statement = db.upsert(connection, ingest_jobs).values(
                    state=QUEUED, attempts=0, max_attempts=max_attempts, next_try_at=now
                )
                statement = statement.on_conflict_do_update(
                    index_elements=[ingest_jobs.c.source_id, ingest_jobs.c.unit],
                    set_={
                        "params": statement.excluded.params,
                        "state": QUEUED,
                        "attempts": 0,
                        "max_attempts": max_attempts,
                        "next_try_at": now,
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "last_error": None,
                        "updated_at": sa.func.now(),
                    },
                    where=sa.or_(
                        ingest_jobs.c.state != RUNNING, ingest_jobs.c.lease_expires_at < now
                    ),
                ).returning(ingest_jobs.c.id)
                total += len(connection.execute(statement, rows[start : start + _CHUNK]).all())
        return total

    def claim(self, owner: str, *, lease: float, source: str | None = None) -> Job | None:
        """Take the next due job (or one whose lease ran out) for ``lease`` seconds.

        PostgreSQL: the candidate row is picked ``FOR UPDATE SKIP LOCKED``,
        so concurrent claimers never wait on or take the same row. SQLite
        ignores ``FOR UPDATE``; there the write transaction's ``BEGIN
        IMMEDIATE`` makes claims one at a time.
        """
        with db.translate_errors("claiming an ingest job"), self.store.engine.begin() as connection:
            now = _now(connection)
            due = sa.or_(
                sa.and_(ingest_jobs.c.state == QUEUED, ingest_jobs.c.next_try_at <= now),
                sa.and_(ingest_jobs.c.state == RUNNING, ingest_jobs.c.lease_expires_at < now),
            )
            candidate = sa.select(ingest_jobs.c.id).where(due)
            if source is not None:
                candidate = candidate.where(
                    ingest_jobs.c.source_id == self._source_id(connection, source)
                )
            candidate = (
                candidate.order_by(ingest_jobs.c.next_try_at, ingest_jobs.c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            statement = (
                sa.update(ingest_jobs)
                .where(ingest_jobs.c.id == candidate.scalar_subquery())
                .values(
                    state=RUNNING,
                    lease_owner=owner,
                    lease_expires_at=_later(connection, lease),
                    attempts=ingest_jobs.c.attempts + 1,
                    updated_at=sa.func.now(),
                )
                .returning(*ingest_jobs.c)
            )
            row = connection.execute(statement).mappings().first()
        return None if row is None else Job.from_row(row)

    def _owned(self, connection: Connection, job: Job, owner: str) -> Any:
        return sa.and_(
            ingest_jobs.c.id == job.id,
            ingest_jobs.c.lease_owner == owner,
            ingest_jobs.c.state == RUNNING,
        )

    def renew(self, job: Job, owner: str, *, lease: float) -> None:
        """Extend the lease, or raise ``LeaseLost`` when another worker holds the job."""
        with db.translate_errors("renewing a job lease"), self.store.engine.begin() as connection:
            result = connection.execute(
                sa.update(ingest_jobs)
                .where(self._owned(connection, job, owner))
                .values(lease_expires_at=_later(connection, lease), updated_at=sa.func.now())
            )
        if result.rowcount != 1:
            raise LeaseLost(f"job {job.id} ({job.unit}) is no longer ours", job_id=job.id)

    def holds(self, job: Job, owner: str) -> bool:
        """Whether ``owner`` still holds the job (a read: no write, no fsync)."""
        with db.translate_errors("checking a job lease"), self.store.engine.connect() as connection:
            connection = connection.execution_options(metastore_readonly=True)
            with connection.begin():
                found = connection.execute(
                    sa.select(ingest_jobs.c.id).where(self._owned(connection, job, owner))
                ).first()
        return found is not None

    def complete(self, job: Job, owner: str) -> bool:
        """Mark the job done; False when another worker has taken it meanwhile."""
        return self._finish(job, owner, state=DONE, error=None, delay=0.0)

    def retry_later(self, job: Job, owner: str, error: str, *, delay: float) -> bool:
        """Queue the job again in ``delay`` seconds, keeping the error."""
        return self._finish(job, owner, state=QUEUED, error=error, delay=delay)

    def fail(self, job: Job, owner: str, error: str) -> bool:
        """Mark the job failed for good, keeping the error."""
        return self._finish(job, owner, state=FAILED, error=error, delay=0.0)

    def _finish(self, job: Job, owner: str, *, state: str, error: str | None, delay: float) -> bool:
        with (
            db.translate_errors("finishing an ingest job"),
            self.store.engine.begin() as connection,
        ):
            values: dict[str, Any] = {
                "state": state,
                "lease_expires_at": None,
                "last_error": None if error is None else error[:_ERROR_MAX],
                "updated_at": sa.func.now(),
            }
            if state == QUEUED:
                values["next_try_at"] = _later(connection, delay)
                values["lease_owner"] = None
            result = connection.execute(
                sa.update(ingest_jobs).where(self._owned(connection, job, owner)).values(**values)
            )
        return result.rowcount == 1

    def jobs(
        self, *, state: str | None = None, source: str | None = None, limit: int = 100
    ) -> list[tuple[str, Job]]:
        """(source name, job) pairs, failed and newest first within a state."""
        query = (
            sa.select(ingest_jobs, sources.c.name.label("source"))
            .join(sources, sources.c.id == ingest_jobs.c.source_id)
            .order_by(ingest_jobs.c.updated_at.desc(), ingest_jobs.c.id.desc())
            .limit(limit)
        )
        if state is not None:
            if state not in STATES:
                raise ConfigurationError(f"unknown job state {state!r}; one of {', '.join(STATES)}")
            query = query.where(ingest_jobs.c.state == state)
        if source is not None:
            query = query.where(sources.c.name == source)
        with db.translate_errors("listing ingest jobs"), self.store.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [(row["source"], Job.from_row(row)) for row in rows]

    def counts(self, source: str | None = None) -> dict[str, int]:
        """How many jobs are in each state (every state present, zero or not)."""
        query = sa.select(ingest_jobs.c.state, sa.func.count()).group_by(ingest_jobs.c.state)
        if source is not None:
            query = query.join(sources, sources.c.id == ingest_jobs.c.source_id).where(
                sources.c.name == source
            )
        with db.translate_errors("counting ingest jobs"), self.store.engine.connect() as connection:
            found = {state: int(n) for state, n in connection.execute(query)}
        return {state: found.get(state, 0) for state in STATES}


def owner_id() -> str:
    """A worker name unique across machines and processes: host, pid, random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(kw_only=True)
class WorkerStats:
    """What one worker did."""

    jobs: int = 0
    studies: int = 0
    series: int = 0
    instances: int = 0
    retries: int = 0
    failures: int = 0
    lost: int = 0
    errors: list[str] = field(default_factory=list)


class Worker:
    """Claims jobs from the queue and pulls each job's study into the store.

    ``secrets`` maps a source name to the headers (credentials) to send it:
    they come from the worker's command line or environment, never from the
    database. ``lease`` is the lease in seconds; ``backoff`` the first
    job-level retry delay, doubled per attempt up to ``max_backoff``.
    """

    def __init__(
        self,
        store: MetaStore,
        *,
        owner: str | None = None,
        source: str | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
        lease: float = 60.0,
        poll: float = 1.0,
        backoff: float = 2.0,
        max_backoff: float = 300.0,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.store = store
        self.queue = JobQueue(store)
        self.owner = owner or owner_id()
        self.source = source
        self._secrets = {name: dict(headers) for name, headers in (secrets or {}).items()}
        self.lease = lease
        self.poll = poll
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._report = on_progress or (lambda _name, _n: None)
        self._sources: dict[int, tuple[SourceInfo, Source]] = {}
        self._prefetcher: ThreadPoolExecutor | None = None
        self._renewed = 0.0
        self.stats = WorkerStats()

    def run(
        self, *, once: bool = False, stop: StopFlag | None = None, max_jobs: int | None = None
    ) -> WorkerStats:
        """Work until stopped; with ``once``, until no job is queued or running.

        ``max_jobs`` bounds the jobs taken (for tests and batch runs).
        """
        try:
            while stop is None or not stop.is_set():
                if max_jobs is not None and self.stats.jobs >= max_jobs:
                    break
                job = self.queue.claim(self.owner, lease=self.lease, source=self.source)
                if job is not None:
                    self._renewed = time.monotonic()
                    self.process(job)
                    continue
                if once and not self._pending():
                    break
                if stop is not None:
                    stop.wait(self.poll)
                else:
                    time.sleep(self.poll)
        finally:
            self.close()
        return self.stats

    def _pending(self) -> bool:
        counts = self.queue.counts(self.source)
        return counts[QUEUED] + counts[RUNNING] > 0

    def close(self) -> None:
        """Close the sources this worker opened."""
        if self._prefetcher is not None:
            self._prefetcher.shutdown(wait=True, cancel_futures=True)
            self._prefetcher = None
        for _info, opened in self._sources.values():
            opened.close()
        self._sources.clear()

    def process(self, job: Job) -> None:
        """Pull one job's study; record success, a retry, or a failure on the job."""
        self.stats.jobs += 1
        if job.attempts > job.max_attempts:
            # Claimed again after its lease ran out too often: its workers keep dying.
            self.queue.fail(
                job, self.owner, job.last_error or f"gave up after {job.max_attempts} attempts"
            )
            self._failed(job, "its lease ran out on every attempt")
            return
        try:
            info, opened = self._open(job.source_id)
            self._pull(job, info, opened)
        except LeaseLost as err:
            self.stats.lost += 1
            log.warning("%s: %s", self.owner, err)
            return
        except Exception as err:  # every failure is recorded on the job, none is lost
            self._handle_error(job, err)
            return
        if self.queue.complete(job, self.owner):
            self.stats.studies += 1
            self._report("studies", 1)
        else:
            self.stats.lost += 1

    def _pull(self, job: Job, info: SourceInfo, source: Source) -> None:
        study_uid = job.unit
        name = info.name
        study_row = job.params.get("study")
        series_rows = source.search_series(study_uid)
        self._keep_lease(job)
        if isinstance(study_row, Mapping):
            self.store.add_study(study_row, source=name)
        if series_rows:
            self.store.add_series_metadata(series_rows, source=name)
        uids = [row["SeriesInstanceUID"] for row in series_rows]
        for instances in self._series_metadata(source, study_uid, uids):
            # Checked just before the write: a worker that lost the job writes nothing more.
            self._keep_lease(job)
            self.store.add_instances(instances, source=name)
            self.stats.series += 1
            self.stats.instances += len(instances)
            self._report("series", 1)
            self._report("instances", len(instances))
        log.info("%s: study %s from %s: %d series", self.owner, study_uid, name, len(series_rows))

    def _series_metadata(
        self, source: Source, study_uid: str, uids: list[str]
    ) -> Iterator[list[dict[str, Any]]]:
        """Each series' instance metadata, in order.

        A source that declares itself ``thread_safe`` is asked for the next
        series while this one is written: fetching and writing overlap.
        """
        if not getattr(source, "thread_safe", False) or len(uids) < 2:
            for uid in uids:
                yield source.retrieve_series_metadata(study_uid, uid)
            return
        if self._prefetcher is None:
            self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        pending = self._prefetcher.submit(source.retrieve_series_metadata, study_uid, uids[0])
        try:
            for following in [*uids[1:], None]:
                current = pending.result()
                if following is not None:
                    pending = self._prefetcher.submit(
                        source.retrieve_series_metadata, study_uid, following
                    )
                yield current
        finally:
            pending.cancel()

    def _keep_lease(self, job: Job, *, renew: bool = False) -> None:
        """Raise ``LeaseLost`` unless we hold the job; renew once a third of the lease is gone."""
        now = time.monotonic()
        if renew or now - self._renewed >= self.lease / 3:
            self.queue.renew(job, self.owner, lease=self.lease)
            self._renewed = now
        elif not self.queue.holds(job, self.owner):
            raise LeaseLost(f"job {job.id} ({job.unit}) is no longer ours", job_id=job.id)

    def _open(self, source_id: int) -> tuple[SourceInfo, Source]:
        cached = self._sources.get(source_id)
        if cached is not None:
            return cached
        info = next((s for s in self.store.list_sources() if s.id == source_id), None)
        if info is None:
            raise UnknownSource(f"the job's source (id {source_id}) is gone")
        config = SourceConfig(
            name=info.name,
            kind=info.kind,
            root=info.root_url,
            settings=dict(info.settings),
            headers=self._secrets.get(info.name, {}),
        )
        opened = open_source(config)
        self._sources[source_id] = (info, opened)
        return info, opened

    def _handle_error(self, job: Job, err: Exception) -> None:
        text = self.scrub(f"{type(err).__name__}: {err}")
        if not isinstance(err, MetastoreError):
            log.error("%s: job %s: unexpected %s", self.owner, job.id, text)
        if isinstance(err, _PERMANENT) or job.attempts >= job.max_attempts:
            if self.queue.fail(job, self.owner, text):
                self._failed(job, text)
            return
        delay = self._retry_delay(job.attempts, err)
        if self.queue.retry_later(job, self.owner, text, delay=delay):
            self.stats.retries += 1
            self._report("retries", 1)
            log.info(
                "%s: job %s (%s) retries in %.1fs: %s", self.owner, job.id, job.unit, delay, text
            )

    def _retry_delay(self, attempts: int, err: Exception) -> float:
        retry_after = err.context.get("retry_after") if isinstance(err, SourceUnavailable) else None
        if isinstance(retry_after, int | float):
            return float(retry_after)
        ceiling = min(self.max_backoff, self.backoff * 2 ** max(attempts - 1, 0))
        return random.uniform(ceiling / 2, ceiling)

    def _failed(self, job: Job, text: str) -> None:
        self.stats.failures += 1
        self.stats.errors.append(f"{job.unit}: {text}")
        self._report("failures", 1)
        log.warning("%s: job %s (%s) failed: %s", self.owner, job.id, job.unit, text)

    def scrub(self, text: str) -> str:
        """The text with every credential value this worker holds blanked out."""
        for headers in self._secrets.values():
            for value in headers.values():
                for secret in {value, *value.split()[1:]}:
                    if len(secret) >= 4:
                        text = text.replace(secret, "***")
        return text
