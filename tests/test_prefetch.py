"""Workers that read ahead: faults in a prefetched read, a stop mid-read, the memory bound.

The archive is a small DICOMweb answered through httpx.MockTransport (to
inject faults where a real server cannot); the databases are real. The
normal path against a real Orthanc is at the end, on both engines.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from servers import Orthanc

from metastore import EVENTS, MetaStore
from metastore.ingest import JobQueue, Worker, enqueue_studies, ingest_source
from metastore.ingest.prefetch import DEFAULT_DEPTH, Prefetcher
from metastore.ingest.worker import INSTANCES_PER_CALL
from metastore.schema import ingest_jobs, outbox
from metastore.sources import SourceConfig, register
from metastore.sources.dicomweb import DicomWebSource, dicomweb_config

ROOT = "http://archive.test/dicom-web"
STUDIES = 3
SERIES = 3
INSTANCES = 4
Fault = Callable[[str], httpx.Response | None]


def _uid(*parts: int) -> str:
    return "1.2.826.0.1.3680043.9." + ".".join(str(p) for p in parts)


def _json(data: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status, content=orjson.dumps(data), headers={"Content-Type": "application/dicom+json"}
    )


class Archive:
    """A DICOMweb archive of STUDIES x SERIES x INSTANCES, answering through MockTransport.

    ``fault(path)`` may answer a request instead (or raise); ``requests``
    lists the paths asked, in order.
    """

    def __init__(self) -> None:
        self.fault: Fault = lambda path: None
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/dicom-web")
        with self.lock:
            self.requests.append(path)
        answer = self.fault(path)
        if answer is not None:
            return answer
        parts = path.strip("/").split("/")
        offset = int(request.url.params.get("offset", "0"))
        if parts == ["studies"]:
            rows = [{"0020000D": {"vr": "UI", "Value": [_uid(s)]}} for s in range(STUDIES)]
            return _json(rows[offset:])
        study = int(parts[1].rsplit(".", 1)[1])
        if len(parts) == 3:  # the series of a study
            rows = [
                {
                    "0020000E": {"vr": "UI", "Value": [_uid(study, r)]},
                    "00080060": {"vr": "CS", "Value": ["CT"]},
                }
                for r in range(SERIES)
            ]
            return _json(rows[offset:])
        series = int(parts[3].rsplit(".", 1)[1])
        return _json(
            [
                {
                    "0020000D": {"vr": "UI", "Value": [_uid(study)]},
                    "0020000E": {"vr": "UI", "Value": [_uid(study, series)]},
                    "00080018": {"vr": "UI", "Value": [_uid(study, series, n)]},
                    "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                    "00200013": {"vr": "IS", "Value": [n]},
                }
                for n in range(INSTANCES)
            ]
        )


@pytest.fixture
def archive(store: MetaStore) -> Iterator[Archive]:
    """The archive registered as the source ``archive`` (kind ``mockweb``), its studies queued."""
    made = Archive()

    def factory(config: SourceConfig) -> DicomWebSource:
        return DicomWebSource(config, transport=httpx.MockTransport(made))

    register("mockweb", factory)
    settings = {"retries": 1, "backoff": 0.01}
    store.register_source("archive", "mockweb", root_url=ROOT, settings=settings)
    config = SourceConfig(name="archive", kind="mockweb", root=ROOT, settings=settings)
    with factory(config) as source:
        assert enqueue_studies(store, source) == STUDIES
    yield made


def events(store: MetaStore) -> Counter[tuple[str, str, str | None, str]]:
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(outbox)).all()
    return Counter((row.event_type, row.study_uid, row.series_uid, row.source) for row in rows)


def assert_all_stored_once(store: MetaStore) -> None:
    """Every series of the archive, each announced exactly once."""
    seen = events(store)
    wanted = {_uid(s, r) for s in range(STUDIES) for r in range(SERIES)}
    assert {uid for kind, _, uid, _ in seen if kind == "INSTANCES_ADDED"} == wanted
    assert set(seen.values()) == {1}, "an event was written twice"
    for s in range(STUDIES):
        study = store.get_study(_uid(s))
        assert study is not None
        (listing,) = study["seriesLists"]
        assert sorted(len(one["instances"]) for one in listing["series"]) == [INSTANCES] * SERIES


def jobs(store: MetaStore) -> dict[str, Any]:
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(ingest_jobs)).mappings().all()
    return {row["unit"]: row for row in rows}


def test_a_prefetched_read_that_times_out_is_retried_with_its_job(
    store: MetaStore, archive: Archive
) -> None:
    timeouts = {"left": 2}  # the first try and the source's one retry

    def fault(path: str) -> httpx.Response | None:
        if path.endswith(f"{_uid(1, 2)}/metadata") and timeouts["left"]:
            timeouts["left"] -= 1
            raise httpx.ReadTimeout("the archive is slow")
        return None

    archive.fault = fault
    worker = Worker(store, source="archive", lease=30, poll=0.01, backoff=0.01, prefetch=2)
    stats = worker.run(once=True)
    assert (stats.studies, stats.retries, stats.failures) == (STUDIES, 1, 0)
    found = jobs(store)
    assert found[_uid(1)]["attempts"] == 2 and found[_uid(1)]["state"] == "done"
    assert {found[_uid(s)]["attempts"] for s in (0, 2)} == {1}
    assert_all_stored_once(store)


def test_a_prefetched_series_the_archive_refuses_is_recorded_then_pulled_alone(
    store: MetaStore, archive: Archive
) -> None:
    refused = f"/studies/{_uid(2)}/series/{_uid(2, 0)}/metadata"
    archive.fault = lambda path: _json({"error": "gone"}, 404) if path == refused else None
    stats = Worker(store, source="archive", lease=30, poll=0.01, prefetch=2).run(once=True)
    assert stats.failures == 1
    job = jobs(store)[_uid(2)]
    assert job["state"] == "failed"
    assert [part["series"] for part in job["failed_parts"]] == [_uid(2, 0)]
    assert "404" in job["failed_parts"][0]["error"]
    study = store.get_study(_uid(2))
    assert study is not None
    held = sorted(len(one["instances"]) for one in study["seriesLists"][0]["series"])
    assert held == [0] + [INSTANCES] * (SERIES - 1)  # the lost series is listed, empty
    # Queued again, the job asks only for the series it could not read.
    archive.fault = lambda path: None
    archive.requests.clear()
    JobQueue(store).enqueue("archive", [(_uid(2), {})])
    stats = Worker(store, source="archive", lease=30, poll=0.01, prefetch=2).run(once=True)
    assert stats.failures == 0
    assert [p for p in archive.requests if p.endswith("/metadata")] == [refused]
    assert_all_stored_once(store)


@pytest.mark.parametrize("depth", [0, DEFAULT_DEPTH])
def test_what_reading_a_series_rejects_and_normalizes_is_its_own_jobs(
    store: MetaStore, archive: Archive, depth: int
) -> None:
    # Reading ahead, a series is fetched on the reading thread and read into instances
    # on the writing one: what that reading finds is still the series' job's, and only its.
    quirky = f"/studies/{_uid(1)}/series/{_uid(1, 0)}/metadata"

    def fault(path: str) -> httpx.Response | None:
        if path != quirky:
            return None
        base = {
            "0020000D": {"vr": "UI", "Value": [_uid(1)]},
            "0020000E": {"vr": "UI", "Value": [_uid(1, 0)]},
            "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
        }
        return _json(
            [
                {**base, "00200013": {"vr": "IS", "Value": [0]}},  # no SOPInstanceUID
                {
                    **base,
                    "00080018": {"vr": "UI", "Value": [_uid(1, 0, 1)]},
                    "00080023": {"vr": "DA", "Value": ["2024.01.02"]},  # the old form
                },
            ]
        )

    archive.fault = fault
    stats = Worker(store, source="archive", lease=30, poll=0.01, prefetch=depth).run(once=True)
    assert stats.studies == STUDIES and len(stats.failures) == 1  # stored, partly
    assert dict(stats.quirks) == {"DA old form": 1}
    found = jobs(store)
    assert [found[_uid(s)]["state"] for s in range(STUDIES)] == ["done", "failed", "done"]
    (part,) = found[_uid(1)]["failed_parts"]
    assert (part["series"], part["instance"]) == (_uid(1, 0), "[0]")
    assert "no SOPInstanceUID" in part["error"]
    study = store.get_study(_uid(1))
    assert study is not None
    held = sorted(len(one["instances"]) for one in study["seriesLists"][0]["series"])
    assert held == [1] + [INSTANCES] * (SERIES - 1)


@pytest.mark.parametrize("depth", [0, DEFAULT_DEPTH])
def test_small_series_written_together_still_lose_only_what_the_index_refuses(
    store: MetaStore, archive: Archive, depth: int
) -> None:
    # A study's series go to the database together; an instance the index refuses
    # (a UID over 64 characters) costs that instance only, a series left empty is not
    # announced, and every other series gets its one INSTANCES_ADDED.
    def series_answer(series: int, sops: list[str]) -> httpx.Response:
        return _json(
            [
                {
                    "0020000D": {"vr": "UI", "Value": [_uid(1)]},
                    "0020000E": {"vr": "UI", "Value": [_uid(1, series)]},
                    "00080018": {"vr": "UI", "Value": [sop]},
                    "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                }
                for sop in sops
            ]
        )

    bad, worse = "1.2." + "3" * 70, "1.2." + "4" * 70
    answers = {
        f"/studies/{_uid(1)}/series/{_uid(1, 0)}/metadata": series_answer(0, [_uid(1, 0, 0), bad]),
        f"/studies/{_uid(1)}/series/{_uid(1, 1)}/metadata": series_answer(1, [worse]),
    }
    archive.fault = answers.get
    stats = Worker(store, source="archive", lease=30, poll=0.01, prefetch=depth).run(once=True)
    assert stats.studies == STUDIES and stats.series == STUDIES * SERIES - 1
    job = jobs(store)[_uid(1)]
    assert job["state"] == "failed"
    refused = sorted((part["series"], part["instance"]) for part in job["failed_parts"])
    assert refused == [(_uid(1, 0), bad), (_uid(1, 1), worse)]
    assert all("refused by the index" in part["error"] for part in job["failed_parts"])
    study = store.get_study(_uid(1))
    assert study is not None
    held = {
        one["SeriesInstanceUID"]: len(one["instances"]) for one in study["seriesLists"][0]["series"]
    }
    assert held == {_uid(1, 0): 1, _uid(1, 1): 0, _uid(1, 2): INSTANCES}
    added = [uid for kind, _, uid, _ in events(store) if kind == "INSTANCES_ADDED"]
    assert sorted(added) == sorted(
        {_uid(s, r) for s in range(STUDIES) for r in range(SERIES)} - {_uid(1, 1)}
    )


def test_a_worker_stopped_mid_read_gives_back_what_it_claimed_ahead(
    store: MetaStore, archive: Archive
) -> None:
    stop = threading.Event()
    reading_ahead = threading.Event()

    def fault(path: str) -> httpx.Response | None:
        if path.startswith(f"/studies/{_uid(1)}/series/") and path.endswith("/metadata"):
            reading_ahead.set()  # the worker is still writing study 0
            assert stop.wait(30)
        return None

    archive.fault = fault

    def slow_write(event: Any) -> None:
        if event.series_uid == _uid(0, SERIES - 1):  # study 0's last series is written
            assert reading_ahead.wait(30), "study 1 was never read ahead"
            stop.set()

    store.subscribe(EVENTS.INSTANCES_ADDED, slow_write)
    worker = Worker(store, source="archive", lease=30, poll=0.01, prefetch=2)
    stats = worker.run(stop=stop)
    assert stats.studies == 1  # the study being written is finished
    found = jobs(store)
    assert found[_uid(0)]["state"] == "done"
    for s in (1, 2):  # claimed ahead (one of them half read): back in the queue as they were
        job = found[_uid(s)]
        assert (job["state"], job["attempts"], job["lease_owner"]) == ("queued", 0, None)
        assert store.get_study(_uid(s)) is None
    # Another worker takes them at once, as first attempts.
    again = Worker(store, source="archive", lease=30, poll=0.01, prefetch=2).run(once=True)
    assert again.studies == 2
    assert {job["attempts"] for job in jobs(store).values()} == {1}
    assert_all_stored_once(store)


@pytest.mark.parametrize("depth", [1, 3])
def test_reading_ahead_holds_at_most_prefetch_series(
    store: MetaStore, archive: Archive, depth: int
) -> None:
    written = {"series": 0}
    ahead: list[int] = []
    started = {"series": 0}

    def fault(path: str) -> httpx.Response | None:
        if path.endswith("/metadata"):
            started["series"] += 1
            ahead.append(started["series"] - written["series"])
        return None

    def slow_write(_event: Any) -> None:
        time.sleep(0.03)  # a slow database: reading runs as far ahead as it may
        written["series"] += 1

    archive.fault = fault
    store.subscribe(EVENTS.INSTANCES_ADDED, slow_write)
    stats = Worker(store, source="archive", lease=30, poll=0.01, prefetch=depth).run(once=True)
    assert stats.studies == STUDIES
    # Read or being read: at most `depth` waiting, plus those being written: a study's
    # small series go to the database together (SERIES x INSTANCES <= INSTANCES_PER_CALL).
    assert SERIES * INSTANCES <= INSTANCES_PER_CALL
    assert max(ahead) == depth + SERIES
    assert_all_stored_once(store)


def test_a_prefetcher_refuses_depth_zero() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Prefetcher(0)


def test_the_cli_default_is_the_library_default() -> None:
    from metastore.cli import build_parser

    args = build_parser().parse_args(["worker"])
    assert args.prefetch == DEFAULT_DEPTH


# -- the normal path, against a real Orthanc ------------------------------------------


def test_reading_ahead_stores_what_reading_in_line_stores(orthanc: Orthanc, db_url: str) -> None:
    headers = {"Authorization": orthanc.authorization}
    pulled = {}
    for name, depth in (("inline", 0), ("ahead", DEFAULT_DEPTH)):
        config = dicomweb_config(orthanc.root, name=name, headers=headers)
        pulled[name] = ingest_source(db_url, config, workers=1, lease=30, prefetch=depth)
        assert not pulled[name].failures
    assert pulled["ahead"].instances == pulled["inline"].instances
    with orthanc.server.client() as client:
        assert pulled["ahead"].instances == client.get("/statistics").json()["CountInstances"]
    with MetaStore(db_url) as store:
        seen = events(store)
        assert set(seen.values()) == {1}
        by_source = Counter(source for _, _, _, source in seen)
        assert by_source["ahead"] == by_source["inline"] > 0
        with store.engine.connect() as connection:
            uids = connection.execute(sa.text("SELECT study_uid FROM studies")).scalars().all()
        for uid in uids:
            study = store.get_study(uid)
            assert study is not None
            lists = {one["source"]: one["series"] for one in study["seriesLists"]}
            assert lists["ahead"] == lists["inline"]
