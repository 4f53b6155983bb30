"""Benchmark: ingest a folder of DICOM files, beside the floor for the same files.

    python scripts/bench_folder.py [--files 6000] [--series-size 150] [--workers N]
        [--db URL] [--repeat 3]

Writes a folder of copies of pydicom's ``CT_small.dcm`` (a real CT with 260
elements, private tags included), each with its own UIDs, ``--series-size``
files a series and two series a study. Then, in the same run, ``--repeat``
times each:

- **floor**: pydicom's ``dcmread(path, stop_before_pixels=True)`` of every
  file, on all cores (a pool of worker processes, started within the timing,
  as the ingest starts its own);
- **ingest**: ``ingest_folder`` of the folder into a fresh database (SQLite
  in a temporary folder unless ``--db`` names a scratch database to empty).

It prints files/s of both (the best of the repeats) and the ratio
ingest / floor. The files are read once beforehand so both find them in the
page cache. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pydicom
import pydicom.data
import sqlalchemy as sa

from metastore import MetaStore
from metastore.ingest import ingest_folder
from metastore.sources.folder import default_workers, list_folder


def make_folder(folder: Path, files: int, series_size: int) -> None:
    """``files`` copies of CT_small.dcm, each its own instance: folder/study/series/n.dcm."""
    dataset = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    for number in range(files):
        series = number // series_size
        study = series // 2
        dataset.StudyInstanceUID = f"2.25.9{study}"
        dataset.SeriesInstanceUID = f"2.25.9{study}.{series}"
        dataset.SOPInstanceUID = f"2.25.9{study}.{series}.{number}"
        dataset.InstanceNumber = number % series_size + 1
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        path = folder / f"study{study}" / f"series{series}" / f"{number}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_as(path, enforce_file_format=True)


def _dcmread_chunk(paths: Sequence[str]) -> int:
    for path in paths:
        pydicom.dcmread(path, stop_before_pixels=True)
    return len(paths)


def floor(paths: list[str], workers: int) -> float:
    """Seconds for pydicom to read every file's header on ``workers`` processes."""
    chunks = [paths[i : i + 16] for i in range(0, len(paths), 16)]
    started = time.perf_counter()
    context = multiprocessing.get_context("forkserver")
    with context.Pool(workers) as pool:
        done = sum(pool.imap_unordered(_dcmread_chunk, chunks))
    assert done == len(paths)
    return time.perf_counter() - started


def ingest(folder: Path, url: str | None, workers: int) -> tuple[float, int]:
    """Seconds to ingest the folder into a fresh database, and the instances indexed."""
    with tempfile.TemporaryDirectory(prefix="bench-folder-db-") as scratch:
        target = url or f"sqlite:///{Path(scratch) / 'bench.db'}"
        if url:
            _empty(url)
        with MetaStore(target) as store:
            started = time.perf_counter()
            summary = ingest_folder(store, folder, workers=workers, progress=False)
            seconds = time.perf_counter() - started
    assert summary.ok, summary
    return seconds, summary.instances


def _empty(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for table in ("outbox", "instances", "series", "studies", "sources", "ingest_jobs"):
            connection.execute(sa.text(f"DELETE FROM {table}"))
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=6000)
    parser.add_argument("--series-size", type=int, default=150)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--db", default=None, help="a scratch database URL (emptied!)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-folder-") as scratch:
        folder = Path(scratch) / "dicom"
        made = time.perf_counter()
        make_folder(folder, args.files, args.series_size)
        paths = [str(p) for p in list_folder(folder).paths]
        for path in paths:  # into the page cache
            Path(path).read_bytes()
        print(
            f"{len(paths)} files ({args.files // args.series_size} series) written in "
            f"{time.perf_counter() - made:.1f}s; {args.workers} workers; "
            f"database {args.db or 'SQLite (temporary)'}"
        )
        floors, ingests = [], []
        for round_ in range(1, args.repeat + 1):
            floors.append(floor(paths, args.workers))
            seconds, instances = ingest(folder, args.db, args.workers)
            assert instances == len(paths)
            ingests.append(seconds)
            print(
                f"round {round_}: floor {len(paths) / floors[-1]:,.0f} files/s, "
                f"ingest {len(paths) / seconds:,.0f} files/s"
            )
        best_floor = len(paths) / min(floors)
        best_ingest = len(paths) / min(ingests)
        print(
            f"floor (dcmread stop_before_pixels, {args.workers} processes): "
            f"{best_floor:,.0f} files/s"
        )
        print(f"ingest folder: {best_ingest:,.0f} files/s")
        print(f"ratio ingest / floor: {best_ingest / best_floor:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
