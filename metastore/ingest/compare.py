"""An archive's listing compared with the index, in SQL: what is new, changed, unchanged, unlisted.

``metastore sync`` crawls an archive's studies once (QIDO-RS with
``NumberOfStudyRelatedSeries`` / ``NumberOfStudyRelatedInstances``) and
loads the crawl into a temporary table (``schema.sync_listing``, dropped at
commit), which one join compares with the counts the index holds for that
source: the number of its series of each study and the instances they hold.
A study is

- *new* when the source holds no series of it;
- *unchanged* when both counts agree;
- *changed* otherwise (and when the archive gave no count);
- *unlisted* when the source holds it but the crawl did not list it (gone
  from the archive, or outside the crawl's query: only a direct look tells).

Inside a changed study, :func:`changed_series` picks the series whose
``NumberOfSeriesRelatedInstances`` differs from the index's count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from metastore import db
from metastore.schema import series, sources, studies, sync_listing
from metastore.store import MetaStore

_CHUNK = 5000  # listing rows per executemany
NEW, CHANGED = "new", "changed"


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """The studies of a listing by what the index holds of them (UIDs sorted)."""

    new: list[str]
    changed: list[str]
    unchanged: int
    unlisted: list[str]


def count(row: Mapping[str, Any], keyword: str) -> int | None:
    """An integer count attribute of a QIDO-RS row, or None when missing or unreadable."""
    value = row.get(keyword)
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    try:
        return None if value is None or isinstance(value, bool) else int(value)
    except (TypeError, ValueError):
        return None


def study_counts(row: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(series, instances) a QIDO-RS study row announces."""
    return (
        count(row, "NumberOfStudyRelatedSeries"),
        count(row, "NumberOfStudyRelatedInstances"),
    )


def _held(source_id: int) -> Any:
    """Per study the source holds: its UID, how many series and instances it holds of it."""
    per_study = (
        sa.select(
            series.c.study_id,
            sa.func.count().label("num_series"),
            sa.func.sum(series.c.num_instances).label("num_instances"),
        )
        .where(series.c.source_id == source_id)
        .group_by(series.c.study_id)
        .subquery()
    )
    return (
        sa.select(studies.c.study_uid, per_study.c.num_series, per_study.c.num_instances)
        .join(per_study, per_study.c.study_id == studies.c.id)
        .subquery("held")
    )


def compare_listing(
    store: MetaStore, source: str, listing: Mapping[str, tuple[int | None, int | None]]
) -> Comparison:
    """Compare ``{study UID: (series, instances)}`` from an archive with what ``source`` holds.

    One transaction: the listing goes into a temporary table and two
    queries classify it; the table goes at commit (PostgreSQL) or is
    dropped before it (SQLite).
    """
    with db.writing(store.engine, "comparing an archive listing with the index") as connection:
        source_id = connection.execute(
            sa.select(sources.c.id).where(sources.c.name == source)
        ).scalar_one_or_none()
        if source_id is None:
            return Comparison(new=sorted(listing), changed=[], unchanged=0, unlisted=[])
        sync_listing.create(connection)
        rows = [
            {"study_uid": uid, "num_series": n_series, "num_instances": n_instances}
            for uid, (n_series, n_instances) in listing.items()
        ]
        for start in range(0, len(rows), _CHUNK):
            connection.execute(sa.insert(sync_listing), rows[start : start + _CHUNK])
        if connection.dialect.name == "postgresql":
            # A fresh temporary table has no statistics; without them the
            # planner misjudges the joins below.
            connection.execute(sa.text(f"ANALYZE {sync_listing.name}"))
        held = _held(int(source_id))
        listed = sync_listing.c
        same = sa.and_(
            listed.num_series == held.c.num_series, listed.num_instances == held.c.num_instances
        )
        state = sa.case((held.c.study_uid.is_(None), NEW), (same, None), else_=CHANGED)
        joined = sync_listing.outerjoin(held, held.c.study_uid == listed.study_uid)
        differing = connection.execute(
            sa.select(listed.study_uid, state.label("state"))
            .select_from(joined)
            .where(sa.not_(sa.func.coalesce(same, sa.false())))
            .order_by(listed.study_uid)
        ).all()
        unlisted = connection.execute(
            sa.select(held.c.study_uid)
            .where(~sa.exists().where(listed.study_uid == held.c.study_uid))
            .order_by(held.c.study_uid)
        ).scalars()
        found = Comparison(
            new=[uid for uid, kind in differing if kind == NEW],
            changed=[uid for uid, kind in differing if kind != NEW],
            unchanged=len(rows) - len(differing),  # each listed study is one or the other
            unlisted=[str(uid) for uid in unlisted],
        )
        if connection.dialect.name != "postgresql":
            sync_listing.drop(connection)
    return found


def series_counts(store: MetaStore, source: str, study_uid: str) -> dict[str, int]:
    """The instance count of each series ``source`` holds of the study."""
    query = (
        sa.select(series.c.series_uid, series.c.num_instances)
        .join(studies, studies.c.id == series.c.study_id)
        .join(sources, sources.c.id == series.c.source_id)
        .where(studies.c.study_uid == study_uid, sources.c.name == source)
    )
    with db.reading(store.engine, f"counting the series of study {study_uid}") as connection:
        return {str(uid): int(n) for uid, n in connection.execute(query)}


def changed_series(rows: Iterable[Mapping[str, Any]], held: Mapping[str, int]) -> list[str]:
    """The series of a QIDO-RS series listing whose instance count differs from ``held``.

    A series without a count (the server gave none) is taken as changed.
    """
    wanted = []
    for row in rows:
        uid = str(row["SeriesInstanceUID"])
        announced = count(row, "NumberOfSeriesRelatedInstances")
        if announced is None or held.get(uid) != announced:
            wanted.append(uid)
    return wanted
