"""Benchmark MetaStore reads against a raw baseline, on SQLite and PostgreSQL.

Adds synthetic CT metadata (``bench_store``'s generator): a study of 1,000
instances (10 series of 100), a study of 100 instances (one series) and
filler studies around them. Then measures, interleaved, each read beside its
raw baseline: the bare SQL fetch of the same rows' metadata as JSON text on
the driver's own cursor, each decoded with ``orjson.loads``, no dicts built
(the least any reader of this metadata must do). Prints p50/p95 in ms for
both, the ratio of the p50s, and the p50 of this process's CPU time for
both (under load the wall clock also counts waiting for a core):

- ``get_study`` of the 1,000- and the 100-instance study;
- ``get_series`` of a 100-instance series;
- ``get_instance`` of one instance.

On PostgreSQL it also prints what the same fetch costs when the server
renders the JSONB ``metadata`` as text (how reads were made before revision
0008 kept the text). Figures vary with the machine's load: the load average
is printed with them.

    python scripts/bench_reads.py [--repeat 50] [--filler 10]
        [--backends sqlite,postgresql] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_db import throwaway_postgres  # noqa: E402
from bench_store import batches  # noqa: E402

from metastore import MetaStore  # noqa: E402

log = logging.getLogger("bench_reads")

_STUDY_ROWS = """
    SELECT {text} FROM instances i JOIN series s ON s.id = i.series_id
    JOIN studies st ON st.id = s.study_id WHERE st.study_uid = {slot}
"""
_SERIES_ROWS = """
    SELECT {text} FROM instances i JOIN series s ON s.id = i.series_id
    WHERE s.series_uid = {slot}
"""
_INSTANCE_ROW = "SELECT {text} FROM instances i WHERE i.sop_uid = {slot}"


def fill(store: MetaStore, root: str, filler: int) -> None:
    """The 1,000-instance study (``root.1``), the 100-instance one (``root.2``), filler."""
    for batch in batches(1, 10, 100, root):
        store.add_instances(batch, source="bench")
    for batch in batches(1, 1, 100, f"{root}.x"):
        store.add_instances(batch, source="bench")
    for number in range(filler):
        for batch in batches(1, 10, 100, f"{root}.filler{number}"):
            store.add_instances(batch, source="bench")
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE" if store.dialect == "postgresql" else "ANALYZE")


def text_column(store: MetaStore) -> str:
    """The kept JSON text; before revision 0008 (a before/after run), the metadata as text."""
    with store.engine.connect() as connection:
        names = {c["name"] for c in sa.inspect(connection).get_columns("instances")}
    return "i.metadata_text" if "metadata_text" in names else "CAST(i.metadata AS TEXT)"


def baseline(store: MetaStore, sql: str, value: str) -> Callable[[], int]:
    """The bare fetch of the rows ``sql`` names, each decoded; returns the row count."""
    slot = "%s" if store.dialect == "postgresql" else "?"
    statement = sql.format(slot=slot)
    engine = store.engine

    def run() -> int:
        with engine.connect() as connection:
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.execute(statement, (value,))
            documents = [orjson.loads(text) for (text,) in cursor.fetchall()]
            cursor.close()
            connection.rollback()
        return len(documents)

    return run


def timed(function: Callable[[], Any], timings: list[float], cpu: list[float]) -> None:
    started, used = time.perf_counter(), time.process_time()
    function()
    timings.append((time.perf_counter() - started) * 1000)
    cpu.append((time.process_time() - used) * 1000)


def p50_p95(timings: list[float]) -> tuple[float, float]:
    ordered = sorted(timings)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


def compare(
    name: str, label: str, read: Callable[[], Any], floor: Callable[[], int], repeat: int
) -> None:
    ours: list[float] = []
    bare: list[float] = []
    ours_cpu: list[float] = []
    bare_cpu: list[float] = []
    rows = floor()
    read()  # warm both: the first call compiles and caches statements
    for _ in range(repeat):
        timed(read, ours, ours_cpu)
        timed(floor, bare, bare_cpu)
    (o50, o95), (b50, b95) = p50_p95(ours), p50_p95(bare)
    oc, bc = statistics.median(ours_cpu), statistics.median(bare_cpu)
    # Under load the wall clock includes waiting for a core; this process's
    # CPU time (the client's share: not the database server's) does not.
    print(
        f"{name}: {label} ({rows:,} rows): metastore p50 {o50:.1f} ms p95 {o95:.1f} ms, "
        f"baseline p50 {b50:.1f} ms p95 {b95:.1f} ms, ratio {o50 / b50:.2f}; "
        f"client CPU p50 {oc:.1f} ms vs {bc:.1f} ms",
        flush=True,
    )


def run_backend(name: str, url: str, repeat: int, filler: int) -> None:
    root = f"2.25.{uuid.uuid4().int % 10**20}"
    with MetaStore(url) as store:
        fill(store, root, filler)
        text = text_column(store)
        big, small = f"{root}.1", f"{root}.x.1"
        series_uid, sop_uid = f"{small}.1", f"{big}.5.50"
        cases: list[tuple[str, Callable[[], Any], str, str]] = [
            ("get_study, 1,000 instances", lambda: store.get_study(big), _STUDY_ROWS, big),
            ("get_study, 100 instances", lambda: store.get_study(small), _STUDY_ROWS, small),
            (
                "get_series, 100 instances",
                lambda: store.get_series(small, series_uid),
                _SERIES_ROWS,
                series_uid,
            ),
            (
                "get_instance",
                lambda: store.get_instance(big, f"{big}.5", sop_uid),
                _INSTANCE_ROW,
                sop_uid,
            ),
        ]
        for label, read, sql, value in cases:
            compare(name, label, read, baseline(store, sql.replace("{text}", text), value), repeat)
        if store.dialect == "postgresql":
            rendered: list[float] = []
            fetch = baseline(store, _STUDY_ROWS.replace("{text}", "i.metadata::text"), big)
            for _ in range(repeat):
                timed(fetch, rendered, [])
            r50, r95 = p50_p95(rendered)
            print(
                f"{name}: the same 1,000 rows with JSONB rendered by the server "
                f"(metadata::text): p50 {r50:.1f} ms p95 {r95:.1f} ms",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per read")
    parser.add_argument("--filler", type=int, default=10, help="1,000-instance studies around")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    backends = args.backends.split(",")
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
            run_backend("sqlite", url, args.repeat, args.filler)
    if "postgresql" in backends:
        with throwaway_postgres(args.postgres) as url:
            run_backend("postgresql", url, args.repeat, args.filler)
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
