"""``metastore sync``: against a real Orthanc, a sync pulls only what changed and prunes what is gone."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sync_helpers import Recorder, events_after, last_seq, study_files, uid_of

from metastore import EVENTS, MetaStore
from metastore.ingest import JobQueue
from metastore.ingest.sync import sync_source
from metastore.sources.dicomweb import dicomweb_config

SOURCE = "pacs"


def _sync(db_url: str, root: str, **options: object) -> object:
    return sync_source(db_url, dicomweb_config(root, name=SOURCE), **options)  # type: ignore[arg-type]


def test_a_sync_pulls_exactly_what_changed_and_prunes_what_is_gone(
    db_url: str,
    archive,
    recorder: Recorder,
) -> None:
    studies = {
        name: study_files(series=series, instances=2)
        for name, series in (
            ("grows", 1),
            ("deleted", 1),
            ("same", 2),
            ("shared", 1),
            ("shrinks", 2),
        )
    }
    for files in studies.values():
        archive.upload(files)
    uid = {name: uid_of(files) for name, files in studies.items()}

    first = _sync(db_url, archive.root)
    assert (first.new, first.changed, first.unchanged, first.gone) == (5, 0, 0, 0)
    assert first.ingest is not None and first.ingest.studies == 5

    with MetaStore(db_url) as store:
        # Another source holds "shared" too: its removal from pacs is a series-level event.
        copy = store.get_study(uid["shared"])
        assert copy is not None
        held = copy["seriesLists"][0]["series"]
        store.add_series_metadata(
            [{k: v for k, v in s.items() if k != "instances"} for s in held], source="mirror"
        )
        store.add_instances([i for s in held for i in s["instances"]], source="mirror")
        before = last_seq(store)

    added = study_files(series=1, instances=3, study_uid=uid["grows"])
    archive.upload(added)
    new_study = study_files(series=2, instances=2)
    archive.upload(new_study)
    archive.delete("studies", uid["deleted"])
    archive.delete("studies", uid["shared"])
    shrunk_series = uid_of(studies["shrinks"][2:], "SeriesInstanceUID")
    archive.delete("series", shrunk_series)
    recorder.requests.clear()

    second = _sync(db_url, archive.root, prune=True)
    assert (second.new, second.changed, second.unchanged, second.gone) == (1, 2, 1, 2)

    # Requests: the crawl, a direct look at each unlisted study, and for the
    # new and changed studies their series and only the series that differ.
    new_uid = uid_of(new_study)
    metadata = sorted(recorder.paths("/metadata"))
    wanted = [uid_of(added, "SeriesInstanceUID")] + [
        uid_of(new_study[i:], "SeriesInstanceUID") for i in (0, 2)
    ]
    assert metadata == sorted(
        f"/dicom-web/studies/{s}/series/{r}/metadata"
        for s, r in [(uid["grows"], wanted[0]), (new_uid, wanted[1]), (new_uid, wanted[2])]
    )
    series_searches = sorted(recorder.paths("/series"))
    assert series_searches == sorted(
        f"/dicom-web/studies/{s}/series"
        for s in (uid["grows"], uid["grows"], new_uid, new_uid, uid["shrinks"], uid["shrinks"])
    )  # each paged until an empty page
    assert not any(uid["same"] in path for path in recorder.paths())
    looks = [  # the direct look-ups by UID (the attributes asked for aside)
        re.sub(r"&includefield=[^&]*", "", q)
        for _m, p, q in recorder.requests
        if p == "/dicom-web/studies" and q.startswith("StudyInstanceUID=")
    ]
    assert sorted(looks) == sorted(
        f"StudyInstanceUID={uid[name]}&limit=1&offset=0" for name in ("deleted", "shared")
    )

    with MetaStore(db_url) as store:
        events = events_after(store, before)
        assert store.get_study(uid["deleted"]) is None
        shared = store.get_study(uid["shared"])
        assert shared is not None and [x["source"] for x in shared["seriesLists"]] == ["mirror"]
        grown = store.get_study(uid["grows"])
        assert grown is not None and grown["NumberOfStudyRelatedInstances"] == 5
        shrunk = store.get_study(uid["shrinks"])
        assert shrunk is not None and shrunk["NumberOfStudyRelatedSeries"] == 1
    by_type = {(e.type, e.study_uid) for e in events}
    assert (EVENTS.STUDY_DELETED, uid["deleted"]) in by_type
    assert (EVENTS.SERIES_REMOVED, uid["shared"]) in by_type
    assert (EVENTS.SERIES_REMOVED, uid["shrinks"]) in by_type
    removed = next(
        e for e in events if e.type == EVENTS.SERIES_REMOVED and e.study_uid == uid["shrinks"]
    )
    assert removed.payload["SeriesInstanceUIDs"] == [shrunk_series]
    assert removed.source == SOURCE
    assert not any(e.study_uid == uid["same"] for e in events)
    instances_added = sorted(e.series_uid for e in events if e.type == EVENTS.INSTANCES_ADDED)
    assert instances_added == sorted(wanted)

    # Nothing changed since: the next sync is the crawl alone, and writes nothing.
    recorder.requests.clear()
    third = _sync(db_url, archive.root, prune=True)
    assert (third.new, third.changed, third.unchanged, third.gone) == (0, 0, 4, 0)
    assert third.ingest is None and third.queued == 0
    assert [p for _m, p, _q in recorder.requests] == ["/dicom-web/studies"] * 2
    with MetaStore(db_url) as store:
        assert len(events_after(store, before)) == len(events)


def test_a_study_outside_the_query_is_never_pruned(
    db_url: str,
    archive,
    recorder: Recorder,
) -> None:
    kept, other = study_files(series=1, instances=1), study_files(series=1, instances=1)
    archive.upload(kept)
    archive.upload(other)
    assert _sync(db_url, archive.root).new == 2
    narrowed = _sync(db_url, archive.root, prune=True, query={"StudyInstanceUID": uid_of(other)})
    assert (narrowed.unchanged, narrowed.unlisted, narrowed.gone) == (1, 1, 0)
    with MetaStore(db_url) as store:
        assert store.get_study(uid_of(kept)) is not None


def test_an_unreachable_archive_prunes_nothing(db_url: str, archive) -> None:
    files = study_files(series=1, instances=1)
    archive.upload(files)
    root = archive.root
    _sync(db_url, root)
    archive.stop()
    with pytest.raises(Exception, match="failed|refused|timed out"):
        _sync(db_url, root, prune=True)
    with MetaStore(db_url) as store:
        assert store.get_study(uid_of(files)) is not None


def test_a_sync_queued_twice_is_one_job(db_url: str) -> None:
    with MetaStore(db_url) as store:
        store.register_source(SOURCE, "dicomweb", root_url="http://127.0.0.1:9/dicom-web")
        queue = JobQueue(store)
        units = [(f"1.2.3.{i}", {"changed_series": True}) for i in range(5)]
        queue.enqueue(SOURCE, units)
        queue.enqueue(SOURCE, units[:3])  # a follower announces the same studies
        assert sum(queue.counts(SOURCE).values()) == 5
        job = queue.claim("w1", lease=60)
        assert job is not None
        queue.enqueue(SOURCE, [(job.unit, {})])  # queued again while the worker holds it
        assert queue.complete(job, "w1")
        again = [j for _s, j in queue.jobs(source=SOURCE) if j.unit == job.unit]
        assert [j.state for j in again] == ["queued"]
        claimed = []
        while (next_job := queue.claim("w1", lease=60)) is not None:
            claimed.append(next_job.unit)
            assert queue.complete(next_job, "w1")
        assert sorted(claimed) == sorted(unit for unit, _params in units)  # it came back once
        assert queue.counts(SOURCE)["done"] == 5


def test_sync_every_stops_on_sigterm(db_url: str, archive, tmp_path: Path) -> None:
    archive.upload(study_files(series=1, instances=1))
    env = {**os.environ, "METASTORE_DATABASE_URL": db_url}
    command = [sys.executable, "-m", "metastore.cli", "sync", "dicomweb", archive.root]
    process = subprocess.Popen(
        [*command, "--source", SOURCE, "--every", "0.3", "--prune"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("unchanged 1" in line for line in lines):
        lines.append(process.stdout.readline())
    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert lines[0].startswith(f"{SOURCE}: new 1, changed 0, unchanged 0, gone 0")
    assert any(
        line.startswith(f"{SOURCE}: new 0, changed 0, unchanged 1, gone 0") for line in lines
    )


def test_a_sync_racing_a_follower_makes_one_job_per_study(db_url: str) -> None:
    units = [(f"1.2.3.{i}", {"changed_series": True}) for i in range(200)]
    with MetaStore(db_url) as store:
        store.register_source(SOURCE, "dicomweb", root_url="http://127.0.0.1:9/dicom-web")
    barrier = threading.Barrier(3)

    def enqueue(order: list[tuple[str, dict[str, bool]]]) -> None:
        with MetaStore(db_url) as store:
            barrier.wait()
            for start in range(0, len(order), 20):
                JobQueue(store).enqueue(SOURCE, order[start : start + 20])

    threads = [
        threading.Thread(target=enqueue, args=(order,))
        for order in (units, units[::-1], units[::2] + units[1::2])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with MetaStore(db_url) as store:
        jobs = JobQueue(store).jobs(source=SOURCE, limit=1000)
    assert sorted(job.unit for _s, job in jobs) == sorted(unit for unit, _p in units)
