"""MetaStore.batch(): several writes in one transaction, savepoints, and the batched ingest.

Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import fresh_db_url
from helpers import instance_meta, instances, series_meta
from launch_helpers import launch_instance, launch_study, table_rows, write_launch

from metastore import EVENTS, Event, InvalidMetadata, MetaStore, MetastoreError
from metastore.check import check
from metastore.ingest import files, ingest_launch_file, write_study
from metastore.schema import outbox
from metastore.sources import SourceConfig, StudyMetadata, dicomjson


def feed(store: MetaStore) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    """The change feed without sequence numbers and times."""
    return [
        (str(e.type), e.study_uid, e.series_uid, dict(e.payload))
        for e in store.changes(limit=10_000)
    ]


def test_a_batch_writes_one_event_per_series_and_call_at_commit(store: MetaStore) -> None:
    heard: list[Event] = []
    store.subscribe(EVENTS.INSTANCES_ADDED, heard.append)
    with store.batch() as batch:
        first = store.add_instances(instances(series="1.2.3.1", count=2), source="pacs")
        second = store.add_instances(
            instances(series="1.2.3.2", count=1) + instances(series="1.2.3.3", count=3),
            source="pacs",
        )
        again = store.add_instances(instances(series="1.2.3.1", count=3), source="pacs")
        # Inside the batch: nothing committed, no event handed out yet.
        assert (first.inserted, second.inserted, again.inserted) == (2, 4, 1)
        assert first.events == second.events == again.events == ()
        assert heard == []
    # One INSTANCES_ADDED per series and call, in call order, once committed.
    assert [(e.series_uid, dict(e.payload)) for e in batch.events] == [
        ("1.2.3.1", {**e_payload("1.2.3.1"), "added": 2, "updated": 0}),
        ("1.2.3.2", {**e_payload("1.2.3.2"), "added": 1, "updated": 0}),
        ("1.2.3.3", {**e_payload("1.2.3.3"), "added": 3, "updated": 0}),
        ("1.2.3.1", {**e_payload("1.2.3.1"), "added": 1, "updated": 0}),
    ]
    assert [e.seq for e in heard] == [e.seq for e in batch.events] == sorted(e.seq for e in heard)
    assert store.changes() == batch.events
    study = store.get_study("1.2.3")
    assert study is not None
    assert study["NumberOfStudyRelatedSeries"] == 3
    assert study["NumberOfStudyRelatedInstances"] == 7
    counts = {s["SeriesInstanceUID"]: s["NumberOfSeriesRelatedInstances"] for s in series_of(study)}
    assert counts == {"1.2.3.1": 3, "1.2.3.2": 1, "1.2.3.3": 3}
    assert check(store).clean


def e_payload(series_uid: str) -> dict[str, Any]:
    return {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": series_uid, "source": "pacs"}


def series_of(study: dict[str, Any]) -> list[dict[str, Any]]:
    return [one for listed in study["seriesLists"] for one in listed["series"]]


def test_a_batch_that_raises_leaves_nothing(store: MetaStore) -> None:
    store.add_instances(instances(study="1.2.9", series="1.2.9.1", count=1))
    before, events = table_rows(store), store.changes()
    heard: list[Event] = []
    store.subscribe(EVENTS.INSTANCES_ADDED, heard.append)
    with pytest.raises(RuntimeError), store.batch():
        store.add_instances(instances(count=3))
        store.add_series_metadata([series_meta(series="1.2.3.7")])
        store.add_instances(instances(study="1.2.9", series="1.2.9.1", count=4))
        raise RuntimeError("stop")
    assert table_rows(store) == before
    assert store.changes() == events
    assert heard == []
    # The store works on after it, and knows nothing the batch had learnt.
    result = store.add_instances(instances(count=2))
    assert result.inserted == 2 and len(result.events) == 1
    assert check(store).clean


def test_a_failed_part_is_undone_alone_and_the_batch_goes_on(store: MetaStore) -> None:
    """A nested batch is a savepoint: rows, counts, queued rows and events of the failed
    part go, what came before and after stays, including rows it had flushed."""
    with store.batch() as batch:
        store.add_instances(instances(study="1.2.1", series="1.2.1.1", count=2))
        with pytest.raises(InvalidMetadata), store.batch():
            store.add_instances(instances(study="1.2.2", series="1.2.2.1", count=2))
            # Upserting into 1.2.1.1 writes its queued rows first, inside the savepoint.
            store.add_instances(instances(study="1.2.1", series="1.2.1.1", count=3))
            store.add_series_metadata([series_meta(study="1.2.1", series="1.2.1.9")])
            store.add_instances([instance_meta(study="1.2.2", InstanceNumber="twelve")])
        store.add_instances(instances(study="1.2.3", series="1.2.3.1", count=1))
    assert store.get_study("1.2.2") is None
    first = store.get_study("1.2.1")
    assert first is not None
    assert first["NumberOfStudyRelatedSeries"] == 1
    assert first["NumberOfStudyRelatedInstances"] == 2
    [only] = series_of(first)
    assert only["NumberOfSeriesRelatedInstances"] == len(only["instances"]) == 2
    assert [(e.study_uid, e.series_uid) for e in batch.events] == [
        ("1.2.1", "1.2.1.1"),
        ("1.2.3", "1.2.3.1"),
    ]
    assert store.changes() == batch.events
    assert check(store).clean


def test_other_writes_are_refused_inside_a_batch(store: MetaStore) -> None:
    store.add_instances(instances(study="1.2.9", series="1.2.9.1", count=1))
    with store.batch():
        store.add_instances(instances(count=1))
        with pytest.raises(MetastoreError, match="not inside MetaStore.batch"):
            store.delete_study("1.2.9")
        with pytest.raises(MetastoreError, match="not inside MetaStore.batch"):
            store.register_source("other")
    assert store.study_uids() == ["1.2.3", "1.2.9"]
    assert store.delete_study("1.2.9")


def test_reingest_in_a_batch_writes_nothing(store: MetaStore) -> None:
    store.add_series_metadata([series_meta()], source="pacs")
    store.add_instances(instances(count=3), source="pacs")
    before, events = table_rows(store), store.changes()
    with store.batch() as batch:
        result = store.add_instances(instances(count=3), source="pacs")
        summaries = store.add_series_metadata([series_meta()], source="pacs")
    assert (result.inserted, result.updated, result.unchanged) == (0, 0, 3)
    assert (summaries.inserted, summaries.updated, summaries.unchanged) == (0, 0, 1)
    assert batch.events == []
    assert table_rows(store) == before
    assert store.changes() == events


def launch_file(path: Path, studies: int, series: int) -> Path:
    """Studies of one-instance series (the median IDC series), two modalities each."""
    documents = []
    for number in range(1, studies + 1):
        uid = f"1.2.{number}"
        document = launch_study(uid, series=series, instances=1)
        document["series"][-1]["Modality"] = "SR"
        documents.append(document)
    return write_launch(path, documents)


@pytest.fixture
def second_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Another fresh database at head, beside ``db_url``."""
    return fresh_db_url(backend, tmp_path / "second.db", request)


