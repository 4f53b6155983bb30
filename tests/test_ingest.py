"""The job queue and its workers: leases, retries, failures, custom sources, processes, kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import DATA, read_gz, series_meta
from helpers import instances as instance_metas

from metastore import MetaStore
from metastore.errors import LeaseLost, SourceUnavailable, UnknownSource
from metastore.ingest import JobQueue, Worker, enqueue_studies
from metastore.ingest.write import write_study
from metastore.schema import ingest_jobs, instances, outbox, series, studies
from metastore.sources import SourceConfig, StudyMetadata, kinds, open_source, register

# A source kind of its own package, found through the metastore.sources entry point.
PLUGIN = textwrap.dedent(
    '''
    """A test source kind: a static DICOMweb tree read from local files, optionally slowly."""
    import gzip
    import time
    from pathlib import Path

    import orjson

    from metastore import naturalize
    from metastore.matching import parse_query


    class TreeSource:
        thread_safe = True  # files read from any thread: workers read ahead

        def __init__(self, config):
            self.config = config
            self.root = Path(config.root)
            self.delay = float(config.settings.get("delay", 0))

        def _read(self, *parts):
            return orjson.loads(gzip.decompress(self.root.joinpath(*parts).read_bytes()))

        def search_studies(self, query=None):
            rows = (naturalize(r) for r in self._read("studies", "index.json.gz"))
            return [dict(r) for r in parse_query(query).filter(rows)]

        def search_series(self, study_uid):
            return [naturalize(r) for r in self._read("studies", study_uid, "series", "index.json.gz")]

        def retrieve_series_metadata(self, study_uid, series_uid):
            time.sleep(self.delay)
            out = []
            for item in self._read("studies", study_uid, "series", series_uid, "metadata.gz"):
                meta = naturalize(item)
                meta["url"] = f"file://{self.root}/{study_uid}/{series_uid}/{meta['SOPInstanceUID']}"
                out.append(meta)
            return out

        def get_image_ids(self, instance):
            return [instance["url"]]

        def close(self):
            pass
    '''
)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding an installed test package that registers the kind ``tree``."""
    site = tmp_path_factory.mktemp("site")
    (site / "metastore_treesource").mkdir()
    (site / "metastore_treesource" / "__init__.py").write_text(PLUGIN)
    info = site / "metastore_treesource-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: metastore-treesource\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[metastore.sources]\ntree = metastore_treesource:TreeSource\n"
    )
    return site


@pytest.fixture
def plugin(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(plugin_site))
    return plugin_site


def tree_totals() -> tuple[list[str], int, int]:
    studies = sorted(r["0020000D"]["Value"][0] for r in read_gz(DATA / "studies" / "index.json.gz"))
    n_series = n_instances = 0
    for path in (DATA / "studies").glob("*/series/*/metadata.gz"):
        n_series += 1
        n_instances += len(read_gz(path))
    return studies, n_series, n_instances


def queue_tree(store: MetaStore, delay: float = 0.0, max_attempts: int = 5) -> int:
    config = SourceConfig(name="tree", kind="tree", root=str(DATA), settings={"delay": delay})
    store.register_source("tree", "tree", root_url=str(DATA), settings={"delay": delay})
    with closing(open_source(config)) as source:
        return enqueue_studies(store, source, max_attempts=max_attempts)


def count(store: MetaStore, query: Any) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def assert_complete_exactly_once(store: MetaStore) -> None:
    """Every study, series and instance of the tree, each announced exactly once."""
    studies, n_series, n_instances = tree_totals()
    assert JobQueue(store).counts("tree")["done"] == len(studies)
    assert count(store, sa.select(sa.func.count()).select_from(instances)) == n_instances
    assert count(store, sa.select(sa.func.sum(series.c.num_instances))) == n_instances
    with store.engine.connect() as connection:
        events = Counter(
            (row.event_type, row.study_uid, row.series_uid)
            for row in connection.execute(sa.select(outbox))
        )
    series_added = [k for k in events if k[0] == "SERIES_ADDED"]
    instances_added = [k for k in events if k[0] == "INSTANCES_ADDED"]
    assert sorted(k[1] for k in series_added) == studies
    assert len(instances_added) == n_series
    assert set(events.values()) == {1}, "an event was written twice"


# -- the queue ------------------------------------------------------------------


def test_entry_point_kind_is_found(plugin: Path) -> None:
    assert "tree" in kinds()


def test_enqueue_needs_a_registered_source(store: MetaStore) -> None:
    with pytest.raises(UnknownSource, match="nope"):
        JobQueue(store).enqueue("nope", [("1.2.3", {})])


