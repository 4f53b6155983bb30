"""``check``: verify an index like an fsck, and repair what can be recomputed.

What is checked, with set-based queries (a fixed number however large the index):

- counts: each series' ``num_instances``, each study's ``num_series`` and
  ``num_instances``, and ``ModalitiesInStudy`` against the rows they count;
- orphans: instances without their series, series without their study,
  series lists (and jobs) whose source is gone;
- the change feed: sequence gaps inside the outbox that commit order does
  not explain (see below), consumers whose cursor is past every sequence
  number ever issued (they would skip the next events);
- the service's cache: a rendered series answer (``rendered_series``)
  older than the last write to its series or its instances, or counting
  other instances than the series has (a write deletes it in the same
  transaction, so one that survives is stale);
- leases: ingest jobs left ``running`` by an owner whose lease expired,
  consumer leases that expired without being released.

Outbox gaps: SQLite's ``AUTOINCREMENT`` never hands a number to a
transaction that rolls back, and pruning removes only a prefix, so a hole
between two rows means an event row was deleted: a finding. On PostgreSQL
``nextval`` is not transactional: a writer that took numbers and then
rolled back (a killed backend, a failed commit) leaves a hole for good, and
the advisory lock in ``metastore.outbox`` keeps seq order equal to commit
order, so a hole below the highest committed row is a rolled-back write and
never an event a consumer can still be handed. It is reported as a note.

``repair`` fixes, in one write transaction, what the rows determine: counts
and ModalitiesInStudy are recomputed, stale cached answers are dropped
(the service renders them again), orphans are deleted (the foreign keys
would have cascaded them), expired leases are released (the job goes back
to the queue), and the outbox sequence is moved past the highest consumer
cursor so the next event reaches every consumer. A deleted event cannot be
recomputed and stays a finding.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from metastore import db
from metastore.schema import (
    consumers,
    ingest_jobs,
    instances,
    outbox,
    rendered_series,
    series,
    sources,
    studies,
)
from metastore.store import MetaStore

__all__ = ["CheckReport", "Finding", "check"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One inconsistency: what kind, where, and whether ``repair`` can fix it."""

    kind: str
    detail: str
    repairable: bool = True

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True, kw_only=True)
class CheckReport:
    """What ``check`` found; ``repaired`` says the repairable findings were fixed."""

    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()
    repaired: bool = False

    @property
    def clean(self) -> bool:
        """Nothing found (after the repair, when one was made)."""
        if self.repaired:
            return all(finding.repairable for finding in self.findings)
        return not self.findings

    @property
    def remaining(self) -> tuple[Finding, ...]:
        """The findings still true: all of them, or after a repair the unrepairable ones."""
        if self.repaired:
            return tuple(f for f in self.findings if not f.repairable)
        return self.findings


def check(store: MetaStore, *, repair: bool = False) -> CheckReport:
    """Check the index behind ``store``; with ``repair``, fix what can be recomputed."""
    if not repair:
        with db.reading(store.engine, "checking the index") as connection:
            if connection.dialect.name == "postgresql":
                # One snapshot for every query, so concurrent writers look consistent.
                connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            findings, notes = _inspect(connection, repair=False)
        return CheckReport(findings=tuple(findings), notes=tuple(notes))
    with db.writing(store.engine, "repairing the index") as connection:
        findings, notes = _inspect(connection, repair=True)
    for finding in findings:
        log.warning("check: %s (%s)", finding, "repaired" if finding.repairable else "left")
    return CheckReport(findings=tuple(findings), notes=tuple(notes), repaired=True)


Fix = Callable[[], None]


def _inspect(connection: Connection, *, repair: bool) -> tuple[list[Finding], list[str]]:
    findings: list[Finding] = []
    for step in (_orphans, _counts, _leases, _rendered):
        found, fix = step(connection)
        findings += found
        if repair and found:
            fix()
        if repair and found and step is _orphans:
            # The deleted rows were counted: the counts are recomputed without them.
            _counts(connection)[1]()
    found, advance, notes = _feed(connection)
    findings += found
    if repair and advance is not None:
        advance()
    return findings, notes


# -- orphans -------------------------------------------------------------------


def _missing(child: sa.Column[Any], parent: sa.Column[Any]) -> sa.ColumnElement[bool]:
    return ~sa.exists().where(parent == child)


def _orphans(connection: Connection) -> tuple[list[Finding], Fix]:
    checks = (
        ("orphan instance", instances, _missing(instances.c.series_id, series.c.id), "sop_uid"),
        ("orphan series", series, _missing(series.c.study_id, studies.c.id), "series_uid"),
        (
            "series list without source",
            series,
            _missing(series.c.source_id, sources.c.id),
            "series_uid",
        ),
        (
            "job without source",
            ingest_jobs,
            _missing(ingest_jobs.c.source_id, sources.c.id),
            "unit",
        ),
    )
    findings: list[Finding] = []
    doomed: list[tuple[sa.Table, list[int]]] = []
    for kind, table, condition, label in checks:
        rows = connection.execute(sa.select(table.c.id, table.c[label]).where(condition)).all()
        for id_, name in rows:
            findings.append(Finding(kind=kind, detail=f"{label} {name} (row {id_})"))
        if rows:
            doomed.append((table, [id_ for id_, _ in rows]))

    def fix() -> None:
        for table, ids in doomed:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                if table is series:
                    connection.execute(sa.delete(instances).where(instances.c.series_id.in_(chunk)))
                connection.execute(sa.delete(table).where(table.c.id.in_(chunk)))

    return findings, fix


