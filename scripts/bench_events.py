"""Benchmark the change feed: commit-to-handler latency and drain rate.

For each backend (a fresh SQLite file, a throwaway PostgreSQL database):

1. latency: a writer commits one event at a time (``add_instances`` of one
   new series) at ``--rate`` events/s for ``--seconds``, while a durable
   ``Consumer.run`` in another thread, on its own store, handles them;
   the latency of an event is from the writer's commit returning to its
   handler being called. p50/p99 are printed.
2. drain: ``--drain`` events are written up front, then one fresh consumer
   processes them all (a no-op handler, pages of 1,000): events/s.

Each figure has a raw baseline measured in the same run: for latency, the
same rate of plain INSERT + commit into a scratch table with the driver,
read by a thread that waits for ``NOTIFY`` (PostgreSQL) or polls at the
same interval (SQLite); for the drain, plain keyset paging of the same
outbox rows with the driver, without cursor, lease or event objects.

    python scripts/bench_events.py [--backend both] [--rate 200] [--seconds 10]
        [--drain 50000] [--poll-interval 0.05] [--postgres URL]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from metastore import Consumer, Event, MetaStore
from metastore.cli.progress import terminal
from metastore.events import write_events
from metastore.progress import Progress

POSTGRES = os.environ.get(
    "METASTORE_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CHANNEL = "bench_raw"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def instance(n: int) -> dict[str, Any]:
    study = f"2.25.{n // 100}"
    series = f"{study}.{n}"
    return {
        "StudyInstanceUID": study,
        "PatientID": "BENCH",
        "SeriesInstanceUID": series,
        "Modality": "CT",
        "SeriesNumber": 1,
        "SOPInstanceUID": f"{series}.1",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
        "InstanceNumber": 1,
        "url": f"dicomweb:http://archive/studies/{study}/series/{series}/instances/{series}.1",
    }


def wait_for(handled: dict[int, float], committed: dict[int, float]) -> None:
    """Until every committed event was handled (at most 30 s)."""
    deadline = time.monotonic() + 30
    while len(handled) < len(committed) and time.monotonic() < deadline:
        time.sleep(0.01)


def paced(rate: float, seconds: float, label: str) -> Iterator[int]:
    """0, 1, 2 ... yielded ``rate`` times a second for ``seconds``."""
    total = int(rate * seconds)
    start = time.perf_counter()
    with Progress(label, total=total, unit="events", display=terminal()) as progress:
        for n in range(total):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield n
            progress.update()


# -- latency ----------------------------------------------------------------------


def latency(url: str, rate: float, seconds: float, poll: float) -> list[float]:
    committed: dict[int, float] = {}
    handled: dict[int, float] = {}
    stop = threading.Event()
    with MetaStore(url) as writer, MetaStore(url) as reader:
        consumer = Consumer(reader, f"bench-{uuid.uuid4().hex[:6]}", poll_interval=poll)
        consumer.process(lambda e: None)  # registered and caught up before the clock starts

        def handle(event: Event) -> None:
            handled[event.seq] = time.perf_counter()

        runner = threading.Thread(target=consumer.run, args=(handle, stop))
        runner.start()
        try:
            for n in paced(rate, seconds, "latency"):
                [event] = writer.add_instances([instance(n)]).events
                committed[event.seq] = time.perf_counter()
            wait_for(handled, committed)
        finally:
            stop.set()
            runner.join()
            consumer.close()
    missing = set(committed) - set(handled)
    if missing:
        raise SystemExit(f"{len(missing)} events never reached the handler")
    return [handled[seq] - committed[seq] for seq in committed]


def raw_latency_postgres(url: str, rate: float, seconds: float) -> list[float]:
    """Plain INSERT + NOTIFY + commit; a thread LISTENs and reads what is new."""
    conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as setup:
        setup.execute("CREATE TABLE bench_raw (id bigserial PRIMARY KEY, body jsonb)")
    committed: dict[int, float] = {}
    handled: dict[int, float] = {}
    stop = threading.Event()
    listener = psycopg.connect(conninfo, autocommit=True)
    listener.execute(f"LISTEN {CHANNEL}")

    def listen() -> None:
        last = 0
        while not stop.is_set():
            for _ in listener.notifies(timeout=0.2, stop_after=1):
                break
            for (row_id,) in listener.execute(
                "SELECT id FROM bench_raw WHERE id > %s ORDER BY id", [last]
            ):
                handled[row_id] = time.perf_counter()
                last = row_id

    thread = threading.Thread(target=listen)
    thread.start()
    try:
        with psycopg.connect(conninfo) as writer:
            for n in paced(rate, seconds, "raw latency"):
                row = writer.execute(
                    "INSERT INTO bench_raw (body) VALUES (%s) RETURNING id", [f'{{"n": {n}}}']
                ).fetchone()
                writer.execute(f"NOTIFY {CHANNEL}")
                writer.commit()
                assert row is not None
                committed[row[0]] = time.perf_counter()
        wait_for(handled, committed)
    finally:
        stop.set()
        thread.join()
        listener.close()
    return [handled[i] - committed[i] for i in committed if i in handled]


def raw_latency_sqlite(path: str, rate: float, seconds: float, poll: float) -> list[float]:
    """Plain INSERT + commit; a thread polls for new rows every ``poll`` seconds."""
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE bench_raw (id INTEGER PRIMARY KEY, body TEXT)")
    committed: dict[int, float] = {}
    handled: dict[int, float] = {}
    stop = threading.Event()

    def poller() -> None:
        reader = sqlite3.connect(path)
        last = 0
        while not stop.is_set():
            for (row_id,) in reader.execute(
                "SELECT id FROM bench_raw WHERE id > ? ORDER BY id", [last]
            ):
                handled[row_id] = time.perf_counter()
                last = row_id
            stop.wait(poll)
        reader.close()

    thread = threading.Thread(target=poller)
    thread.start()
    try:
        writer = sqlite3.connect(path)
        writer.execute("PRAGMA journal_mode=WAL")
        for n in paced(rate, seconds, "raw latency"):
            cursor = writer.execute("INSERT INTO bench_raw (body) VALUES (?)", [f'{{"n": {n}}}'])
            writer.commit()
            assert cursor.lastrowid is not None
            committed[cursor.lastrowid] = time.perf_counter()
        writer.close()
        wait_for(handled, committed)
    finally:
        stop.set()
        thread.join()
    return [handled[i] - committed[i] for i in committed if i in handled]


# -- drain ------------------------------------------------------------------------


def preload(url: str, count: int) -> None:
    with (
        MetaStore(url) as store,
        Progress("writing events", total=count, unit="events", display=terminal()) as bar,
    ):
        for start in range(0, count, 5000):
            rows = [
                {
                    "event_type": "INSTANCES_ADDED",
                    "study_uid": f"2.25.{n}",
                    "series_uid": f"2.25.{n}.1",
                    "source": "bench",
                    "payload": {"StudyInstanceUID": f"2.25.{n}", "added": 1, "updated": 0},
                }
                for n in range(start, min(start + 5000, count))
            ]
            with store.engine.begin() as connection:
                write_events(connection, rows)
            bar.update(len(rows))


def drain(url: str) -> tuple[int, float]:
    count = 0

    def handle(_event: Event) -> None:
        nonlocal count
        count += 1

    with MetaStore(url) as store, Consumer(store, "drain") as consumer:
        started = time.perf_counter()
        while consumer.process(handle, limit=1000):
            pass
        elapsed = time.perf_counter() - started
    return count, count / elapsed


def raw_drain(url: str) -> tuple[int, float]:
    query = (
        "SELECT seq, event_type, study_uid, series_uid, source, payload, created_at "
        "FROM outbox WHERE seq > {} ORDER BY seq LIMIT 1000"
    )
    parsed = sa.make_url(url)
    count = 0
    started = time.perf_counter()
    if parsed.get_backend_name() == "sqlite":
        connection: Any = sqlite3.connect(str(parsed.database))
        execute: Callable[[int], list[Any]] = lambda last: connection.execute(  # noqa: E731
            query.format("?"), [last]
        ).fetchall()
    else:
        connection = psycopg.connect(
            parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        )
        execute = lambda last: connection.execute(query.format("%s"), [last]).fetchall()  # noqa: E731
    last = 0
    while rows := execute(last):
        count += len(rows)
        last = rows[-1][0]
    elapsed = time.perf_counter() - started
    connection.close()
    return count, count / elapsed


# -- the run ----------------------------------------------------------------------


@contextmanager
def database(backend: str, server: str) -> Iterator[str]:
    """A fresh database URL for the backend, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-events-") as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    admin = sa.create_engine(sa.make_url(server), isolation_level="AUTOCOMMIT")
    name = f"metastore_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def bench(backend: str, args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    with database(backend, args.postgres) as url:
        MetaStore(url).close()  # migrate
        poll = args.poll_interval
        ours = latency(url, args.rate, args.seconds, poll)
        if backend == "sqlite":
            raw = raw_latency_sqlite(str(sa.make_url(url).database), args.rate, args.seconds, poll)
        else:
            raw = raw_latency_postgres(url, args.rate, args.seconds)
        preload(url, args.drain)
        drained, rate = drain(url)
        raw_count, raw_rate = raw_drain(url)
    rows = []
    for p in (50, 99):
        mine, base = percentile(ours, p) * 1000, percentile(raw, p) * 1000
        rows.append(
            (
                f"latency p{p} at {args.rate:g}/s (ms)",
                f"{mine:.1f}",
                f"{base:.1f}",
                f"{mine / base:.1f}x",
            )
        )
    rows.append(
        (
            f"drained by one consumer (events/s, {drained:,})",
            f"{rate:,.0f}",
            f"{raw_rate:,.0f}",
            f"{raw_rate / rate:.1f}x slower" if rate < raw_rate else f"{rate / raw_rate:.1f}x",
        )
    )
    assert raw_count >= drained
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s for the latency run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency run")
    parser.add_argument("--drain", type=int, default=50_000, help="events for the drain run")
    parser.add_argument(
        "--poll-interval", type=float, default=0.05, help="consumer poll interval (SQLite)"
    )
    parser.add_argument("--postgres", default=POSTGRES, help="PostgreSQL server (a database URL)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = {backend: bench(backend, args) for backend in backends}
    print()
    print(f"{'backend':<11} {'figure':<44} {'metastore':>10} {'raw':>10}  ratio")
    for backend, rows in results.items():
        for figure, mine, base, ratio in rows:
            print(f"{backend:<11} {figure:<44} {mine:>10} {base:>10}  {ratio}")
    print(f"(SQLite consumers poll every {args.poll_interval:g}s; PostgreSQL ones wait for NOTIFY)")


if __name__ == "__main__":
    main()