def test_leases_claims_and_requeue(store: MetaStore) -> None:
    store.register_source("s", "dicomweb", root_url="http://x")
    queue = JobQueue(store)
    assert queue.enqueue("s", [("1.2.3", {"a": 1}), ("1.2.3", {"a": 2})]) == 1
    job = queue.claim("w1", lease=30)
    assert job is not None and job.unit == "1.2.3" and job.params == {"a": 2}
    assert job.attempts == 1 and job.state == "running" and job.lease_owner == "w1"
    assert queue.claim("w2", lease=30) is None  # held
    assert queue.enqueue("s", [("1.2.3", {})]) == 0  # a live job is left alone
    queue.renew(job, "w1", lease=0.01)
    time.sleep(0.05)
    taken = queue.claim("w2", lease=30)
    assert taken is not None and taken.id == job.id and taken.attempts == 2
    with pytest.raises(LeaseLost):
        queue.renew(job, "w1", lease=30)
    assert not queue.complete(job, "w1")
    assert queue.retry_later(taken, "w2", "SourceUnavailable: busy", delay=60)
    assert queue.claim("w3", lease=30) is None  # not due yet
    (listed,) = queue.jobs(state="queued")
    assert listed[0] == "s" and listed[1].last_error == "SourceUnavailable: busy"
    # A re-run queues it afresh, due now.
    assert queue.enqueue("s", [("1.2.3", {})]) == 1
    again = queue.claim("w3", lease=30)
    assert again is not None and again.attempts == 1 and again.last_error is None
    assert queue.complete(again, "w3")
    assert queue.counts("s") == {"queued": 0, "running": 0, "done": 1, "failed": 0}


