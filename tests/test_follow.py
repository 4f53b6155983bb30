"""``metastore follow orthanc``: a real Orthanc's /changes followed into the index."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sync_helpers import events_after, study_files, uid_of

from metastore import EVENTS, MetaStore
from metastore.errors import SourceUnavailable
from metastore.ingest.follow import Follower, follow
from metastore.sources.dicomweb import dicomweb_config
from metastore.sources.feeds import open_feed

SOURCE = "pacs"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def has_event(db_url: str, kind: str, study_uid: str) -> Callable[[], bool]:
    def check() -> bool:
        with MetaStore(db_url) as store:
            return any(e.type == kind and e.study_uid == study_uid for e in events_after(store, 0))

    return check


def has_events(db_url: str, kind: str, study_uid: str, count: int) -> Callable[[], bool]:
    def check() -> bool:
        with MetaStore(db_url) as store:
            found = [e for e in events_after(store, 0) if e.type == kind]
            return sum(1 for e in found if e.study_uid == study_uid) >= count

    return check


@contextmanager
def following(db_url: str, base: str, root: str) -> Iterator[None]:
    stop = threading.Event()
    with MetaStore(db_url) as store, open_feed("orthanc", base, name=SOURCE) as feed:
        thread = threading.Thread(
            target=follow,
            args=(store, feed, dicomweb_config(root, name=SOURCE)),
            kwargs={"stop": stop, "poll": 0.2},
        )
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=60)
    assert not thread.is_alive()


def test_the_follower_sees_a_new_study_and_a_deletion(db_url: str, archive) -> None:
    files = study_files(series=2, instances=2)
    uid = uid_of(files)
    with following(db_url, archive.base, archive.root):
        archive.upload(files)
        wait_for(has_event(db_url, EVENTS.INSTANCES_ADDED, uid), "the new study indexed")
        archive.delete("studies", uid)
        wait_for(has_event(db_url, EVENTS.STUDY_DELETED, uid), "the deletion announced")
    with MetaStore(db_url) as store:
        assert store.get_study(uid) is None
        kinds = Counter(e.type for e in events_after(store, 0))
    assert kinds == {EVENTS.SERIES_ADDED: 1, EVENTS.INSTANCES_ADDED: 2, EVENTS.STUDY_DELETED: 1}


def test_a_crash_before_the_cursor_is_saved_repeats_no_event(
    db_url: str, archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = study_files(series=1, instances=3)
    archive.upload(files)
    with archive.client() as client:
        wait_for(
            lambda: any(
                c["ChangeType"] == "StableStudy" for c in client.get("/changes").json()["Changes"]
            ),
            "Orthanc calls the study stable",
        )
    config = dicomweb_config(archive.root, name=SOURCE)
    with MetaStore(db_url) as store, open_feed("orthanc", archive.base, name=SOURCE) as feed:
        first = Follower(store, feed, config, lease=0.5)
        assert first.acquire()

        def crash(position: str | None) -> None:
            raise SourceUnavailable("killed before the cursor was saved")

        monkeypatch.setattr(first, "_save", crash)
        with pytest.raises(SourceUnavailable):
            first.step()  # queued the study, did not save the cursor, did not pull
        monkeypatch.setattr(first, "release", lambda: None)  # a dead process releases nothing
        first.close()
        second = Follower(store, feed, config)
        time.sleep(0.6)  # the dead one's lease runs out
        assert second.acquire() and second.position is None
        for _ in range(3):
            step, done = second.step()
            if done and not step.changes:
                break
        second.close()
        events = Counter((e.type, e.series_uid) for e in events_after(store, 0))
        assert second.position is not None and int(second.position) > 0
    assert sum(n for (kind, _s), n in events.items() if kind == EVENTS.INSTANCES_ADDED) == 1
    assert all(n == 1 for n in events.values())


def test_killed_and_restarted_it_neither_misses_nor_repeats(db_url: str, archive) -> None:
    env = {**os.environ, "METASTORE_DATABASE_URL": db_url}
    command = [sys.executable, "-m", "metastore.cli", "follow", "orthanc", archive.base]
    command += ["--source", SOURCE, "--poll", "0.2", "--lease", "3"]
    first, second = study_files(series=2, instances=2), study_files(series=1, instances=2)
    first_uid, second_uid = uid_of(first), uid_of(second)

    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    try:
        archive.upload(first)
        wait_for(has_events(db_url, EVENTS.INSTANCES_ADDED, first_uid, 2), "the first study")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    # While it is dead: a new study, and the first one deleted.
    archive.upload(second)
    archive.delete("studies", first_uid)
    time.sleep(2)  # both are in Orthanc's feed before the follower is back
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE)
    try:
        wait_for(has_event(db_url, EVENTS.INSTANCES_ADDED, second_uid), "the second study", 90)
        wait_for(has_event(db_url, EVENTS.STUDY_DELETED, first_uid), "the deletion", 90)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0
    with MetaStore(db_url) as store:
        events = events_after(store, 0)
        assert store.get_study(first_uid) is None and store.get_study(second_uid) is not None
    per_event = Counter((e.type, e.study_uid, e.series_uid) for e in events)
    assert all(n == 1 for n in per_event.values()), per_event
    kinds = Counter(e.type for e in events)
    assert kinds == {EVENTS.SERIES_ADDED: 2, EVENTS.INSTANCES_ADDED: 3, EVENTS.STUDY_DELETED: 1}
