"""Benchmark: `metastore serve` against the archive it indexes (a local Orthanc), same run.

Loads generated CT studies into a throw-away Orthanc (``orthanc_local.py``):
a study of one 1,000-instance series, a study of 5 x 200 instances, and
studies of 4 x 25 instances up to ``--orthanc-instances``. Ingests them with
``metastore ingest dicomweb``'s code path, then fills the index with more
studies (10 x 100 instances each, metadata copied from the real ones with
new UIDs) up to ``--instances``. Starts a real ``metastore serve`` process
and measures, with the same requests to metastore and to Orthanc:

- QIDO-RS study list (``/studies?limit=101&includefield=...``, as OHIF's
  study list asks): p50 and p99;
- WADO-RS metadata of the 1,000-instance series: p50 cold (metastore: its
  rendered answer dropped before each request; Orthanc: its first request)
  and warm;
- "open a study" as OHIF does it: the series list, then every series'
  metadata at once (6 connections, as a browser), for the 1,000-instance
  study of 5 series: p50;
- requests/s with 8 concurrent clients over a mix of those requests
  (study list, series list, metadata of a 100-instance series).

Prints each figure and the ratio (Orthanc's time / metastore's).

    python scripts/bench_serve.py [--db URL] [--instances 100000] [--orthanc-instances 5000]

Full size: ``--instances 1000000 --orthanc-instances 20000`` on PostgreSQL.
``--db`` takes a PostgreSQL URL (its metastore tables are dropped first);
the default is a new SQLite file.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from orthanc_local import LocalOrthanc, ct_study, free_port  # noqa: E402

from metastore import MetaStore  # noqa: E402
from metastore.ingest import ingest_source  # noqa: E402
from metastore.schema import metadata, rendered_series  # noqa: E402
from metastore.sources.dicomweb import dicomweb_config  # noqa: E402

STUDY_LIST = (
    "/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030&includefield=00080060"
)
FILLER_SERIES, FILLER_INSTANCES = 4, 25
SYNTHETIC_SERIES, SYNTHETIC_INSTANCES = 10, 100


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def get(client: httpx.Client, url: str) -> None:
    response = client.get(url, headers={"Accept": "application/dicom+json"})
    response.raise_for_status()
    response.read()


# -- data ------------------------------------------------------------------------


def load_orthanc(orthanc: LocalOrthanc, total: int) -> None:
    def files() -> Iterator[bytes]:
        yield from ct_study(series=1, instances=1000, patient="BIG-SERIES", index=1)
        yield from ct_study(series=5, instances=200, patient="OPEN-STUDY", index=2)
        for index in range(3, 3 + max(0, (total - 2000) // (FILLER_SERIES * FILLER_INSTANCES))):
            yield from ct_study(
                series=FILLER_SERIES, instances=FILLER_INSTANCES, patient=f"F{index}", index=index
            )

    started = time.perf_counter()
    stored = orthanc.upload(files())
    print(f"orthanc: {stored} instances uploaded in {time.perf_counter() - started:.0f} s")


def fill_index(url: str, total: int) -> None:
    """Add synthetic studies (copies of a real instance's metadata, new UIDs) up to ``total``."""
    with MetaStore(url) as store:
        with store.engine.connect() as connection:
            have = connection.execute(sa.text("SELECT count(*) FROM instances")).scalar_one()
            template_study = connection.execute(
                sa.text("SELECT study_uid FROM studies WHERE patient_id LIKE 'F%' LIMIT 1")
            ).scalar_one()
        study = store.get_study(template_study)
        assert study is not None
        template = dict(study["seriesLists"][0]["series"][0]["instances"][0])
        per_study = SYNTHETIC_SERIES * SYNTHETIC_INSTANCES
        studies = max(0, (total - have) // per_study)
        started = time.perf_counter()
        for s in range(studies):
            study_uid = f"2.25.{900000 + s}"
            for r in range(SYNTHETIC_SERIES):
                series_uid = f"{study_uid}.{r + 1}"
                batch = []
                for n in range(1, SYNTHETIC_INSTANCES + 1):
                    sop = f"{series_uid}.{n}"
                    item = dict(template)
                    item.update(
                        StudyInstanceUID=study_uid,
                        SeriesInstanceUID=series_uid,
                        SOPInstanceUID=sop,
                        PatientID=f"SYN{s:06d}",
                        StudyDate=f"20{10 + s % 14:02d}{1 + s % 12:02d}{1 + s % 28:02d}",
                        AccessionNumber=f"S{s:07d}",
                        SeriesNumber=r + 1,
                        InstanceNumber=n,
                        ImagePositionPatient=[0.0, 0.0, float(n)],
                        url=f"http://archive.invalid/studies/{study_uid}/series/{series_uid}/instances/{sop}",
                    )
                    item.pop("imageId", None)
                    batch.append(item)
                store.add_instances(batch, source="synthetic")
            if s and s % 100 == 0:
                done = s * per_study
                rate = done / (time.perf_counter() - started)
                print(f"  index: {have + done:,} instances ({rate:,.0f}/s)", flush=True)
        print(f"index: {have + studies * per_study:,} instances")


def fresh_database(url: str | None, folder: Path) -> str:
    if url is None:
        return f"sqlite:///{folder / 'bench.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        metadata.drop_all(connection)
        connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    return url


# -- the service -------------------------------------------------------------------


def start_service(url: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "METASTORE_DATABASE_URL": url}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metastore.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--public-url",
            base,
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/changefeed/latest").status_code == 200:
                return process, f"{base}/dicomweb"
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("metastore serve did not start")


# -- measurements --------------------------------------------------------------------


def uids(root: str, query: str, tag: str) -> list[str]:
    with httpx.Client(timeout=120) as client:
        rows = client.get(f"{root}{query}").json()
    return [row[tag]["Value"][0] for row in rows]


def study_of(root: str, patient: str) -> tuple[str, list[str]]:
    (study,) = uids(root, f"/studies?PatientID={patient}", "0020000D")
    return study, uids(root, f"/studies/{study}/series", "0020000E")


def open_study(client: httpx.Client, pool: ThreadPoolExecutor, root: str, study: str) -> None:
    response = client.get(f"{root}/studies/{study}/series")
    response.raise_for_status()
    series = [row["0020000E"]["Value"][0] for row in response.json()]
    urls = [f"{root}/studies/{study}/series/{uid}/metadata" for uid in series]
    list(pool.map(lambda u: get(client, u), urls))


def concurrent_rate(root: str, urls: list[str], seconds: float, clients: int = 8) -> float:
    stop = time.monotonic() + seconds
    counts = [0] * clients
    errors: list[str] = []

    def run(index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(timeout=60) as client:
            while time.monotonic() < stop:
                try:
                    get(client, rng.choice(urls))
                    counts[index] += 1
                except httpx.HTTPError as err:
                    errors.append(str(err))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        print(f"  {len(errors)} errors, first: {errors[0]}")
    return sum(counts) / (time.perf_counter() - started)


def measure(
    name: str, root: str, repeats: int, seconds: float, drop_cache: Callable[[], None] | None
) -> dict[str, float]:
    big_study, (big_series,) = study_of(root, "BIG-SERIES")
    open_uid, _ = study_of(root, "OPEN-STUDY")
    big = f"{root}/studies/{big_study}/series/{big_series}/metadata"
    figures: dict[str, float] = {}
    with httpx.Client(timeout=300) as client, ThreadPoolExecutor(6) as pool:
        list_times = [timed(lambda: get(client, root + STUDY_LIST)) for _ in range(repeats)]
        figures["qido p50"] = statistics.median(list_times)
        figures["qido p99"] = percentile(list_times, 0.99)
        cold: list[float] = []
        for _ in range(5 if drop_cache else 1):
            if drop_cache:
                drop_cache()
            cold.append(timed(lambda: get(client, big)))
        figures["series cold p50"] = statistics.median(cold)
        warm = [timed(lambda: get(client, big)) for _ in range(max(10, repeats // 4))]
        figures["series warm p50"] = statistics.median(warm)
        open_study(client, pool, root, open_uid)  # warm, as a second viewer would find it
        opened = [
            timed(lambda: open_study(client, pool, root, open_uid))
            for _ in range(max(5, repeats // 10))
        ]
        figures["open study p50"] = statistics.median(opened)
    filler = uids(root, "/studies?PatientID=F*&limit=20", "0020000D")
    mix = [root + STUDY_LIST]
    for study in filler:
        mix.append(f"{root}/studies/{study}/series")
        series = uids(root, f"/studies/{study}/series", "0020000E")
        mix.extend(f"{root}/studies/{study}/series/{s}/metadata" for s in series[:1])
    with httpx.Client(timeout=60) as client:
        for url in mix:
            get(client, url)  # warm both
    figures["8 clients req/s"] = concurrent_rate(root, mix, seconds)
    print(f"{name}: " + ", ".join(f"{k} {v:,.1f}" for k, v in figures.items()), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default=None, help="PostgreSQL URL (default: a new SQLite file)")
    parser.add_argument("--instances", type=int, default=100_000, help="instances in the index")
    parser.add_argument(
        "--orthanc-instances", type=int, default=5_000, help="instances in Orthanc (>= 2,100)"
    )
    parser.add_argument("--repeats", type=int, default=200, help="requests per latency figure")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the 8-client run")
    parser.add_argument("--workers", type=int, default=1, help="metastore serve worker processes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with (
        tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp,
        LocalOrthanc(Path(tmp) / "orthanc") as orthanc,
    ):
        url = fresh_database(args.db, Path(tmp))
        load_orthanc(orthanc, args.orthanc_instances)
        started = time.perf_counter()
        summary = ingest_source(url, dicomweb_config(orthanc.root, name="orthanc"), workers=1)
        print(
            f"ingest: {summary.instances} instances from Orthanc in "
            f"{time.perf_counter() - started:.0f} s"
        )
        fill_index(url, args.instances)
        process, root = start_service(url, args.workers)
        engine = sa.create_engine(url)

        def drop_cache() -> None:
            with engine.begin() as connection:
                connection.execute(sa.delete(rendered_series))

        try:
            ours = measure("metastore", root, args.repeats, args.seconds, drop_cache)
            theirs = measure("orthanc", orthanc.root, args.repeats, args.seconds, None)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            engine.dispose()
    backend = "PostgreSQL" if args.db else "SQLite"
    print(
        f"\n{backend}; index {args.instances:,} instances; Orthanc "
        f"{args.orthanc_instances:,} instances; metastore serve --workers {args.workers}"
    )
    print(f"{'figure':<18} {'metastore':>12} {'orthanc':>12} {'ratio':>8}")
    for key in ours:
        faster = theirs[key] / ours[key] if "req/s" not in key else ours[key] / theirs[key]
        unit = "" if "req/s" in key else " ms"
        print(
            f"{key:<18} {ours[key]:>10,.1f}{unit:3} {theirs[key]:>10,.1f}{unit:3} {faster:>7.1f}x"
        )
    print("(ratio: how many times faster metastore is; Orthanc's cold figure is its first request)")


if __name__ == "__main__":
    main()
