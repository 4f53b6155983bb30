"""Durable consumers, tail and prune on real SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from feed_helpers import WAIT, add_events, cursor, until
from helpers import series_meta

from metastore import (
    EVENTS,
    ConfigurationError,
    Consumer,
    ConsumerError,
    Event,
    HandlerFailed,
    MetaStore,
    db,
)
from metastore.events import list_consumers, parse_types, prune, remove_consumer, tail
from metastore.events.wakeup import _Listen
from metastore.schema import consumers


@pytest.fixture
def other(db_url: str) -> Iterator[MetaStore]:
    """A second store on the same database: another process, as far as the database knows."""
    with MetaStore(db_url) as opened:
        yield opened


def test_process_hands_out_everything_in_order_and_saves_the_cursor(store: MetaStore) -> None:
    seqs = add_events(store, 5)
    got: list[Event] = []
    with Consumer(store, "indexer") as consumer:
        assert consumer.process(got.append) == 5
        assert consumer.process(got.append) == 0  # nothing new
        assert cursor(store, "indexer") == seqs[-1]
    assert [e.seq for e in got] == seqs
    assert all(e.type is EVENTS.INSTANCES_ADDED for e in got)
    assert got[0].created_at.tzinfo is not None


def test_a_consumer_resumes_where_it_left_off(store: MetaStore, other: MetaStore) -> None:
    first = add_events(store, 3)
    got: list[int] = []
    with Consumer(store, "prefetch") as consumer:
        consumer.process(lambda e: got.append(e.seq))
    later = add_events(store, 2, 10)
    with Consumer(other, "prefetch") as again:
        again.process(lambda e: got.append(e.seq))
    assert got == first + later


def test_limit_pages_through_the_feed(store: MetaStore) -> None:
    seqs = add_events(store, 7)
    got: list[int] = []
    with Consumer(store, "pager") as consumer:
        assert consumer.process(lambda e: got.append(e.seq), limit=3) == 3
        assert cursor(store, "pager") == seqs[2]
        assert consumer.process(lambda e: got.append(e.seq), limit=3) == 3
        assert consumer.process(lambda e: got.append(e.seq), limit=3) == 1
    assert got == seqs


def test_consumers_are_independent(store: MetaStore) -> None:
    seqs = add_events(store, 4)
    a: list[int] = []
    b: list[int] = []
    with Consumer(store, "a") as first, Consumer(store, "b") as second:
        first.process(lambda e: a.append(e.seq), limit=2)
        second.process(lambda e: b.append(e.seq))
        first.process(lambda e: a.append(e.seq))
    assert a == b == seqs
    assert {info.name: info.last_seq for info in list_consumers(store)} == {
        "a": seqs[-1],
        "b": seqs[-1],
    }


def test_type_filter_hands_out_only_those_but_moves_past_the_rest(store: MetaStore) -> None:
    store.add_series_metadata([series_meta(series="1.2.3.100")])
    add_events(store, 2)
    store.add_series_metadata([series_meta(series="1.2.3.101")])
    add_events(store, 2, 5)
    got: list[Event] = []
    with Consumer(store, "hanging-protocols", [EVENTS.SERIES_ADDED]) as consumer:
        assert consumer.process(got.append) == 2
        head = store.changes(limit=100)[-1].seq
        assert consumer.position == head
    assert [e.payload["SeriesInstanceUIDs"] for e in got] == [["1.2.3.100"], ["1.2.3.101"]]
    assert cursor(store, "hanging-protocols") == head
    [info] = list_consumers(store)
    assert info.lag == 0


def test_type_filter_pages_with_a_limit(store: MetaStore) -> None:
    for n in range(5):
        store.add_series_metadata([series_meta(series=f"1.2.3.{100 + n}")])
        add_events(store, 1, n)
    got: list[Event] = []
    with Consumer(store, "series-only", ["SERIES_ADDED"]) as consumer:
        while consumer.process(got.append, limit=2):
            pass
    assert len(got) == 5
    assert all(e.type is EVENTS.SERIES_ADDED for e in got)


def test_a_failing_handler_is_retried_and_the_cursor_waits(
    store: MetaStore, caplog: pytest.LogCaptureFixture
) -> None:
    seqs = add_events(store, 3)
    calls: list[int] = []
    stored_while_failing: list[int] = []

    def flaky(event: Event) -> None:
        calls.append(event.seq)
        if event.seq == seqs[1] and calls.count(event.seq) <= 2:
            stored_while_failing.append(cursor(store, "flaky"))
            raise RuntimeError("downstream is busy")

    with (
        caplog.at_level(logging.WARNING, logger="metastore.events"),
        Consumer(store, "flaky", retry_delay=0.01, max_retry_delay=0.02) as consumer,
    ):
        assert consumer.process(flaky) == 3
    assert calls == [seqs[0], seqs[1], seqs[1], seqs[1], seqs[2]]
    assert all(saved < seqs[1] for saved in stored_while_failing)
    failures = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert len(failures) == 2
    assert all(f"event {seqs[1]}" in r.getMessage() for r in failures)
    assert "downstream is busy" in failures[0].getMessage()
    assert cursor(store, "flaky") == seqs[-1]


def test_max_attempts_raises_and_leaves_the_event_for_later(store: MetaStore) -> None:
    seqs = add_events(store, 3)

    def broken(event: Event) -> None:
        if event.seq == seqs[1]:
            raise ValueError("cannot parse")

    with Consumer(store, "strict", retry_delay=0.01, max_attempts=2) as consumer:
        with pytest.raises(HandlerFailed) as failed:
            consumer.process(broken)
        assert failed.value.seq == seqs[1]
        assert failed.value.attempts == 2
    assert cursor(store, "strict") == seqs[0]
    got: list[int] = []
    with Consumer(store, "strict") as again:
        again.process(lambda e: got.append(e.seq))
    assert got == seqs[1:]


def test_stop_ends_the_retries_without_passing_the_event(store: MetaStore) -> None:
    seqs = add_events(store, 2)
    stop = threading.Event()
    attempts: list[int] = []

    def failing(event: Event) -> None:
        attempts.append(event.seq)
        if len(attempts) >= 3:
            stop.set()
        raise RuntimeError("endpoint down")

    with Consumer(store, "stopper", retry_delay=0.01) as consumer:
        assert consumer.run(failing, stop) == 0
    assert set(attempts) == {seqs[0]}
    assert cursor(store, "stopper") == 0


def test_start_latest_skips_the_history(store: MetaStore) -> None:
    add_events(store, 3)
    got: list[int] = []
    with Consumer(store, "newcomer", start="latest") as consumer:
        assert consumer.process(lambda e: got.append(e.seq)) == 0
        later = add_events(store, 1, 9)
        consumer.process(lambda e: got.append(e.seq))
    assert got == later


def test_a_held_lease_keeps_a_second_process_out(store: MetaStore, other: MetaStore) -> None:
    seqs = add_events(store, 2)
    first = Consumer(store, "single", lease_seconds=30)
    second = Consumer(other, "single", lease_seconds=30)
    got: list[int] = []
    try:
        assert first.process(lambda e: got.append(e.seq), limit=1) == 1
        assert second.process(lambda e: got.append(e.seq)) == 0
        assert not second.leased
        [info] = list_consumers(store)
        assert info.lease_owner == first.owner
        assert info.lease_expires_at is not None
        first.close()  # releases the lease
        assert list_consumers(store)[0].lease_owner is None
        assert second.process(lambda e: got.append(e.seq)) == 1
    finally:
        first.close()
        second.close()
    assert got == seqs


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_write(
    store: MetaStore, other: MetaStore
) -> None:
    seqs = add_events(store, 4)
    stalled = Consumer(store, "takeover", lease_seconds=0.2)
    got: list[int] = []
    assert stalled.process(lambda e: got.append(e.seq), limit=2) == 2
    successor = Consumer(other, "takeover", lease_seconds=30)
    deadline = threading.Event()
    for _ in range(int(WAIT / 0.05)):  # until the stalled lease has expired
        if successor.process(lambda e: got.append(e.seq)):
            break
        deadline.wait(0.05)
    assert got == seqs
    # The stalled holder wakes up: it may neither read nor overwrite the cursor.
    assert stalled.process(lambda e: got.append(e.seq)) == 0
    stalled.close()
    [info] = list_consumers(store)
    assert info.lease_owner == successor.owner
    assert info.last_seq == seqs[-1]
    successor.close()


def test_run_hands_out_new_events_live(store: MetaStore, other: MetaStore) -> None:
    seen = threading.Event()
    got: list[int] = []
    stop = threading.Event()

    def handler(event: Event) -> None:
        got.append(event.seq)
        if len(got) == 3:
            seen.set()

    with Consumer(other, "live", poll_interval=0.05) as consumer:
        runner = threading.Thread(target=consumer.run, args=(handler, stop))
        runner.start()
        try:
            seqs = add_events(store, 3)
            assert seen.wait(WAIT)
        finally:
            stop.set()
            runner.join(WAIT)
        assert not runner.is_alive()
    assert got == seqs


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_notify_wakes_a_consumer_before_its_poll(store: MetaStore, other: MetaStore) -> None:
    seen = threading.Event()
    stop = threading.Event()
    with Consumer(other, "notified", poll_interval=600) as consumer:
        consumer.process(lambda e: None)  # registered, leased, caught up
        runner = threading.Thread(target=consumer.run, args=(lambda e: seen.set(), stop))
        runner.start()
        try:
            add_events(store, 1)
            # Only a notification can wake it: the poll is ten minutes away.
            assert seen.wait(WAIT)
        finally:
            stop.set()
            runner.join(WAIT)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_lost_listening_connection_is_reopened(store: MetaStore, other: MetaStore) -> None:
    listeners = sa.text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
    )

    def listening() -> list[int]:
        with store.engine.connect() as connection:
            return list(connection.execute(listeners).scalars())

    seen = threading.Event()
    stop = threading.Event()
    with Consumer(other, "resilient", poll_interval=600) as consumer:
        consumer.process(lambda e: None)
        runner = threading.Thread(target=consumer.run, args=(lambda e: seen.set(), stop))
        runner.start()
        try:
            until(lambda: len(listening()) == 1, "the listener")
            [first] = listening()
            with store.engine.connect() as connection:
                connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            add_events(store, 1)
            # Delivered though the poll is ten minutes away and the listener was gone.
            assert seen.wait(WAIT)
            until(lambda: len(listening()) == 1 and listening() != [first], "a new listener")
        finally:
            stop.set()
            runner.join(WAIT)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_wait_after_reconnecting_returns_for_what_nobody_heard(store: MetaStore) -> None:
    listener = _Listen(store.engine)
    stop = threading.Event()
    try:
        with store.engine.connect() as connection:
            connection.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
                )
            )
        add_events(store, 1)  # its NOTIFY goes to nobody
        waiter = threading.Thread(target=listener.wait, args=(600, stop))
        waiter.start()
        waiter.join(WAIT)
        # It found the connection dead, listened again, and returned so the
        # caller reads the event, rather than waiting ten minutes for a poll.
        assert not waiter.is_alive()
    finally:
        stop.set()
        listener.close()


@pytest.mark.postgres
def test_a_server_that_refuses_listen_is_polled_and_said_once(
    postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A database not there yet refuses the LISTEN connection as a hot standby refuses
    # LISTEN: the wait polls, warns once (not at every retry), and listens once it can.
    name = f"metastore_test_{uuid.uuid4().hex[:12]}"
    engine = db.create_engine(postgres.url(name))
    stop = threading.Event()
    caplog.set_level(logging.DEBUG, logger="metastore.events.wakeup")
    listener = _Listen(engine)
    try:
        listener.wait(2.5, stop)  # three more attempts, a second apart
        said = [r for r in caplog.records if "cannot listen" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.WARNING] + [logging.DEBUG] * (len(said) - 1)
        assert len(said) >= 3
        with postgres.admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
        postgres.created.append(name)
        # It listens again and returns, so the caller reads what came meanwhile,
        # rather than waiting ten minutes for a poll.
        waiter = threading.Thread(target=listener.wait, args=(600, stop))
        waiter.start()
        waiter.join(WAIT)
        assert not waiter.is_alive()
        assert any(
            "listening for outbox notifications again" in r.getMessage() for r in caplog.records
        )
    finally:
        stop.set()
        listener.close()
        engine.dispose()


def test_tail_reads_without_a_cursor(store: MetaStore) -> None:
    store.add_series_metadata([series_meta(series="1.2.3.100")])
    seqs = add_events(store, 3)
    got: list[Event] = []
    assert tail(store, got.append, after=seqs[0]) == 2
    assert [e.seq for e in got] == seqs[1:]
    series_only: list[Event] = []
    tail(store, series_only.append, events="SERIES_ADDED")
    assert [e.type for e in series_only] == [EVENTS.SERIES_ADDED]
    assert list_consumers(store) == []


def test_tail_with_a_consumer_advances_it(store: MetaStore, other: MetaStore) -> None:
    seqs = add_events(store, 3)
    got: list[int] = []
    assert tail(store, lambda e: got.append(e.seq), consumer="cli", limit=2) == 3
    assert cursor(store, "cli") == seqs[-1]
    assert tail(store, lambda e: got.append(e.seq), consumer="cli") == 0
    assert got == seqs
    with Consumer(other, "cli") as holder:
        holder.acquire()
        with pytest.raises(ConsumerError, match="leased by another process"):
            tail(store, lambda e: None, consumer="cli")


def test_tail_follow_stops_when_asked(store: MetaStore) -> None:
    stop = threading.Event()
    got: list[int] = []

    def handler(event: Event) -> None:
        got.append(event.seq)
        stop.set()

    seqs = add_events(store, 1)
    assert tail(store, handler, follow=True, stop=stop, poll_interval=0.05) == 1
    assert got == seqs


def test_prune_deletes_only_what_every_consumer_has_processed(store: MetaStore) -> None:
    seqs = add_events(store, 6)
    with Consumer(store, "slow") as slow, Consumer(store, "fast") as fast:
        slow.process(lambda e: None, limit=2)
        fast.process(lambda e: None)
    assert prune(store, before=seqs[-1] + 1) == 2
    assert [e.seq for e in store.changes()] == seqs[2:]
    assert prune(store, before=seqs[4], force=True) == 2
    assert [e.seq for e in store.changes()] == seqs[4:]
    assert [info.lag for info in list_consumers(store)] == [0, 2]  # fast, slow


def test_prune_by_age(store: MetaStore) -> None:
    seqs = add_events(store, 3)
    assert prune(store, older_than=timedelta(days=1)) == 0
    assert prune(store, older_than=timedelta(0)) == 3  # no consumer holds them back
    assert store.changes() == []
    # Sequence numbers are never reused after a prune.
    assert add_events(store, 1, 50)[0] > seqs[-1]


def test_removed_consumer_no_longer_holds_back_prune(store: MetaStore) -> None:
    add_events(store, 3)
    with Consumer(store, "abandoned") as consumer:
        consumer.process(lambda e: None, limit=1)
    assert prune(store, before=1000) == 1
    assert remove_consumer(store, "abandoned")
    assert not remove_consumer(store, "abandoned")
    assert prune(store, before=1000) == 2


def test_bad_settings_are_refused(store: MetaStore) -> None:
    with pytest.raises(ConfigurationError, match="unknown event type 'SERIES_RENAMED'"):
        Consumer(store, "x", ["SERIES_RENAMED"])
    with pytest.raises(ConfigurationError, match="consumer name"):
        Consumer(store, "")
    with pytest.raises(ConfigurationError, match="start"):
        Consumer(store, "x", start="middle")
    with pytest.raises(ConfigurationError, match="say what to prune"):
        prune(store)
    assert parse_types("series_added, STUDY_DELETED") == {
        EVENTS.SERIES_ADDED,
        EVENTS.STUDY_DELETED,
    }


def test_consumer_rows_are_plain_sql(store: MetaStore) -> None:
    seqs = add_events(store, 2)
    with Consumer(store, "sql-visible") as consumer:
        consumer.process(lambda e: None)
    with store.engine.connect() as connection:
        row = connection.execute(sa.select(consumers.c.name, consumers.c.last_seq)).one()
    assert tuple(row) == ("sql-visible", seqs[-1])


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_busy_sqlite_writer_delays_the_cursor_save_not_the_delivery(store: MetaStore) -> None:
    seqs = add_events(store, 3)
    got: list[int] = []
    consumer = Consumer(store, "patient")
    assert consumer.acquire()  # registered and leased before the writer comes
    with store.engine.connect() as writer:
        writer.begin()  # BEGIN IMMEDIATE: the write lock is taken until the rollback
        # Handing out does not wait 30 s for the lock: the save is put off.
        assert consumer.process(lambda e: got.append(e.seq)) == 3
        assert cursor(store, "patient") == 0
        writer.rollback()
    consumer.close()  # this save waits for the lock
    assert got == seqs
    assert cursor(store, "patient") == seqs[-1]
    with store.engine.connect() as connection:  # pooled connections are patient again
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30000
