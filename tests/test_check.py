"""``metastore check``: a real index corrupted in each way is found out and repaired."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from helpers import instances, series_meta
from sqlalchemy.engine import Connection

from metastore import MetaStore, cli
from metastore.check import check
from metastore.events import Consumer
from metastore.ingest import JobQueue
from metastore.service.metadata import series_metadata


@contextmanager
def unchecked(store: MetaStore) -> Iterator[Connection]:
    """A write transaction with foreign keys off: what a bug or a hand edit could do."""
    with store.engine.connect() as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        if store.dialect == "sqlite":
            driver.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                if store.dialect == "postgresql":
                    connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
                yield connection
        finally:
            if store.dialect == "sqlite":
                driver.execute("PRAGMA foreign_keys=ON")


def populate(store: MetaStore) -> None:
    """Two studies, two sources, a series summary without instances, a consumer, a done job."""
    store.add_instances(instances("1.2.3", "1.2.3.1", count=3))
    store.add_instances(instances("1.2.3", "1.2.3.2", count=2, Modality="SR"), source="pacs")
    store.add_series_metadata([series_meta("1.2.4", "1.2.4.1", Modality="MR")])
    store.add_instances(instances("1.2.4", "1.2.4.2", count=4))
    with Consumer(store, "audit") as consumer:
        consumer.process(lambda event: None)
    JobQueue(store).enqueue("pacs", [("1.2.3", {})])


def execute(store: MetaStore, sql: str) -> None:
    with unchecked(store) as connection:
        connection.exec_driver_sql(sql)


def expire_job_lease(store: MetaStore) -> None:
    execute(
        store,
        "UPDATE ingest_jobs SET state = 'running', lease_owner = 'gone:1:x', "
        "lease_expires_at = '2001-01-01 00:00:00'",
    )


def expire_consumer_lease(store: MetaStore) -> None:
    execute(
        store,
        "UPDATE consumers SET lease_owner = 'gone:2:y', lease_expires_at = '2001-01-01 00:00:00'",
    )


def orphan_instance(store: MetaStore) -> None:
    execute(
        store,
        "INSERT INTO instances (series_id, sop_uid, version, metadata) "
        "VALUES (987654, '9.9.9', 1, '{}')",
    )


def render(store: MetaStore) -> None:
    """The service renders and keeps a series' metadata."""
    assert series_metadata(store, "1.2.3", "1.2.3.1", "http://svc/dicomweb") is not None


def cache_outlived_a_write(store: MetaStore) -> None:
    render(store)
    execute(store, "UPDATE rendered_series SET created_at = '2001-01-01 00:00:00'")


def cache_counts_other_instances(store: MetaStore) -> None:
    render(store)
    execute(store, "UPDATE rendered_series SET instances = 1")


# name -> (corrupt, the kinds check must report)
CORRUPTIONS: dict[str, tuple[Callable[[MetaStore], None], set[str]]] = {
    "series count": (
        lambda s: execute(s, "UPDATE series SET num_instances = 99 WHERE series_uid = '1.2.3.1'"),
        {"series count"},
    ),
    "study counts": (
        lambda s: execute(
            s,
            "UPDATE studies SET num_series = 7, num_instances = 0, "
            "modalities_in_study = 'MR' WHERE study_uid = '1.2.3'",
        ),
        {"study count"},
    ),
    "modalities lost": (
        lambda s: execute(s, "UPDATE studies SET modalities_in_study = NULL"),
        {"study count"},
    ),
    "orphan instance": (orphan_instance, {"orphan instance"}),
    "study row gone": (
        lambda s: execute(s, "DELETE FROM studies WHERE study_uid = '1.2.4'"),
        {"orphan series"},
    ),
    "source gone": (
        lambda s: execute(s, "DELETE FROM sources WHERE name = 'pacs'"),
        {"series list without source", "job without source"},
    ),
    "consumer ahead": (
        lambda s: execute(s, "UPDATE consumers SET last_seq = 1000"),
        {"consumer ahead of the feed"},
    ),
    "expired job lease": (expire_job_lease, {"expired job lease"}),
    "cache outlived a write": (cache_outlived_a_write, {"stale cached answer"}),
    "cache counts other instances": (cache_counts_other_instances, {"stale cached answer"}),
    "expired consumer lease": (expire_consumer_lease, {"expired consumer lease"}),
}


