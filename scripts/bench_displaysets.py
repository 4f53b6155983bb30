"""Benchmark: one study's display sets, against reading the same rows raw, in the same run.

Indexes a generated study (CT stacks with full geometry, so every stack is
checked for reconstructability and sorted along its normal), then times:

- raw: one plain SELECT of the study's instance metadata through the
  driver, JSON decoded: the floor any reader of the index pays;
- get_study: ``MetaStore.get_study`` (three queries, dicts shaped);
- get_display_sets: ``MetaStore.get_display_sets`` (get_study and the handlers);

and prints the median of each, instances per second, and the ratios.

    python scripts/bench_displaysets.py [--db URL] [--series 10] [--instances 300] [--repeat 7]

Without ``--db`` it uses a fresh SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from metastore import MetaStore
from metastore.cli.progress import terminal
from metastore.progress import Progress

STUDY = "2.25.314159265358979323846264338327950288"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "https://pacs.example/dicomweb"


def generate(store: MetaStore, series_count: int, per_series: int) -> int:
    """Index the benchmark study (idempotent); returns its number of instances."""
    with Progress(
        "indexing the benchmark study", total=series_count, unit="series", display=terminal()
    ) as progress:
        for s in range(series_count):
            series_uid = f"{STUDY}.{s + 1}"
            batch = []
            for n in range(1, per_series + 1):
                sop = f"{series_uid}.{n}"
                url = f"{ROOT}/studies/{STUDY}/series/{series_uid}/instances/{sop}"
                batch.append(
                    {
                        "StudyInstanceUID": STUDY,
                        "SeriesInstanceUID": series_uid,
                        "SOPInstanceUID": sop,
                        "SOPClassUID": CT_IMAGE,
                        "Modality": "CT",
                        "SeriesNumber": s + 1,
                        "SeriesDescription": f"axial {s + 1}",
                        "InstanceNumber": n,
                        "Rows": 512,
                        "Columns": 512,
                        "PixelSpacing": [0.7, 0.7],
                        "SliceThickness": 1.25,
                        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
                        "ImagePositionPatient": [-180.0, -180.0, 200.0 - 1.25 * n],
                        "url": url,
                        "imageId": f"wadors:{url}/frames/1",
                    }
                )
            store.add_instances(batch, source="bench")
            progress.update(1, instances=len(batch))
    return series_count * per_series


def raw_read(store: MetaStore) -> int:
    """The study's instance metadata through the driver: one SELECT, JSON decoded."""
    sql = (
        "SELECT i.metadata FROM instances i JOIN series s ON s.id = i.series_id "
        "JOIN studies st ON st.id = s.study_id WHERE st.study_uid = "
        + ("%s" if store.dialect == "postgresql" else "?")
    )
    connection = store.engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute(sql, (STUDY,))
        rows = cursor.fetchall()
    finally:
        connection.close()
    decoded = [row[0] if isinstance(row[0], dict) else orjson.loads(row[0]) for row in rows]
    return len(decoded)


def median_seconds(call: Callable[[], Any], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="database URL (default: a temporary SQLite)")
    parser.add_argument("--series", type=int, default=10, help="series in the study")
    parser.add_argument("--instances", type=int, default=300, help="instances per series")
    parser.add_argument("--repeat", type=int, default=7, help="timed runs of each reader")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        url = args.db or f"sqlite:///{Path(scratch) / 'bench.db'}"
        with MetaStore(url) as store:
            count = generate(store, args.series, args.instances)
            display_sets = store.get_display_sets(STUDY) or []
            assert raw_read(store) == count
            assert len(display_sets) == args.series
            assert all(d["isReconstructable"] for d in display_sets)
            raw = median_seconds(lambda: raw_read(store), args.repeat)
            study = median_seconds(lambda: store.get_study(STUDY), args.repeat)
            sets = median_seconds(lambda: store.get_display_sets(STUDY), args.repeat)
            print(f"{store.dialect}: one study, {args.series} series, {count} instances")
            for name, seconds in (("raw", raw), ("get_study", study), ("get_display_sets", sets)):
                print(
                    f"  {name:<17} {seconds * 1000:8.1f} ms  {count / seconds:10,.0f} instances/s"
                )
            print(f"  get_display_sets / raw       {sets / raw:5.2f}x")
            print(f"  get_display_sets / get_study {sets / study:5.2f}x")


if __name__ == "__main__":
    main()
