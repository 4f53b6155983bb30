"""Benchmark: ingest a generated DICOM JSON launch file, beside the floor for the same file.

    python scripts/bench_ingest.py [--instances 100000 | --large] [--real-shape [--seed N] [--idc PATH]]
        [--sqlite] [--postgres URL]

Generates a launch file of realistic CT instances (metadata as OHIF's
generator writes it; 250-instance series by default), or with
``--real-shape`` one of whole studies drawn at random from the NCI Imaging
Data Commons (PyPI ``idc-index-data``, the ``bench`` extra): their real
series sizes (the median IDC series holds one instance), modalities and SOP
classes, instances synthesized with per-modality attributes. Then for each
database:

- **ingest**: ``metastore ingest dicomjson`` of the file into a fresh
  database, in a child process (so its peak RSS is its own);
- **floor**: in the same run, parsing the same file whole with orjson plus
  the raw baseline of the same rows: PostgreSQL ``COPY`` / SQLite
  ``executemany`` into a bare copy of the ``instances`` table (same columns
  and indexes, no foreign keys, no upsert, no events).

It prints instances/s of both and the ratio ingest / floor. PostgreSQL runs
in a scratch database created on the server named by ``--postgres`` (its
URL's database is only used to connect) and dropped afterwards. Nothing here
asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import sqlalchemy as sa

from metastore import MetaStore
from metastore.ingest import ingest_launch_file
from metastore.schema import instances

# The instances table's own columns, less those the database fills in.
_RAW_COLUMNS = tuple(
    c.name
    for c in instances.c
    if c.name not in ("id", "version", "created_at", "updated_at") and c.computed is None
)


def generate(path: Path, instances: int, per_series: int, series_per_study: int) -> None:
    """Write a launch file of ``instances`` CT instances, one series at a time."""
    made = 0
    study = 0
    with path.open("wb") as out:
        out.write(b'{"studies": [')
        while made < instances:
            study_uid = f"2.25.{study + 1}"
            series_out = []
            for number in range(1, series_per_study + 1):
                if made >= instances:
                    break
                series_uid = f"{study_uid}.{number}"
                count = min(per_series, instances - made)
                made += count
                series_out.append(
                    {
                        "SeriesInstanceUID": series_uid,
                        "SeriesNumber": number,
                        "SeriesDescription": "AXIAL 2.5",
                        "Modality": "CT",
                        "SliceThickness": 2.5,
                        "instances": [
                            _instance(study_uid, series_uid, n) for n in range(1, count + 1)
                        ],
                    }
                )
            header = {
                "StudyInstanceUID": study_uid,
                "StudyDate": "20240102",
                "StudyTime": "101500",
                "PatientName": f"Bench^{study}",
                "PatientID": f"BENCH{study:06d}",
                "AccessionNumber": f"A{study}",
                "PatientAge": "061Y",
                "PatientSex": "F",
                "NumInstances": sum(len(s["instances"]) for s in series_out),
                "Modalities": "CT",
                "series": series_out,
            }
            out.write((b",\n" if study else b"") + orjson.dumps(header))
            study += 1
        out.write(b"]}\n")


# Attributes by modality for the real-shape file: what an archive's instances of that
# kind carry besides the common ones (image pixels' description, a segmentation's
# segments, a structured report's content tree, an RT structure set's ROIs).
_IMAGE = {
    "Rows": 512,
    "Columns": 512,
    "BitsAllocated": 16,
    "BitsStored": 12,
    "HighBit": 11,
    "PixelRepresentation": 0,
    "SamplesPerPixel": 1,
    "PhotometricInterpretation": "MONOCHROME2",
    "PixelSpacing": [0.703125, 0.703125],
}
_VOLUME = {**_IMAGE, "ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "SliceThickness": 2.5}
_CODE = {"CodeValue": "T-D0050", "CodingSchemeDesignator": "SRT", "CodeMeaning": "Tissue"}
_BY_MODALITY: dict[str, dict[str, Any]] = {
    "CT": {**_VOLUME, "RescaleIntercept": -1024, "RescaleSlope": 1, "KVP": 120},
    "MR": {**_VOLUME, "EchoTime": 4.2, "RepetitionTime": 2000, "MagneticFieldStrength": 3},
    "PT": {**_VOLUME, "Units": "BQML", "DecayCorrection": "START"},
    "SEG": {
        **_IMAGE,
        "BitsAllocated": 1,
        "BitsStored": 1,
        "HighBit": 0,
        "NumberOfFrames": 24,
        "SegmentationType": "BINARY",
        "SegmentSequence": [
            {
                "SegmentNumber": n,
                "SegmentLabel": f"segment {n}",
                "SegmentAlgorithmType": "AUTOMATIC",
                "SegmentedPropertyCategoryCodeSequence": [_CODE],
                "SegmentedPropertyTypeCodeSequence": [_CODE],
            }
            for n in (1, 2, 3)
        ],
    },
    "SR": {
        "ValueType": "CONTAINER",
        "CompletionFlag": "COMPLETE",
        "VerificationFlag": "UNVERIFIED",
        "ConceptNameCodeSequence": [_CODE],
        "ContentSequence": [
            {
                "RelationshipType": "CONTAINS",
                "ValueType": "NUM",
                "ConceptNameCodeSequence": [_CODE],
                "MeasuredValueSequence": [{"NumericValue": 12.5 + n}],
            }
            for n in range(4)
        ],
    },
    "RTSTRUCT": {
        "StructureSetLabel": "RTSTRUCT",
        "StructureSetROISequence": [
            {"ROINumber": n, "ROIName": f"ROI {n}", "ROIGenerationAlgorithm": "MANUAL"}
            for n in range(1, 6)
        ],
    },
    "SM": {**_IMAGE, "NumberOfFrames": 400, "TotalPixelMatrixColumns": 98304},
    "MG": {**_IMAGE, "Rows": 3328, "Columns": 2560, "ViewPosition": "CC"},
}


def real_shapes(index: Path, instances: int, seed: int) -> list[list[tuple[str, str, int]]]:
    """Whole studies of the NCI Imaging Data Commons, drawn at random, until ``instances``.

    Each study is its real series as (Modality, SOPClassUID, instanceCount)
    from the IDC series index ``index``: PyPI ``idc-index-data``'s parquet
    (the ``bench`` extra) or a CSV excerpt with its columns, read as
    ``bench_scale`` reads it; the last study is cut to end at ``instances``.
    """
    import random

    from scale_data import read_series

    by_study: dict[str, list[tuple[str, str, int]]] = {}
    for row in read_series(index):
        by_study.setdefault(row["StudyInstanceUID"], []).append(
            (row["Modality"] or "OT", row["SOPClassUID"] or "", int(row["instanceCount"]))
        )
    uids = sorted(by_study)
    random.Random(seed).shuffle(uids)
    chosen: list[list[tuple[str, str, int]]] = []
    made = 0
    for uid in uids:
        if made >= instances:
            break
        study = []
        for modality, sop_class, count in by_study[uid]:
            count = min(count, instances - made)
            if count > 0:
                study.append((modality, sop_class, count))
                made += count
        chosen.append(study)
    return chosen


def generate_real(path: Path, studies: list[list[tuple[str, str, int]]]) -> None:
    """Write a launch file of the drawn studies: their series sizes, modalities and classes."""
    with path.open("wb") as out:
        out.write(b'{"studies": [')
        for index, shape in enumerate(studies):
            study_uid = f"2.25.{index + 1}"
            series_out = []
            for number, (modality, sop_class, count) in enumerate(shape, start=1):
                series_uid = f"{study_uid}.{number}"
                extra = {**_BY_MODALITY.get(modality, {}), "Modality": modality}
                if sop_class:
                    extra["SOPClassUID"] = sop_class
                series_out.append(
                    {
                        "SeriesInstanceUID": series_uid,
                        "SeriesNumber": number,
                        "SeriesDescription": f"{modality} series {number}",
                        "Modality": modality,
                        "instances": [
                            _instance(study_uid, series_uid, n, extra) for n in range(1, count + 1)
                        ],
                    }
                )
            header = {
                "StudyInstanceUID": study_uid,
                "StudyDate": "20240102",
                "StudyTime": "101500",
                "PatientName": f"Real^{index}",
                "PatientID": f"REAL{index:06d}",
                "AccessionNumber": f"R{index}",
                "NumInstances": sum(count for _m, _c, count in shape),
                "Modalities": "\\".join(sorted({m for m, _c, _n in shape})),
                "series": series_out,
            }
            out.write((b",\n" if index else b"") + orjson.dumps(header))
        out.write(b"]}\n")


def _instance(
    study_uid: str, series_uid: str, number: int, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    sop_uid = f"{series_uid}.{number}"
    return {
        "metadata": {
            "Columns": 512,
            "Rows": 512,
            "InstanceNumber": number,
            "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
            "AcquisitionNumber": 1,
            "PhotometricInterpretation": "MONOCHROME2",
            "BitsAllocated": 16,
            "BitsStored": 12,
            "PixelRepresentation": 1,
            "SamplesPerPixel": 1,
            "PixelSpacing": [0.703125, 0.703125],
            "HighBit": 11,
            "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
            "ImagePositionPatient": [-180.0, -180.0, -2.5 * number],
            "FrameOfReferenceUID": f"{study_uid}.9",
            "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
            "Modality": "CT",
            "SOPInstanceUID": sop_uid,
            "SeriesInstanceUID": series_uid,
            "StudyInstanceUID": study_uid,
            "WindowCenter": 40,
            "WindowWidth": 400,
            "RescaleIntercept": -1024,
            "RescaleSlope": 1,
        }
        if extra is None
        else {
            **extra,
            "InstanceNumber": number,
            "SOPClassUID": extra.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7"),
            "SOPInstanceUID": sop_uid,
            "SeriesInstanceUID": series_uid,
            "StudyInstanceUID": study_uid,
            "ContentDate": "20240102",
            "ContentTime": f"1015{number % 60:02d}",
            **(
                {"ImagePositionPatient": [-180.0, -180.0, -2.5 * number]}
                if "SliceThickness" in extra
                else {}
            ),
        },
        "url": f"dicomweb:https://images.example/{study_uid}/{series_uid}/{number}.dcm",
    }


@dataclass
class Result:
    backend: str
    instances: int
    ingest_seconds: float
    peak_rss_mb: float
    parse_seconds: float
    raw_seconds: float

    @property
    def rate(self) -> float:
        return self.instances / self.ingest_seconds

    @property
    def floor_rate(self) -> float:
        return self.instances / (self.parse_seconds + self.raw_seconds)


def _child(url: str, path: str) -> None:
    """Ingest in this (child) process and print the seconds it took."""
    with MetaStore(url) as store:
        started = time.perf_counter()
        summary = ingest_launch_file(store, path, source="bench", progress=False)
        seconds = time.perf_counter() - started
    print(orjson.dumps({"seconds": seconds, "instances": summary.instances}).decode())


def ingest_in_child(url: str, path: Path) -> tuple[float, int, float]:
    """(seconds, instances, peak RSS in MB) of an ingest in a fresh process."""
    child = subprocess.Popen(
        [sys.executable, __file__, "_ingest", url, str(path)], stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    output = child.stdout.read()
    _pid, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"ingest into {url} failed ({child.returncode})")
    report = orjson.loads(output.splitlines()[-1])
    return report["seconds"], report["instances"], usage.ru_maxrss / 1024


def raw_rows(path: Path) -> tuple[float, list[tuple[Any, ...]]]:
    """(seconds to parse the file whole with orjson, the instances rows)."""
    started = time.perf_counter()
    document = orjson.loads(path.read_bytes())
    parse_seconds = time.perf_counter() - started
    rows = []
    for series_id, one in enumerate(s for study in document["studies"] for s in study["series"]):
        for entry in one["instances"]:
            meta = entry["metadata"]
            values = {
                "series_id": series_id + 1,
                "sop_uid": meta["SOPInstanceUID"],
                "sop_class_uid": meta["SOPClassUID"],
                "instance_number": meta["InstanceNumber"],
                "number_of_frames": meta.get("NumberOfFrames"),
                "rows": meta.get("Rows"),
                "columns": meta.get("Columns"),
                "url": entry["url"],
                "image_id": None,  # the url is the imageId, as the store keeps it
                "metadata": orjson.dumps(meta, option=orjson.OPT_SORT_KEYS).decode(),
            }
            rows.append(tuple(values[name] for name in _RAW_COLUMNS))
    return parse_seconds, rows


def raw_postgres(url: str, rows: list[tuple[Any, ...]]) -> float:
    """Seconds to COPY the rows into a bare copy of ``instances`` (same indexes)."""
    conninfo = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as connection:
        connection.execute("CREATE TABLE bench_raw (LIKE instances INCLUDING ALL)")
        connection.commit()
        started = time.perf_counter()
        with connection.cursor().copy(
            f"COPY bench_raw ({', '.join(_RAW_COLUMNS)}) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        connection.commit()
        seconds = time.perf_counter() - started
        connection.execute("DROP TABLE bench_raw")
        connection.commit()
    return seconds


def raw_sqlite(path: str, rows: list[tuple[Any, ...]]) -> float:
    """Seconds to executemany the rows into a bare copy of ``instances`` (same indexes)."""
    connection = sqlite3.connect(path)
    try:
        ddl = connection.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name = 'instances' AND sql IS NOT NULL"
        ).fetchall()
        connection.execute("PRAGMA journal_mode=WAL")
        for (statement,) in ddl:
            connection.execute(
                statement.replace("instances", "bench_raw").replace('"bench_raw"', "bench_raw")
            )
        placeholders = ", ".join("?" for _ in _RAW_COLUMNS)
        started = time.perf_counter()
        connection.executemany(
            f"INSERT INTO bench_raw ({', '.join(_RAW_COLUMNS)}) VALUES ({placeholders})", rows
        )
        connection.commit()
        seconds = time.perf_counter() - started
        connection.execute("DROP TABLE bench_raw")
        connection.commit()
    finally:
        connection.close()
    return seconds


@contextmanager
def scratch_postgres(server: str) -> Iterator[str]:
    """The URL of a scratch database on the server, dropped afterwards."""
    admin_url = sa.make_url(server)
    name = f"metastore_bench_{os.getpid()}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def report(result: Result) -> None:
    print(
        f"{result.backend:<10} {result.instances:>9,} instances | ingest {result.ingest_seconds:7.1f}s "
        f"{result.rate:9,.0f}/s, peak RSS {result.peak_rss_mb:6.0f} MB | floor: orjson parse "
        f"{result.parse_seconds:5.1f}s + raw insert {result.raw_seconds:5.1f}s = "
        f"{result.floor_rate:9,.0f}/s | ratio {result.rate / result.floor_rate:5.1%}"
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "_ingest":
        _child(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) == 6 and sys.argv[1] == "_real":
        # In a child: the IDC index (~1M rows) stays out of the parent's memory,
        # which the ingest children's peak RSS would count.
        studies = real_shapes(Path(sys.argv[5]), int(sys.argv[3]), int(sys.argv[4]))
        generate_real(Path(sys.argv[2]), studies)
        sizes = sorted(n for study in studies for _m, _c, n in study)
        print(
            f" in {len(studies):,} IDC studies, {len(sizes):,} series "
            f"(median {sizes[len(sizes) // 2]} instances, largest {sizes[-1]:,})"
        )
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100_000, help="instances in the file")
    parser.add_argument("--large", action="store_true", help="1,000,000 instances")
    parser.add_argument("--per-series", type=int, default=250, help="instances per series")
    parser.add_argument("--series-per-study", type=int, default=4, help="series per study")
    parser.add_argument(
        "--real-shape",
        action="store_true",
        help="whole IDC studies drawn at random: their series sizes and modalities "
        "(PyPI idc-index-data; pip install metastore[bench])",
    )
    parser.add_argument("--seed", type=int, default=14, help="the draw of --real-shape")
    parser.add_argument(
        "--idc",
        metavar="PATH",
        help="the IDC series index for --real-shape: parquet or a CSV excerpt of its "
        "columns (default: idc-index-data's)",
    )
    parser.add_argument("--sqlite", action="store_true", help="benchmark SQLite (default: both)")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        nargs="?",
        const="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="benchmark PostgreSQL on this server (default: both, the local server)",
    )
    args = parser.parse_args()
    if not args.sqlite and not args.postgres:
        args.sqlite = True
        args.postgres = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    count = 1_000_000 if args.large else args.instances
    with tempfile.TemporaryDirectory(prefix="metastore-bench-") as scratch:
        work = Path(scratch)
        path = work / f"bench-{count}.json"
        started = time.perf_counter()
        if args.real_shape:
            if args.idc:
                index = args.idc
            else:
                from scale_data import idc_index_path

                index = str(idc_index_path())
            command = [
                sys.executable,
                __file__,
                "_real",
                str(path),
                str(count),
                str(args.seed),
                index,
            ]
            shape = subprocess.run(
                command, check=True, capture_output=True, text=True
            ).stdout.rstrip("\n")
        else:
            generate(path, count, args.per_series, args.series_per_study)
            shape = ""
        size = path.stat().st_size / 2**20
        print(
            f"generated {path.name}: {count:,} instances{shape}, {size:,.0f} MB in {time.perf_counter() - started:.1f}s"
        )
        # The ingests run first, in children forked while this process is
        # small: Linux counts a child's RSS from before its exec in its peak.
        runs = {}
        if args.sqlite:
            runs["sqlite"] = ingest_in_child(f"sqlite:///{work / 'bench.db'}", path)
        if args.postgres:
            with scratch_postgres(args.postgres) as url:
                runs["postgresql"] = ingest_in_child(url, path)
                parse, rows = raw_rows(path)
                raw_pg = raw_postgres(url, rows)
        else:
            parse, rows = raw_rows(path)
        for backend, (seconds, instances, rss) in runs.items():
            raw = raw_pg if backend == "postgresql" else raw_sqlite(str(work / "bench.db"), rows)
            report(Result(backend, instances, seconds, rss, parse, raw))


if __name__ == "__main__":
    main()
