"""Benchmark: DICOMweb ingestion from a local Orthanc against the bare fetch floor.

Starts a throw-away Orthanc (see ``orthanc_local.py``), loads generated CT
studies (by default 24 studies x 4 series x 25 instances = 2,400 instances),
then measures, in the same run:

- the fetch floor: the very QIDO-RS and WADO-RS requests an ingest makes,
  made bare (bodies read, nothing parsed, nothing stored), by one client and
  by four clients at once;
- ``metastore.ingest.ingest_source`` with 1 and with 4 worker processes into
  a fresh database (the whole run: search, queue, workers, writes).

and prints instances/s of each and the ratio of ingest to floor.

    python scripts/bench_dicomweb.py [--db URL] [--studies 24 --series 4 --instances 25]

``--db`` takes a PostgreSQL URL (each run gets a fresh schema by dropping
the tables first); the default is a new SQLite file per run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orthanc_local import LocalOrthanc, ct_study  # noqa: E402

from metastore import MetaStore  # noqa: E402
from metastore.ingest import ingest_source  # noqa: E402
from metastore.schema import metadata  # noqa: E402
from metastore.sources.dicomweb import DicomWebSource, dicomweb_config  # noqa: E402

PAGE = 1000


def request_plan(root: str) -> list[list[tuple[str, dict[str, int]]]]:
    """The requests an ingest makes, grouped by study (found once, untimed)."""
    with DicomWebSource(dicomweb_config(root)) as source:
        studies = [row["StudyInstanceUID"] for row in source.search_studies()]
        plan = []
        for study in studies:
            requests: list[tuple[str, dict[str, int]]] = []
            series_url = f"{root}/studies/{study}/series"
            rows = source.search_series(study)
            requests.append((series_url, {"limit": PAGE, "offset": 0}))
            requests.append((series_url, {"limit": PAGE, "offset": len(rows)}))  # the empty page
            for row in rows:
                requests.append((f"{series_url}/{row['SeriesInstanceUID']}/metadata", {}))
            plan.append(requests)
    return plan


def fetch_floor(root: str, plan: list[list[tuple[str, dict[str, int]]]], clients: int) -> float:
    """Seconds to make the plan's requests bare with ``clients`` concurrent clients."""
    search = [(f"{root}/studies", {"limit": PAGE, "offset": 0})]
    search.append((f"{root}/studies", {"limit": PAGE, "offset": len(plan)}))
    shares = [[r for study in plan[i::clients] for r in study] for i in range(clients)]
    shares[0] = search + shares[0]

    def fetch(requests: list[tuple[str, dict[str, int]]]) -> None:
        headers = {"Accept": "application/dicom+json"}
        with httpx.Client(timeout=60.0, headers=headers) as client:
            for url, params in requests:
                client.get(url, params=params).raise_for_status()

    started = time.perf_counter()
    threads = [threading.Thread(target=fetch, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def fresh_database(url: str | None, folder: Path, label: str) -> str:
    if url is None:
        return f"sqlite:///{folder / f'{label}.db'}"
    with MetaStore(url) as store, store.engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            connection.execute(sa.delete(table))
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="a PostgreSQL URL (default: SQLite files)")
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--instances", type=int, default=25)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    total = args.studies * args.series * args.instances
    with tempfile.TemporaryDirectory() as tmp, LocalOrthanc(Path(tmp) / "orthanc") as orthanc:
        started = time.perf_counter()
        for index in range(args.studies):
            orthanc.upload(ct_study(series=args.series, instances=args.instances, index=index))
        print(f"loaded {total} instances into Orthanc in {time.perf_counter() - started:.1f}s")
        plan = request_plan(orthanc.root)
        n_requests = sum(len(study) for study in plan) + 2
        fetch_floor(orthanc.root, plan, 1)  # warm Orthanc's caches for both sides
        print(f"{n_requests} requests per ingest; database: {args.db or 'SQLite file'}")
        print(f"{'workers':>7}  {'floor inst/s':>12}  {'ingest inst/s':>13}  {'ratio':>6}")
        rates = {}
        for workers in (1, 4):
            floor = total / fetch_floor(orthanc.root, plan, workers)
            url = fresh_database(args.db, Path(tmp), f"bench{workers}")
            config = dicomweb_config(orthanc.root, name="orthanc")
            summary = ingest_source(url, config, workers=workers, lease=120)
            if summary.instances != total or summary.failures:
                raise SystemExit(f"ingest incomplete: {summary}")
            rate = summary.instances / summary.seconds
            rates[workers] = rate
            print(f"{workers:>7}  {floor:>12,.0f}  {rate:>13,.0f}  {rate / floor:>6.0%}")
        print(f"scaling, 4 workers over 1: {rates[4] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