@pytest.mark.parametrize("batch_instances", [1, 7, 5000])
def test_a_batched_launch_file_writes_what_one_series_at_a_time_writes(
    db_url: str,
    second_db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batch_instances: int,
) -> None:
    path = launch_file(tmp_path / "studies.json", studies=6, series=4)
    # The reference: each series in a transaction of its own, as a worker writes.
    with MetaStore(db_url) as reference:
        reference.register_source("file", "dicomjson", root_url=str(path.absolute()))
        reader = dicomjson.DicomJsonSource(
            SourceConfig(name="file", kind="dicomjson", root=str(path))
        )
        for study in reader.studies():
            assert isinstance(study, StudyMetadata)
            write_study(reference, study, source="file")
        expected_rows, expected_feed = table_rows(reference), feed(reference)
    monkeypatch.setattr(files, "BATCH_INSTANCES", batch_instances)
    with MetaStore(second_db_url) as store:
        summary = ingest_launch_file(store, str(path), source="file")
        assert (summary.studies, summary.series, summary.instances) == (6, 24, 24)
        assert (
            summary.events == 6 + 24
        )  # one SERIES_ADDED per study, one INSTANCES_ADDED per series
        assert table_rows(store) == expected_rows
        assert feed(store) == expected_feed
        assert check(store).clean
        # Ingesting it again writes nothing and announces nothing.
        again = ingest_launch_file(store, str(path), source="file")
        assert (again.inserted, again.updated, again.unchanged, again.events) == (0, 0, 24, 0)
        assert table_rows(store) == expected_rows
        assert feed(store) == expected_feed


def test_a_study_refused_inside_a_batch_is_undone_alone(store: MetaStore, tmp_path: Path) -> None:
    """The store refuses the middle study (its series is indexed under another study): with
    keep_going the others are written whole and announced, the refused one leaves nothing."""
    taken = write_launch(tmp_path / "first.json", [launch_study("1.2.9", series=1, instances=1)])
    ingest_launch_file(store, str(taken), source="file")
    events = len(store.changes())
    bad = launch_study("1.2.5", series=2, instances=2)
    bad["series"][1]["SeriesInstanceUID"] = "1.2.9.1"  # series of study 1.2.9
    for entry in bad["series"][1]["instances"]:
        entry["metadata"]["SeriesInstanceUID"] = "1.2.9.1"
    second = write_launch(
        tmp_path / "second.json",
        [launch_study("1.2.4", series=2, instances=1), bad, launch_study("1.2.6", series=1)],
    )
    summary = ingest_launch_file(store, str(second), source="file", keep_going=True)
    assert summary.studies == 2
    [failure] = summary.failures
    assert failure.study_uid == "1.2.5" and "already indexed under study 1.2.9" in failure.error
    assert store.get_study("1.2.5") is None
    assert store.study_uids() == ["1.2.4", "1.2.6", "1.2.9"]
    written = store.changes()[events:]
    assert {e.study_uid for e in written} == {"1.2.4", "1.2.6"}
    assert summary.events == len(written) == 2 + 3  # SERIES_ADDED x2, INSTANCES_ADDED x3
    with store.engine.connect() as connection:
        studies_in_feed = connection.execute(sa.select(outbox.c.study_uid).distinct()).scalars()
        assert "1.2.5" not in set(studies_in_feed)
    assert check(store).clean


