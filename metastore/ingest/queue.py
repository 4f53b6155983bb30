"""The ingest job queue: ``ingest_jobs`` rows with leases.

A job (one ``ingest_jobs`` row) names a registered source and a unit of
work in that source's terms: a StudyInstanceUID. Claims take a lease; on
PostgreSQL the claim is ``FOR UPDATE SKIP LOCKED``, so any number of
workers on any number of machines share the queue; on SQLite each write
transaction starts with ``BEGIN IMMEDIATE`` (see :mod:`metastore.db`), one
writer at a time. Leases and due times are measured in the database's
clock (:func:`metastore.db.now`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore import db
from metastore.errors import ConfigurationError, LeaseLost, UnknownSource
from metastore.schema import ingest_jobs, sources
from metastore.store import MetaStore

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATES = (QUEUED, RUNNING, DONE, FAILED)
_CHUNK = 1000  # rows per multi-row insert, far below either bind-parameter limit
_ERROR_MAX = 4000
_KEEP = object()  # _finish: leave failed_parts as they are


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
    #: What its last run could not read (series, instance, error), retried alone next time.
    failed_parts: list[dict[str, Any]] | None
    generation: int
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
        the index up to date; a unit whose last run could not read some parts
        keeps them, and its next run retries only those); one that a live
        worker holds keeps its worker and has its ``generation`` raised, so
        that worker's completion queues it once more (what changed after its
        pull began is pulled too). A unit is one row whoever queues it: a
        sync racing a follower makes one job per study, not two.
        """
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        total = 0
        with db.writing(self.store.engine, "queueing ingest jobs") as connection:
            source_id = self._source_id(connection, source)
            now = db.now(connection)
            # In unit order, so concurrent enqueuers lock rows in one order (no deadlock).
            rows = [
                {"source_id": source_id, "unit": unit, "params": dict(params)}
                for unit, params in sorted(dict(units).items())
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
            held = sa.and_(
                ingest_jobs.c.source_id == source_id,
                ingest_jobs.c.state == RUNNING,
                ingest_jobs.c.lease_expires_at >= now,
            )
            for start in range(0, len(rows), _CHUNK):
                units_chunk = [row["unit"] for row in rows[start : start + _CHUNK]]
                connection.execute(
                    sa.update(ingest_jobs)
                    .where(held, ingest_jobs.c.unit.in_(units_chunk))
                    .values(generation=ingest_jobs.c.generation + 1)
                )
        return total

    def claim(self, owner: str, *, lease: float, source: str | None = None) -> Job | None:
        """Take the next due job (or one whose lease ran out) for ``lease`` seconds.

        PostgreSQL: the candidate row is picked ``FOR UPDATE SKIP LOCKED``,
        so concurrent claimers never wait on or take the same row. SQLite
        ignores ``FOR UPDATE``; there the write transaction's ``BEGIN
        IMMEDIATE`` makes claims one at a time.
        """
        with db.writing(self.store.engine, "claiming an ingest job") as connection:
            now = db.now(connection)
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
                    lease_expires_at=db.later(connection, lease),
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
        with db.writing(self.store.engine, "renewing a job lease") as connection:
            result = connection.execute(
                sa.update(ingest_jobs)
                .where(self._owned(connection, job, owner))
                .values(lease_expires_at=db.later(connection, lease), updated_at=sa.func.now())
            )
        if result.rowcount != 1:
            raise LeaseLost(f"job {job.id} ({job.unit}) is no longer ours", job_id=job.id)

    def release(self, jobs: Iterable[Job], owner: str) -> int:
        """Give back claimed jobs not worked on: queued as they were, their claim not counted.

        For a worker that stops with jobs claimed ahead. Each is due again at
        its old time (its place in the queue) and its attempt is taken back;
        one another worker holds by now is left alone. Returns how many were
        given back.
        """
        given = 0
        with db.writing(self.store.engine, "giving back ingest jobs") as connection:
            for job in sorted(jobs, key=lambda j: j.id):  # one lock order for every worker
                result = connection.execute(
                    sa.update(ingest_jobs)
                    .where(self._owned(connection, job, owner))
                    .values(
                        state=QUEUED,
                        attempts=ingest_jobs.c.attempts - 1,  # the claim added one
                        next_try_at=job.next_try_at,
                        lease_owner=None,
                        lease_expires_at=None,
                        updated_at=sa.func.now(),
                    )
                )
                given += result.rowcount
        return given

    def complete(self, job: Job, owner: str) -> bool:
        """Mark the job done (nothing left to retry); False when another worker has taken it."""
        return self._finish(job, owner, state=DONE, error=None, delay=0.0, parts=None)

    def complete_partly(
        self, job: Job, owner: str, parts: list[dict[str, Any]], error: str
    ) -> bool:
        """Mark the job failed with the parts it could not read; a re-run retries only those.

        The rest of the unit is stored: ``parts`` lists each unreadable
        series or instance (``{"series", "instance", "error"}``).
        """
        return self._finish(job, owner, state=FAILED, error=error, delay=0.0, parts=parts)

    def retry_later(self, job: Job, owner: str, error: str, *, delay: float) -> bool:
        """Queue the job again in ``delay`` seconds, keeping the error."""
        return self._finish(job, owner, state=QUEUED, error=error, delay=delay)

    def fail(self, job: Job, owner: str, error: str) -> bool:
        """Mark the job failed for good, keeping the error."""
        return self._finish(job, owner, state=FAILED, error=error, delay=0.0)

    def _finish(
        self,
        job: Job,
        owner: str,
        *,
        state: str,
        error: str | None,
        delay: float,
        parts: Any = _KEEP,
    ) -> bool:
        with db.writing(self.store.engine, "finishing an ingest job") as connection:
            values: dict[str, Any] = {
                "state": state,
                "lease_expires_at": None,
                "last_error": None if error is None else error[:_ERROR_MAX],
                "updated_at": sa.func.now(),
            }
            if parts is not _KEEP:
                # SQL NULL, not JSON null, when nothing is left to retry
                values["failed_parts"] = sa.null() if parts is None else parts
            if state == QUEUED:
                values["next_try_at"] = db.later(connection, delay)
                values["lease_owner"] = None
            owned = self._owned(connection, job, owner)
            if parts is not _KEEP:  # a run's end: only if the unit was not queued meanwhile
                owned = sa.and_(owned, ingest_jobs.c.generation == job.generation)
            result = connection.execute(sa.update(ingest_jobs).where(owned).values(**values))
            if result.rowcount == 0 and parts is not _KEEP:
                result = self._queue_again(connection, job, owner)
        return result.rowcount == 1

    def _queue_again(self, connection: Connection, job: Job, owner: str) -> Any:
        """The unit was queued again while this run held it: back to the queue, for a whole pull.

        What changed after the pull began may be missing, so the run ends
        neither done nor failed with parts.
        """
        return connection.execute(
            sa.update(ingest_jobs)
            .where(self._owned(connection, job, owner))
            .values(
                state=QUEUED,
                attempts=0,
                next_try_at=db.now(connection),
                lease_owner=None,
                lease_expires_at=None,
                last_error=None,
                failed_parts=sa.null(),
                updated_at=sa.func.now(),
            )
        )

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
        with db.reading(self.store.engine, "listing ingest jobs") as connection:
            rows = connection.execute(query).mappings().all()
        return [(row["source"], Job.from_row(row)) for row in rows]

    def counts(self, source: str | None = None) -> dict[str, int]:
        """How many jobs are in each state (every state present, zero or not)."""
        query = sa.select(ingest_jobs.c.state, sa.func.count()).group_by(ingest_jobs.c.state)
        if source is not None:
            query = query.join(sources, sources.c.id == ingest_jobs.c.source_id).where(
                sources.c.name == source
            )
        with db.reading(self.store.engine, "counting ingest jobs") as connection:
            found = {state: int(n) for state, n in connection.execute(query)}
        return {state: found.get(state, 0) for state in STATES}
