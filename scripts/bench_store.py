"""Benchmark MetaStore writes and reads against a raw baseline, on SQLite and PostgreSQL.

Builds synthetic CT metadata (default 100,000 instances: 100 studies of 10
series of 100 instances, ~45 realistic tags each), adds it with one
``add_instances`` call per series, and measures in the same run the
durability-equivalent floor for the same rows: a bare table holding the same
JSON payload under a primary key only, one transaction per series (SQLite:
``executemany``; PostgreSQL: ``COPY``), JSON encoding included on both sides.
Prints instances/s for both, their ratio, and ``get_study`` latency (p50/p95)
for a 1,000-instance study after ``ANALYZE``.

    python scripts/bench_store.py [--studies 100] [--series 10] [--instances 100]
        [--backends sqlite,postgresql] [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_db import throwaway_postgres  # noqa: E402

from metastore import MetaStore, db  # noqa: E402
from metastore.cli.progress import terminal  # noqa: E402
from metastore.progress import Progress  # noqa: E402

log = logging.getLogger("bench_store")
CT = "1.2.840.10008.5.1.4.1.1.2"


def ct_instance(study: int, series: int, number: int, root: str) -> dict[str, Any]:
    """One CT instance's naturalized metadata, as an archive would send it."""
    study_uid = f"{root}.{study}"
    series_uid = f"{study_uid}.{series}"
    sop_uid = f"{series_uid}.{number}"
    z = -100.0 + 1.25 * number
    return {
        "SpecificCharacterSet": "ISO_IR 100",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "SOPClassUID": CT,
        "SOPInstanceUID": sop_uid,
        "StudyDate": "20240102",
        "SeriesDate": "20240102",
        "ContentDate": "20240102",
        "StudyTime": "101500",
        "ContentTime": f"1015{number % 60:02d}",
        "AccessionNumber": f"ACC{study:06d}",
        "Modality": "CT",
        "Manufacturer": "ACME Medical",
        "ManufacturerModelName": "Tomograph 9000",
        "StudyDescription": "CT CHEST WITH CONTRAST",
        "SeriesDescription": f"AXIAL {series} 1.25mm",
        "PatientName": [{"Alphabetic": f"Doe^Patient{study}"}],
        "PatientID": f"PAT{study:06d}",
        "PatientBirthDate": "19700101",
        "PatientSex": "F" if study % 2 else "M",
        "BodyPartExamined": "CHEST",
        "SliceThickness": 1.25,
        "KVP": 120,
        "XRayTubeCurrent": 250,
        "ExposureTime": 500,
        "ConvolutionKernel": "STANDARD",
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "StudyID": str(study),
        "SeriesNumber": series,
        "AcquisitionNumber": 1,
        "InstanceNumber": number,
        "ImagePositionPatient": [-175.0, -175.0, z],
        "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        "FrameOfReferenceUID": f"{study_uid}.9999",
        "SliceLocation": z,
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": 512,
        "Columns": 512,
        "PixelSpacing": [0.683594, 0.683594],
        "BitsAllocated": 16,
        "BitsStored": 12,
        "HighBit": 11,
        "PixelRepresentation": 0,
        "WindowCenter": [40, -600],
        "WindowWidth": [400, 1500],
        "RescaleIntercept": -1024,
        "RescaleSlope": 1,
        "url": f"dicomweb:https://archive.example/wado/{study_uid}/{series_uid}/{sop_uid}.dcm",
    }


def batches(
    studies: int, series: int, per_series: int, root: str
) -> Iterator[list[dict[str, Any]]]:
    """One list of instances per series."""
    for st in range(1, studies + 1):
        for se in range(1, series + 1):
            yield [ct_instance(st, se, n, root) for n in range(1, per_series + 1)]


def measure_store(url: str, data: list[list[dict[str, Any]]]) -> tuple[float, MetaStore]:
    store = MetaStore(url)
    total = sum(len(b) for b in data)
    with Progress("metastore", total=total, unit="instances", display=terminal()) as progress:
        started = time.perf_counter()
        for batch in data:
            store.add_instances(batch, source="bench")
            progress.update(len(batch))
        elapsed = time.perf_counter() - started
    return total / elapsed, store


def measure_floor(url: str, data: list[list[dict[str, Any]]]) -> float:
    """Rows/s writing the same payload into a bare table, one transaction per series."""
    engine = db.create_engine(url)
    total = sum(len(b) for b in data)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS bench_floor")
            kind = "jsonb" if engine.dialect.name == "postgresql" else "text"
            connection.exec_driver_sql(
                f"CREATE TABLE bench_floor (sop_uid varchar(64) PRIMARY KEY, metadata {kind} NOT NULL)"
            )
        write = (
            _copy_writer(engine)
            if engine.dialect.name == "postgresql"
            else _executemany_writer(engine)
        )
        with Progress("floor", total=total, unit="instances", display=terminal()) as progress:
            started = time.perf_counter()
            for batch in data:
                write([(i["SOPInstanceUID"], orjson.dumps(i).decode()) for i in batch])
                progress.update(len(batch))
            elapsed = time.perf_counter() - started
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE bench_floor")
    finally:
        engine.dispose()
    return total / elapsed


def _executemany_writer(engine: sa.Engine) -> Callable[[list[tuple[str, str]]], None]:
    def write(rows: list[tuple[str, str]]) -> None:
        with engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO bench_floor VALUES (?, ?)", rows)

    return write


def _copy_writer(engine: sa.Engine) -> Callable[[list[tuple[str, str]]], None]:
    raw = engine.raw_connection()
    driver = raw.driver_connection
    assert driver is not None

    def write(rows: list[tuple[str, str]]) -> None:
        statement = "COPY bench_floor (sop_uid, metadata) FROM STDIN"
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
        driver.commit()

    return write


def measure_get_study(
    store: MetaStore, study_uid: str, repeat: int = 50
) -> tuple[float, float, int]:
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if store.dialect == "postgresql":
            connection.exec_driver_sql("VACUUM ANALYZE")
        else:
            connection.exec_driver_sql("ANALYZE")
    size = 0
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        study = store.get_study(study_uid)
        timings.append((time.perf_counter() - started) * 1000)
        assert study is not None
        size = study["NumberOfStudyRelatedInstances"]
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.95) - 1], size


def run_backend(name: str, url: str, data: list[list[dict[str, Any]]], study_uid: str) -> None:
    floor = measure_floor(url, data)
    rate, store = measure_store(url, data)
    try:
        p50, p95, size = measure_get_study(store, study_uid)
    finally:
        store.close()
    print(
        f"{name}: metastore {rate:,.0f} instances/s, floor {floor:,.0f} rows/s, ratio {rate / floor:.2f}"
    )
    print(f"{name}: get_study of {size:,} instances: p50 {p50:.1f} ms, p95 {p95:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--series", type=int, default=10)
    parser.add_argument("--instances", type=int, default=100, help="instances per series")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    root = f"2.25.{uuid.uuid4().int % 10**20}"
    data = list(batches(args.studies, args.series, args.instances, root))
    total = sum(len(b) for b in data)
    print(
        f"{total:,} instances: {args.studies} studies x {args.series} series x {args.instances}, "
        f"{len(data[0][0]) - 1} tags each"
    )
    study_uid = f"{root}.1"
    backends = args.backends.split(",")
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as folder:
            run_backend("sqlite", f"sqlite:///{Path(folder) / 'bench.db'}", data, study_uid)
    if "postgresql" in backends:
        with throwaway_postgres(args.postgres) as url:
            run_backend("postgresql", url, data, study_uid)


if __name__ == "__main__":
    main()