# -- counts and ModalitiesInStudy ----------------------------------------------


def _counts(connection: Connection) -> tuple[list[Finding], Fix]:
    per_series = (
        sa.select(instances.c.series_id, sa.func.count().label("n"))
        .group_by(instances.c.series_id)
        .subquery()
    )
    actual = sa.func.coalesce(per_series.c.n, 0)
    wrong_series = connection.execute(
        sa.select(
            series.c.id, studies.c.study_uid, series.c.series_uid, series.c.num_instances, actual
        )
        .join(studies, studies.c.id == series.c.study_id)
        .outerjoin(per_series, per_series.c.series_id == series.c.id)
        .where(series.c.num_instances != actual)
    ).all()
    findings = [
        Finding(
            kind="series count",
            detail=f"study {study} series {uid}: num_instances is {stored}, the rows say {real}",
        )
        for _, study, uid, stored, real in wrong_series
    ]
    per_study = (
        sa.select(
            series.c.study_id,
            sa.func.count().label("n_series"),
            sa.func.coalesce(sa.func.sum(actual), 0).label("n_instances"),
        )
        .select_from(series.outerjoin(per_series, per_series.c.series_id == series.c.id))
        .group_by(series.c.study_id)
        .subquery()
    )
    modalities: dict[int, set[str]] = defaultdict(set)
    for study_id, modality in connection.execute(
        sa.select(series.c.study_id, series.c.modality)
        .where(series.c.modality.is_not(None))
        .distinct()
    ):
        modalities[study_id].add(modality)
    rows = connection.execute(
        sa.select(
            studies.c.id,
            studies.c.study_uid,
            studies.c.num_series,
            studies.c.num_instances,
            studies.c.modalities_in_study,
            sa.func.coalesce(per_study.c.n_series, 0),
            sa.func.coalesce(per_study.c.n_instances, 0),
        ).outerjoin(per_study, per_study.c.study_id == studies.c.id)
    ).all()
    wrong_studies: dict[int, dict[str, Any]] = {}
    for id_, uid, n_series, n_instances, stored_modalities, real_series, real_instances in rows:
        real_modalities = "\\".join(sorted(modalities.get(id_, ()))) or None
        values: dict[str, Any] = {}
        for column, stored, real in (
            ("num_series", n_series, int(real_series)),
            ("num_instances", n_instances, int(real_instances)),
            ("modalities_in_study", stored_modalities, real_modalities),
        ):
            if stored != real:
                values[column] = real
                findings.append(
                    Finding(
                        kind="study count",
                        detail=f"study {uid}: {column} is {stored!r}, the rows say {real!r}",
                    )
                )
        if values:
            wrong_studies[id_] = values

    def fix() -> None:
        # Writers lock study rows first (in UID order); so does the repair.
        ids = sorted(wrong_studies)
        if ids:
            connection.execute(
                sa.select(studies.c.id)
                .where(studies.c.id.in_(ids))
                .order_by(studies.c.study_uid)
                .with_for_update()
            )
        series_ids = [id_ for id_, *_ in wrong_series]
        if series_ids:
            recount = (
                sa.select(sa.func.count())
                .where(instances.c.series_id == series.c.id)
                .scalar_subquery()
            )
            connection.execute(
                sa.update(series).where(series.c.id.in_(series_ids)).values(num_instances=recount)
            )
        for id_, values in wrong_studies.items():
            connection.execute(
                sa.update(studies)
                .where(studies.c.id == id_)
                .values(**values, updated_at=sa.func.now())
            )

    return findings, fix


# -- the service's rendered-series cache ----------------------------------------


def _rendered(connection: Connection) -> tuple[list[Finding], Fix]:
    newest = (
        sa.select(sa.func.max(instances.c.updated_at))
        .where(instances.c.series_id == series.c.id)
        .scalar_subquery()
    )
    stale = sa.or_(
        rendered_series.c.instances != series.c.num_instances,
        rendered_series.c.created_at < series.c.updated_at,
        rendered_series.c.created_at < newest,
    )
    rows = connection.execute(
        sa.select(
            rendered_series.c.series_id,
            rendered_series.c.base,
            studies.c.study_uid,
            series.c.series_uid,
            rendered_series.c.instances,
            series.c.num_instances,
        )
        .join(series, series.c.id == rendered_series.c.series_id)
        .join(studies, studies.c.id == series.c.study_id)
        .where(stale)
    ).all()
    findings = [
        Finding(
            kind="stale cached answer",
            detail=f"study {study} series {uid}: the metadata rendered for {base} "
            f"({cached} instances) predates the series' last write ({count} instances)",
        )
        for _, base, study, uid, cached, count in rows
    ]

    def fix() -> None:
        for series_id, base, *_ in rows:
            connection.execute(
                sa.delete(rendered_series).where(
                    rendered_series.c.series_id == series_id, rendered_series.c.base == base
                )
            )

    return findings, fix


