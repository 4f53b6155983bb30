"""The change feed under concurrency: no skipped sequence numbers, one lease holder.

Every test runs on SQLite and PostgreSQL; each writer and reader has its own
``MetaStore`` (engine and connections), as separate processes would.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from feed_helpers import WAIT, add_events, until
from helpers import instances

from metastore import Consumer, Event, MetaStore
from metastore.events import write_events

WRITERS = 8
WRITES_EACH = 25
SHARED_STUDY = "2.25.999"


def _delay_outbox_commits(engine: sa.Engine, rng: random.Random) -> None:
    """Hold each transaction that wrote outbox rows open a random while before its commit.

    The sequence numbers are taken by then: without the outbox lock, other
    writers' later numbers would commit first.
    """

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _after(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO OUTBOX"):
            connection.info["wrote_outbox"] = True
            time.sleep(rng.uniform(0, 0.003))

    @sa.event.listens_for(engine, "commit")
    def _before_commit(connection: Any) -> None:
        if connection.info.pop("wrote_outbox", False):
            time.sleep(rng.uniform(0, 0.005))


def _writer(url: str, number: int, committed: list[tuple[int, str, str]]) -> None:
    """``WRITES_EACH`` commits of one new series each, mostly to its own study."""
    rng = random.Random(number)
    with MetaStore(url) as store:
        _delay_outbox_commits(store.engine, rng)
        for write in range(WRITES_EACH):
            study = SHARED_STUDY if rng.random() < 0.25 else f"2.25.{number}"
            series_uid = f"2.25.{number}.{write}"
            time.sleep(rng.uniform(0, 0.002))
            result = store.add_instances(instances(study=study, series=series_uid, count=1))
            [event] = result.events
            committed.append((event.seq, study, series_uid))


def test_no_event_is_skipped_with_eight_concurrent_writers(db_url: str) -> None:
    committed: dict[int, list[tuple[int, str, str]]] = {w: [] for w in range(WRITERS)}
    durable: list[Event] = []
    naive: list[int] = []
    stop = threading.Event()

    with MetaStore(db_url) as reader_store, MetaStore(db_url) as naive_store:
        consumer = Consumer(reader_store, "skip-test", poll_interval=0.01)

        def high_water_reader() -> None:
            # The reader the flaw bites: it remembers only the highest seq seen.
            after = 0
            while not stop.is_set():
                page = naive_store.changes(after=after, limit=7)
                naive.extend(e.seq for e in page)
                after = page[-1].seq if page else after
                time.sleep(0.001)

        threads = [
            threading.Thread(target=consumer.run, args=(durable.append, stop), kwargs={"limit": 5}),
            threading.Thread(target=high_water_reader),
        ]
        writers = [
            threading.Thread(target=_writer, args=(db_url, w, committed[w])) for w in committed
        ]
        for thread in threads + writers:
            thread.start()
        try:
            for thread in writers:
                thread.join(WAIT * 2)
            assert not any(thread.is_alive() for thread in writers)
            expected = sorted(seq for rows in committed.values() for seq, _, _ in rows)
            assert len(expected) == WRITERS * WRITES_EACH
            last = expected[-1]
            until(lambda: consumer.position >= last, "the consumer")
            until(lambda: bool(naive) and naive[-1] >= last, "the high-water reader")
        finally:
            stop.set()
            for thread in threads:
                thread.join(WAIT)
            consumer.close()

    delivered = [e.seq for e in durable]
    assert sorted(set(expected) - set(delivered)) == []  # none skipped
    assert delivered == expected  # every event, once, in sequence order
    assert sorted(set(expected) - set(naive)) == []
    assert naive == expected
    # In order per study, and each writer's events in the order it committed them.
    by_study: dict[str, list[str]] = defaultdict(list)
    for event in durable:
        by_study[event.study_uid].append(str(event.series_uid))
    by_writer_commit = {
        w: [series_uid for _, _, series_uid in rows] for w, rows in committed.items()
    }
    for study, series_uids in by_study.items():
        committed_order = sorted(
            (seq, series_uid)
            for rows in committed.values()
            for seq, s, series_uid in rows
            if s == study
        )
        assert series_uids == [series_uid for _, series_uid in committed_order]
    for w, order in by_writer_commit.items():
        mine = [e.series_uid for e in durable if str(e.series_uid).startswith(f"2.25.{w}.")]
        assert mine == order


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_outbox_writers_take_turns_until_commit(store: MetaStore, db_url: str) -> None:
    """The mechanism itself: a second writer cannot take a number until the first commits."""
    lock_waiters = sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    second: dict[str, Any] = {}

    def write_second() -> None:
        with MetaStore(db_url) as other:
            second["events"] = other.add_instances(instances(series="1.2.3.9", count=1)).events

    with store.engine.connect() as first_writer:
        transaction = first_writer.begin()
        [first] = write_events(
            first_writer,
            [
                {
                    "event_type": "STUDY_DELETED",
                    "study_uid": "1.2.3.4",
                    "series_uid": None,
                    "source": None,
                    "payload": {},
                }
            ],
        )
        thread = threading.Thread(target=write_second)
        thread.start()
        with store.engine.connect() as observer:
            until(lambda: observer.execute(lock_waiters).scalar_one() == 1, "the second writer")
        assert "events" not in second  # it waits for the first writer's commit
        transaction.commit()
    thread.join(WAIT)
    [later] = second["events"]
    assert later.seq > first.seq
    assert [e.seq for e in store.changes()] == [first.seq, later.seq]


def test_two_runners_of_one_consumer_never_overlap(db_url: str) -> None:
    busy = threading.Lock()
    overlaps: list[int] = []
    handled: list[tuple[str, int]] = []

    def handler_for(tag: str) -> Callable[[Event], None]:
        def handle(event: Event) -> None:
            if not busy.acquire(blocking=False):
                overlaps.append(event.seq)
                return
            try:
                handled.append((tag, event.seq))
                time.sleep(0.001)
            finally:
                busy.release()

        return handle

    with MetaStore(db_url) as writer, MetaStore(db_url) as one, MetaStore(db_url) as two:
        runners = {
            "one": Consumer(one, "shared", poll_interval=0.02, lease_seconds=2),
            "two": Consumer(two, "shared", poll_interval=0.02, lease_seconds=2),
        }
        stops = {tag: threading.Event() for tag in runners}
        threads = {
            tag: threading.Thread(
                target=runner.run, args=(handler_for(tag), stops[tag]), kwargs={"limit": 3}
            )
            for tag, runner in runners.items()
        }
        for thread in threads.values():
            thread.start()
        try:
            seqs = add_events(writer, 20)
            until(lambda: len(handled) >= 20, "the first holder")
            holder = handled[-1][0]
            stops[holder].set()  # the holder stops and releases the lease
            threads[holder].join(WAIT)
            runners[holder].close()
            seqs += add_events(writer, 20, 20)
            until(lambda: len(handled) >= 40, "the second holder")
        finally:
            for tag, stop in stops.items():
                stop.set()
                threads[tag].join(WAIT)
                runners[tag].close()
    assert overlaps == []
    assert [seq for _, seq in handled] == seqs
    assert {tag for tag, _ in handled[:20]} == {holder}
    assert {tag for tag, _ in handled[20:]} == set(runners) - {holder}


_CRASHING_CONSUMER = textwrap.dedent(
    """
    import os, signal, sys
    from metastore import Consumer, MetaStore

    url, out, crash_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with MetaStore(url) as store:
        consumer = Consumer(store, "crashy", lease_seconds=3)

        def handle(event):
            with open(out, "a") as handled:
                handled.write(f"{event.seq}\\n")
            if event.seq == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no cursor save

        while consumer.process(handle, limit=4):
            pass
    """
)


def test_a_crashed_consumer_is_redelivered_only_what_it_had_not_saved(
    store: MetaStore, tmp_path: Path
) -> None:
    seqs = add_events(store, 10)
    out = tmp_path / "handled.txt"
    crash = subprocess.run(
        [sys.executable, "-c", _CRASHING_CONSUMER, store.url, str(out), str(seqs[6])],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        capture_output=True,
        timeout=WAIT * 2,
    )
    assert crash.returncode == -9, crash.stderr.decode()
    before_crash = [int(line) for line in out.read_text().split()]
    assert before_crash == seqs[:7]

    got: list[int] = []
    with Consumer(store, "crashy", lease_seconds=30) as successor:
        # The dead holder's lease runs out; then the successor takes over.
        until(lambda: successor.process(lambda e: got.append(e.seq)) > 0, "the lease")
    # The first batch of four was saved; the rest of the second batch comes again.
    assert got == seqs[4:]
    assert sorted(set(before_crash) | set(got)) == seqs