def kinds(store: MetaStore) -> set[str]:
    return {finding.kind for finding in check(store).findings}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_each_corruption_is_found_and_repaired(
    store: MetaStore, corruption: str, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(store)
    assert check(store).clean
    corrupt, expected = CORRUPTIONS[corruption]
    corrupt(store)

    assert kinds(store) == expected
    assert cli.main(["--db", store.url, "check"]) == 1
    out = capsys.readouterr().out
    assert "finding(s)" in out and "--repair" in out

    assert cli.main(["--db", store.url, "check", "--repair"]) == 0
    assert "repaired" in capsys.readouterr().out
    assert check(store).clean, check(store).findings
    assert cli.main(["--db", store.url, "check"]) == 0
    assert capsys.readouterr().out.strip() == "clean"


def test_repair_recomputes_the_true_values(store: MetaStore) -> None:
    populate(store)
    for corrupt, _ in CORRUPTIONS.values():
        if corrupt is not orphan_instance:
            continue
        corrupt(store)
    execute(
        store,
        "UPDATE studies SET num_series = 0, num_instances = 42, modalities_in_study = 'XA'",
    )
    execute(store, "UPDATE series SET num_instances = 0")
    report = check(store, repair=True)
    assert report.repaired and report.clean
    study = store.get_study("1.2.3")
    assert study is not None
    assert study["ModalitiesInStudy"] == ["CT", "SR"]
    assert (study["NumberOfStudyRelatedSeries"], study["NumberOfStudyRelatedInstances"]) == (2, 5)
    other = store.get_study("1.2.4")
    assert other is not None
    assert (other["NumberOfStudyRelatedSeries"], other["NumberOfStudyRelatedInstances"]) == (2, 4)
    counts = {
        s["SeriesInstanceUID"]: s["NumberOfSeriesRelatedInstances"]
        for listed in other["seriesLists"]
        for s in listed["series"]
    }
    assert counts == {"1.2.4.1": 0, "1.2.4.2": 4}
    with store.engine.connect() as connection:
        assert (
            connection.exec_driver_sql(
                "SELECT count(*) FROM instances WHERE sop_uid = '9.9.9'"
            ).scalar()
            == 0
        )


def test_a_consumer_ahead_gets_the_next_event_after_repair(store: MetaStore) -> None:
    populate(store)
    execute(store, "UPDATE consumers SET last_seq = 1000")
    check(store, repair=True)
    seqs = [event.seq for event in store.add_instances(instances("1.2.5", "1.2.5.1")).events]
    assert seqs and min(seqs) > 1000
    seen: list[int] = []
    with Consumer(store, "audit") as consumer:
        consumer.process(lambda event: seen.append(event.seq))
    assert seen == seqs


def test_expired_leases_go_back_to_the_queue(store: MetaStore) -> None:
    populate(store)
    expire_job_lease(store)
    check(store, repair=True)
    ((_, job),) = JobQueue(store).jobs()
    assert (job.state, job.lease_owner) == ("queued", None)


def test_an_outbox_gap_is_reported_per_engine(
    store: MetaStore, capsys: pytest.CaptureFixture[str]
) -> None:
    populate(store)
    with store.engine.connect() as connection:
        seqs = list(connection.execute(sa.text("SELECT seq FROM outbox ORDER BY seq")).scalars())
    assert len(seqs) >= 3
    execute(store, f"DELETE FROM outbox WHERE seq = {seqs[1]}")
    report = check(store)
    if store.dialect == "sqlite":
        # AUTOINCREMENT never skips a number: a hole is a deleted event, which no repair brings back.
        assert [f.kind for f in report.findings] == ["outbox gap"]
        assert not report.findings[0].repairable
        assert cli.main(["--db", store.url, "check", "--repair"]) == 1
        assert "cannot be repaired" in capsys.readouterr().out
    else:
        # nextval is not transactional: a hole is a rolled-back write.
        assert report.clean
        assert report.notes == (
            f"outbox: no event {seqs[1]} (numbers taken by rolled-back writes)",
        )


def test_a_pruned_prefix_is_not_a_gap(store: MetaStore) -> None:
    populate(store)
    execute(store, "DELETE FROM outbox WHERE seq < (SELECT max(seq) FROM outbox)")
    assert check(store).clean


def test_a_fresh_cached_answer_is_not_stale(store: MetaStore) -> None:
    populate(store)
    render(store)
    assert check(store).clean
    store.add_instances(instances("1.2.3", "1.2.3.1", count=5))  # the write drops it
    render(store)
    assert check(store).clean
