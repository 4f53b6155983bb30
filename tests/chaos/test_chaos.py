"""Chaos: seeded rounds of faults during a live ingest; after each, nothing lost, doubled or skipped.

PostgreSQL (a cluster the test owns): two ``metastore worker`` processes
pull new studies from a real Orthanc while a ``metastore events tail
--consumer`` process and a ``metastore relay webhook`` process read the
feed. Each round uploads a new study, queues it, and injects seeded faults:
``pg_ctl restart -m fast``, ``pg_terminate_backend`` of every session,
Orthanc killed and brought back, SIGKILL of a worker, the consumer or the
relay at a random moment. Processes that die are started again, as a
supervisor would. After each round: the index equals Orthanc's answers,
no row is doubled, the consumer and the relay got every event in order
(a SIGKILLed reader may get the event it was handling again: at least
once), leases are back, and ``check`` finds nothing.

SQLite: several processes write at once, and a disk that fills up mid-ingest
leaves a consistent database and one clear line.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from feed_helpers import Endpoint
from orthanc_local import LocalOrthanc, OrthancUnavailable, ct_study
from servers import IN_CI

from chaos.conftest import Cluster
from metastore import MetaStore
from metastore.check import check
from metastore.ingest import JobQueue
from metastore.sources.dicomweb import dicomweb_config

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

WAIT = 120.0


@dataclass
class Process:
    """One supervised ``metastore`` process."""

    name: str
    argv: list[str]
    output: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        with self.output.open("ab") as out, self.output.with_suffix(".err").open("ab") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "metastore.cli", *self.argv],
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.starts += 1

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def keep_alive(self) -> bool:
        """Start it again if it died; True when it had."""
        if self.popen is None or self.popen.poll() is not None:
            self.start()
            return True
        return False


@dataclass
class Tally:
    rounds: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    restarted: int = 0
    studies: int = 0
    instances: int = 0
    events: int = 0
    redelivered_consumer: int = 0
    redelivered_relay: int = 0

    def fault(self, name: str) -> None:
        self.faults[name] = self.faults.get(name, 0) + 1


def until(condition: Callable[[], bool], what: str, tick: Callable[[], None]) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        tick()
        try:
            if condition():
                return
        except Exception:  # the database may be restarting right now
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def orthanc_instances(server: LocalOrthanc) -> dict[str, set[str]]:
    """Study UID -> SOP Instance UIDs, as Orthanc answers QIDO-RS."""
    found: dict[str, set[str]] = {}
    with server.client() as client:
        for study in client.get("/dicom-web/studies").json():
            uid = study["0020000D"]["Value"][0]
            rows = client.get(f"/dicom-web/studies/{uid}/instances").json()
            found[uid] = {row["00080018"]["Value"][0] for row in rows}
    return found


def index_instances(url: str) -> tuple[dict[str, set[str]], int]:
    """Study UID -> SOP Instance UIDs in the index, and the number of instance rows."""
    found: dict[str, set[str]] = {}
    rows = 0
    with MetaStore(url) as store, store.engine.connect() as connection:
        for study, sop in connection.exec_driver_sql(
            "SELECT st.study_uid, i.sop_uid FROM instances i "
            "JOIN series s ON s.id = i.series_id JOIN studies st ON st.id = s.study_id"
        ):
            found.setdefault(study, set()).add(sop)
            rows += 1
    return found, rows


def in_order_once(seqs: list[int], expected: list[int]) -> int:
    """Assert every expected seq arrived in order; return how many were delivered again."""
    first: list[int] = []
    seen: set[int] = set()
    for seq in seqs:
        if seq not in seen:
            seen.add(seq)
            first.append(seq)
    assert first == expected, f"missing or out of order: {sorted(set(expected) - seen)[:10]}"
    # a repeat only ever goes back to the event being handled when the reader was killed
    return len(seqs) - len(first)


def clean(url: str) -> bool:
    with MetaStore(url) as store:
        report = check(store)
    return report.clean


def relayed(endpoint: Endpoint) -> list[int]:
    return [int(event["seq"]) for event in endpoint.accepted]


def consumer_seqs(path: Path) -> list[int]:
    seqs = []
    for line in path.read_text().splitlines():
        try:
            seqs.append(int(json.loads(line)["seq"]))
        except (ValueError, KeyError):
            continue  # a line cut by SIGKILL
    return seqs


def test_chaos_on_postgresql(
    cluster: Cluster, chaos_rounds: int, chaos_seed: int, tmp_path: Path
) -> None:
    rng = random.Random(chaos_seed)
    try:
        orthanc = LocalOrthanc(tmp_path / "orthanc", users={"metastore": "chaos-pw"}).start()
    except OrthancUnavailable as err:
        if IN_CI:
            pytest.fail(str(err))
        pytest.skip(str(err))
    endpoint = Endpoint(secret=None)
    endpoint.start()
    url = cluster.url
    header = f"Authorization: {orthanc.basic_header()}"
    root = f"{orthanc.base}/dicom-web"
    config = dicomweb_config(root, name="orthanc")
    with MetaStore(url) as store:
        store.register_source("orthanc", "dicomweb", root_url=root, settings=dict(config.settings))
    common = ["--db", url]
    workers = [
        Process(
            f"worker{n}",
            [
                *common,
                "worker",
                "--source",
                "orthanc",
                "--header",
                header,
                "--lease",
                "4",
                "--poll",
                "0.3",
            ],
            tmp_path / f"worker{n}.log",
        )
        for n in range(2)
    ]
    reader = ["--poll-interval", "0.3", "--lease", "4"]
    consumer = Process(
        "consumer",
        [*common, "events", "tail", "--consumer", "chaos", "--follow", *reader],
        tmp_path / "consumer.jsonl",
    )
    relay = Process(
        "relay",
        [
            *common,
            "relay",
            "webhook",
            endpoint.url,
            "--consumer",
            "webhook",
            *reader,
            "--timeout",
            "1",
            "--max-retry-delay",
            "1",
        ],
        tmp_path / "relay.log",
    )
    everyone = [*workers, consumer, relay]
    tally = Tally()

    def supervise() -> None:
        tally.restarted += sum(p.keep_alive() for p in everyone)

    def terminate() -> None:
        cluster.terminate_backends()

    def orthanc_down_and_up() -> None:
        orthanc.stop()
        time.sleep(rng.uniform(0, 1))
        orthanc.start()

    faults: dict[str, Callable[[], None]] = {
        "pg_ctl restart -m fast": cluster.restart,
        "pg_terminate_backend": terminate,
        "orthanc killed and back": orthanc_down_and_up,
        "SIGKILL worker": lambda: rng.choice(workers).kill(),
        "SIGKILL consumer": consumer.kill,
        "SIGKILL relay": relay.kill,
    }
    try:
        for process in everyone:
            process.start()
        for number in range(chaos_rounds):
            orthanc.upload(
                ct_study(series=2, instances=rng.randint(3, 8), patient=f"CHAOS-{number}")
            )
            wanted = orthanc_instances(orthanc)
            with MetaStore(url) as store:
                JobQueue(store).enqueue("orthanc", [(uid, {}) for uid in sorted(wanted)])
            for name in rng.sample(sorted(faults), k=rng.randint(2, 3)):
                time.sleep(rng.uniform(0.0, 1.5))
                faults[name]()
                tally.fault(name)

            # -- the round settles; then everything is checked --------------------
            def drained() -> bool:
                with MetaStore(url) as store:
                    counts = JobQueue(store).counts("orthanc")
                return counts["queued"] == 0 and counts["running"] == 0

            until(drained, "the queue to drain", supervise)
            got, rows = index_instances(url)
            assert got == wanted, "the index differs from Orthanc"
            assert rows == sum(len(s) for s in wanted.values()), "an instance row is doubled"
            with MetaStore(url) as store:
                failed = JobQueue(store).jobs(state="failed")
                assert failed == [], failed
                expected = [event.seq for event in store.changes(limit=1_000_000)]
            last = expected[-1:]
            until(lambda: consumer_seqs(consumer.output)[-1:] == last, "the consumer", supervise)  # noqa: B023
            until(lambda: relayed(endpoint)[-1:] == last, "the relay", supervise)  # noqa: B023
            tally.redelivered_consumer = in_order_once(consumer_seqs(consumer.output), expected)
            tally.redelivered_relay = in_order_once(relayed(endpoint), expected)
            # a killed reader's lease lapses, then its successor takes it over
            until(lambda: clean(url), "leases recovered and check clean", supervise)
            tally.rounds += 1
            tally.studies = len(wanted)
            tally.instances = rows
            tally.events = len(expected)
    finally:
        for process in everyone:
            process.stop()
        orthanc.stop()
        endpoint.stop()
        print(f"\nchaos (seed {chaos_seed}): {tally}")
    assert tally.rounds == chaos_rounds