class Flaky:
    """A registered source kind that fails as told (in-process tests)."""

    failures: list[Exception] = []

    def __init__(self, config: SourceConfig) -> None:
        self.config = config

    def search_studies(self, query: Any = None) -> Iterator[dict[str, Any]]:
        return iter([])

    def search_series(self, study_uid: str) -> list[dict[str, Any]]:
        if Flaky.failures:
            raise Flaky.failures.pop(0)
        return [{"StudyInstanceUID": study_uid, "SeriesInstanceUID": f"{study_uid}.1"}]

    def retrieve_series_metadata(self, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        return [
            {
                "StudyInstanceUID": study_uid,
                "SeriesInstanceUID": series_uid,
                "SOPInstanceUID": f"{series_uid}.1",
                "url": "x",
            }
        ]

    def get_image_ids(self, instance: Any) -> list[str]:
        return [instance["url"]]

    def close(self) -> None:
        pass


def test_retries_then_fails_keeping_the_error(store: MetaStore) -> None:
    register("flaky", Flaky)
    store.register_source("f", "flaky")
    queue = JobQueue(store)
    queue.enqueue("f", [("1.2.3", {}), ("1.2.4", {})], max_attempts=2)
    Flaky.failures = [
        SourceUnavailable("busy", retry_after=0),
        SourceUnavailable("still busy", retry_after=0),
        SourceUnavailable("busy again", retry_after=0),
    ]
    worker = Worker(store, source="f", lease=30, poll=0.01, backoff=0.01)
    stats = worker.run(once=True)
    # 1.2.3 fails, 1.2.4 fails, 1.2.3 fails again (its last attempt), 1.2.4 succeeds.
    assert (stats.studies, stats.failures, stats.retries) == (1, 1, 2)
    (failed,) = queue.jobs(state="failed")
    assert failed[1].unit == "1.2.3"
    assert failed[1].attempts == 2 and "busy again" in (failed[1].last_error or "")
    (done,) = queue.jobs(state="done")
    assert done[1].attempts == 2  # retried once, then pulled
    assert store.get_study(done[1].unit) is not None


def test_bad_metadata_fails_at_once(store: MetaStore) -> None:
    from metastore.errors import InvalidMetadata

    register("flaky", Flaky)
    store.register_source("f", "flaky")
    JobQueue(store).enqueue("f", [("1.2.3", {})])
    Flaky.failures = [InvalidMetadata("no good", field="x")]
    stats = Worker(store, source="f", lease=30, poll=0.01).run(once=True)
    assert stats.failures == 1 and stats.retries == 0
    ((_, job),) = JobQueue(store).jobs(state="failed")
    assert job.attempts == 1 and "no good" in (job.last_error or "")


def test_custom_source_through_its_entry_point(plugin: Path, store: MetaStore) -> None:
    studies, _, _ = tree_totals()
    assert queue_tree(store) == len(studies)
    stats = Worker(store, source="tree", lease=30, poll=0.01).run(once=True)
    assert stats.studies == len(studies) and stats.failures == 0
    assert_complete_exactly_once(store)


# -- processes on PostgreSQL ----------------------------------------------------


def worker_process(url: str, site: Path, lease: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    command = [sys.executable, "-m", "metastore.cli", "--db", url, "worker", "--once"]
    command += ["--source", "tree", "--lease", str(lease), "--poll", "0.1"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen[bytes], timeout: float = 120) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output.decode()
    return output.decode()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_four_workers_ingest_every_study_exactly_once(plugin: Path, store: MetaStore) -> None:
    queue_tree(store, delay=0.05)
    processes = [worker_process(store.url, plugin, lease=30) for _ in range(4)]
    for process in processes:
        finish(process)
    assert_complete_exactly_once(store)
    with store.engine.connect() as connection:
        attempts = connection.execute(sa.select(ingest_jobs.c.attempts)).scalars().all()
    assert attempts and set(attempts) == {1}  # no job was taken twice


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_killed_workers_lose_and_duplicate_nothing(plugin: Path, store: MetaStore) -> None:
    queue_tree(store, delay=0.3)
    _, n_series, _ = tree_totals()

    def events() -> int:
        return count(store, sa.select(sa.func.count()).select_from(outbox))

    # Kill a worker at several points: right after its first write, then
    # mid-way through the studies (between, or inside, series transactions).
    for kill_after in (1, n_series // 3, (2 * n_series) // 3):
        process = worker_process(store.url, plugin, lease=1.0)
        deadline = time.monotonic() + 60
        while events() < kill_after and time.monotonic() < deadline:
            assert process.poll() is None, "the worker ended before it was killed"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
        assert process.returncode == -signal.SIGKILL
    assert JobQueue(store).counts("tree")["running"] >= 1  # a lease held by the dead
    output = finish(worker_process(store.url, plugin, lease=1.0))
    assert "0 failed" in output
    assert_complete_exactly_once(store)
    with store.engine.connect() as connection:
        attempts = connection.execute(sa.select(ingest_jobs.c.attempts)).scalars().all()
    assert max(attempts) >= 2  # jobs of killed workers were taken over


def test_a_serving_worker_stops_on_sigterm(plugin: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    with MetaStore(url) as store:
        queue_tree(store)
    env = {**os.environ, "PYTHONPATH": str(plugin)}
    command = [sys.executable, "-m", "metastore.cli", "--db", url, "worker", "--poll", "0.1"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    studies, _, _ = tree_totals()
    with MetaStore(url) as store:
        deadline = time.monotonic() + 60
        while JobQueue(store).counts()["done"] < len(studies) and time.monotonic() < deadline:
            assert process.poll() is None, "a serving worker must not exit on an empty queue"
            time.sleep(0.1)
        time.sleep(0.3)
        assert process.poll() is None  # still serving the empty queue
        process.send_signal(signal.SIGTERM)
        output = finish(process, timeout=30)
        assert f"{len(studies)} studies" in output
        assert_complete_exactly_once(store)


def test_a_study_row_takes_what_it_lacks_from_its_first_instance(store: MetaStore) -> None:
    # A QIDO-RS study row as Orthanc sends it by default: no StudyDescription.
    row = {"StudyInstanceUID": "1.2.3", "PatientID": "FROM-SEARCH", "PatientSex": None}
    first = instance_metas(count=2, PatientID="FROM-FILE", PatientSex="F", StudyID="S7")
    study = StudyMetadata(study=row, summaries=[series_meta()], series=iter([first]))
    counts = write_study(store, study, source="archive")
    assert counts["instances"] == 2  # the series peeked at is still written
    stored = store.get_study("1.2.3")
    assert stored is not None
    assert stored["StudyDescription"] == "CT chest"  # from the instance
    assert (stored["PatientSex"], stored["StudyID"]) == ("F", "S7")
    assert stored["PatientID"] == "FROM-SEARCH"  # what the row holds wins
    with store.engine.connect() as connection:  # the key column the study list searches
        query = sa.select(studies.c.study_description).where(studies.c.study_uid == "1.2.3")
        assert connection.execute(query).scalar_one() == "CT chest"
    # A study whose only series could not be read keeps its row as it came.
    empty = StudyMetadata(study={"StudyInstanceUID": "1.2.4"}, summaries=[], series=iter([[]]))
    assert write_study(store, empty, source="archive")["instances"] == 0
    assert store.get_study("1.2.4") is not None