# -- leases --------------------------------------------------------------------


def _leases(connection: Connection) -> tuple[list[Finding], Fix]:
    now = db.now(connection)
    expired_jobs = sa.and_(ingest_jobs.c.state == "running", ingest_jobs.c.lease_expires_at < now)
    jobs = connection.execute(
        sa.select(ingest_jobs.c.id, ingest_jobs.c.unit, ingest_jobs.c.lease_owner).where(
            expired_jobs
        )
    ).all()
    expired_consumers = sa.and_(
        consumers.c.lease_owner.is_not(None), consumers.c.lease_expires_at < now
    )
    held = connection.execute(
        sa.select(consumers.c.name, consumers.c.lease_owner).where(expired_consumers)
    ).all()
    findings = [
        Finding(
            kind="expired job lease",
            detail=f"job {id_} ({unit}) is running under {owner}, whose lease expired",
        )
        for id_, unit, owner in jobs
    ] + [
        Finding(
            kind="expired consumer lease",
            detail=f"consumer {name!r} is leased to {owner}, whose lease expired",
        )
        for name, owner in held
    ]

    def fix() -> None:
        ids = [id_ for id_, *_ in jobs]
        if ids:
            connection.execute(
                sa.update(ingest_jobs)
                .where(ingest_jobs.c.id.in_(ids), expired_jobs)
                .values(
                    state="queued",
                    lease_owner=None,
                    lease_expires_at=None,
                    next_try_at=now,
                    updated_at=sa.func.now(),
                )
            )
        names = [name for name, _ in held]
        if names:
            connection.execute(
                sa.update(consumers)
                .where(consumers.c.name.in_(names), expired_consumers)
                .values(lease_owner=None, lease_expires_at=None)
            )

    return findings, fix


# -- the change feed -----------------------------------------------------------


# The outbox's sequence on PostgreSQL (``SELECT`` + the expression).
_SEQUENCE = "SELECT pg_get_serial_sequence('outbox', 'seq')"


def issued(connection: Connection) -> int:
    """The highest outbox sequence number ever handed out (0 before the first)."""
    if connection.dialect.name == "postgresql":
        name = connection.execute(sa.text(_SEQUENCE)).scalar_one()
        last, called = connection.exec_driver_sql(
            f"SELECT last_value, is_called FROM {name}"  # a name PostgreSQL quoted
        ).one()
        counter = int(last) if called else int(last) - 1
    else:
        counter = (
            connection.execute(
                sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
            ).scalar()
            or 0
        )
    highest = connection.execute(sa.select(sa.func.max(outbox.c.seq))).scalar() or 0
    return max(int(counter), int(highest))


def _set_issued(connection: Connection, value: int) -> None:
    """Make the next outbox sequence number ``value + 1``."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text(f"SELECT setval({_SEQUENCE[7:]}, :v)"), {"v": value})
        return
    updated = connection.execute(
        sa.text("UPDATE sqlite_sequence SET seq = :v WHERE name = 'outbox'"), {"v": value}
    ).rowcount
    if not updated:
        connection.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('outbox', :v)"), {"v": value}
        )


def _gaps(connection: Connection) -> list[tuple[int, int]]:
    ordered = sa.select(
        outbox.c.seq, sa.func.lag(outbox.c.seq).over(order_by=outbox.c.seq).label("prev")
    ).subquery()
    query = (
        sa.select(ordered.c.prev, ordered.c.seq)
        .where(ordered.c.seq - ordered.c.prev > 1)
        .order_by(ordered.c.seq)
    )
    return [(int(prev), int(seq)) for prev, seq in connection.execute(query)]


def _feed(connection: Connection) -> tuple[list[Finding], Fix | None, list[str]]:
    findings: list[Finding] = []
    notes: list[str] = []
    for prev, seq in _gaps(connection):
        missing = f"{prev + 1}" if seq - prev == 2 else f"{prev + 1}..{seq - 1}"
        if connection.dialect.name == "postgresql":
            notes.append(f"outbox: no event {missing} (numbers taken by rolled-back writes)")
        else:
            findings.append(
                Finding(
                    kind="outbox gap",
                    detail=f"events {missing} are missing between {prev} and {seq}",
                    repairable=False,
                )
            )
    head = issued(connection)
    ahead = connection.execute(
        sa.select(consumers.c.name, consumers.c.last_seq).where(consumers.c.last_seq > head)
    ).all()
    findings += [
        Finding(
            kind="consumer ahead of the feed",
            detail=f"consumer {name!r} is at {last}, the feed has issued up to {head}: "
            "it would skip the next events",
        )
        for name, last in ahead
    ]

    def fix() -> None:
        _set_issued(connection, max(int(last) for _, last in ahead))

    return findings, fix if ahead else None, notes