def test_without_keep_going_the_studies_before_a_refused_one_are_kept(
    store: MetaStore, tmp_path: Path
) -> None:
    bad = launch_study("1.2.5", series=1, instances=1)
    bad["series"][0]["instances"].append(
        launch_instance("1.2.5", "1.2.5.1", 2, SOPInstanceUID="1.2.5.1.1" * 10)
    )
    path = write_launch(tmp_path / "file.json", [launch_study("1.2.4", series=1), bad])
    with pytest.raises(InvalidMetadata):
        ingest_launch_file(store, str(path), source="file")
    assert store.study_uids() == ["1.2.4"]
    assert check(store).clean


def test_sqlite_finds_a_series_by_its_uid_not_by_scanning_its_source(tmp_path: Path) -> None:
    # SQLite plans without statistics; a series looked up by source and UID must be found
    # through its UID. With source_id indexed alone, SQLite took that index and scanned
    # every series of the source: the bench_scale ingest 10x slower by 2M instances.
    with MetaStore(f"sqlite:///{tmp_path / 'plan.db'}") as store:
        statements: list[str] = []
        sa.event.listen(
            store.engine,
            "connect",
            lambda dbapi, _record: dbapi.set_trace_callback(statements.append),
        )
        store.engine.dispose()  # every connection from now on is traced
        for n in range(3):
            store.add_instances(instances("1.2.3", f"1.2.3.{n}", 2), source="pacs")
        store.add_instances(instances("1.2.3", "1.2.3.0", 3), source="pacs")  # held already
        looked_up = [sql for sql in statements if "FROM series" in sql]
        assert any(sql.lstrip().startswith("SELECT") for sql in looked_up)
        assert any(sql.lstrip().startswith("WITH") for sql in looked_up)  # the series created
        with store.engine.connect() as connection:
            for sql in looked_up:
                plan = [row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
                on_series = [step for step in plan if step.split()[1] in ("series", "s")]
                assert on_series, (sql, plan)
                assert all("series_uid=" in step for step in on_series), (sql, plan)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_ingests_that_deadlock_are_both_written(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Two launch files with the same two studies in the other order, ingested at once:
    # each batch locks its first study, then waits for the other's. PostgreSQL aborts
    # one batch (a deadlock); its studies are written again, one at a time.
    first, second = launch_study("1.2.71", series=2, instances=2), launch_study("1.2.72")
    paths = {
        "one": write_launch(tmp_path / "one.json", [first, second]),
        "two": write_launch(tmp_path / "two.json", [second, first]),
    }
    both_hold_one = threading.Barrier(2, timeout=30)
    waited: set[str] = set()
    original = files.write_study

    def write_then_meet(store: MetaStore, study: StudyMetadata, **kwargs: Any) -> dict[str, int]:
        counts = original(store, study, **kwargs)
        name = threading.current_thread().name
        if name not in waited:  # once: after the first study, its locks held
            waited.add(name)
            both_hold_one.wait()
        return counts

    monkeypatch.setattr(files, "write_study", write_then_meet)
    results: dict[str, Any] = {}

    def ingest(name: str) -> None:
        try:
            with MetaStore(db_url) as store:
                results[name] = ingest_launch_file(store, str(paths[name]), source=name)
        except Exception as err:  # reported below
            results[name] = err

    caplog.set_level(logging.INFO, logger="metastore.ingest.files")
    threads = [threading.Thread(target=ingest, args=(name,), name=name) for name in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(not isinstance(result, Exception) for result in results.values()), results
    assert "lost to another writer" in caplog.text  # the deadlock happened, and was overcome
    for name, summary in results.items():
        assert (summary.studies, summary.series, summary.instances) == (2, 4, 10), name
        assert summary.events == 2 + 4, name  # each series announced once, by its source
    with MetaStore(db_url) as store:
        announced = Counter(
            (e.source, e.series_uid) for e in store.changes(limit=100) if e.series_uid
        )
        assert set(announced.values()) == {1} and len(announced) == 8
        for uid in ("1.2.71", "1.2.72"):
            study = store.get_study(uid)
            assert study is not None
            assert sorted(one["source"] for one in study["seriesLists"]) == ["one", "two"]
        assert check(store).clean
