"""Benchmark: staying in sync with an archive, against a full crawl of it, and the follower's latency.

Starts a throw-away Orthanc (``orthanc_local.py``, StableAge 1 s), loads
``--studies`` small generated studies (1 series x 2 instances each, default
2,000) and indexes them once. Then, in the same run:

- changes 1% of the archive (``--changed``: a third grow by a series, a third
  are deleted, a third are new) and re-indexes with a **full crawl**
  (``metastore ingest dicomweb``: every study's series and metadata again);
- changes another 1% alike and runs ``metastore sync --prune`` (one counted
  crawl compared in SQL, only new and changed studies pulled, the deleted
  confirmed and pruned);
- runs the Orthanc follower (``metastore follow orthanc``) and stores
  ``--follow`` new studies one at a time: the latency from Orthanc calling a
  study stable (its ``StableStudy`` change, watched every 20 ms) to the
  study's ``INSTANCES_ADDED`` in the index (watched every 20 ms).

HTTP requests are counted at the transport of every DICOMweb client the run
opens (crawl and workers alike: one worker, in this process).

    python scripts/bench_sync.py [--db URL] [--studies 2000] [--changed 0.01] [--follow 20]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dicomweb import fresh_database  # noqa: E402
from orthanc_local import LocalOrthanc, ct_study  # noqa: E402

from metastore import EVENTS, MetaStore, sources  # noqa: E402
from metastore.ingest import ingest_source  # noqa: E402
from metastore.ingest.follow import follow  # noqa: E402
from metastore.ingest.sync import sync_source  # noqa: E402
from metastore.sources import SourceConfig  # noqa: E402
from metastore.sources.dicomweb import DicomWebSource, dicomweb_config  # noqa: E402
from metastore.sources.feeds import open_feed  # noqa: E402

SOURCE = "archive"


class Counting(httpx.HTTPTransport):
    """A real transport that counts its requests (shared by every client of the run)."""

    requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        Counting.requests += 1
        return super().handle_request(request)

    def close(self) -> None:
        """Clients close after each use; the pool stays for the run."""


def study(index: int, study_uid: str | None = None) -> list[bytes]:
    return list(ct_study(series=1, instances=2, index=index, study_uid=study_uid))


def upload(orthanc: LocalOrthanc, studies: list[list[bytes]]) -> None:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(orthanc.upload, studies))


def change(orthanc: LocalOrthanc, uids: list[str], count: int, first_new: int) -> list[str]:
    """Grow, delete and add about ``count`` studies; returns the UIDs left in the archive."""
    third = max(1, count // 3)
    grow, delete, keep = uids[:third], uids[third : 2 * third], uids[2 * third :]
    upload(orthanc, [study(0, uid) for uid in grow])
    for uid in delete:
        orthanc.delete("studies", uid)
    added = [study(first_new + i) for i in range(count - 2 * third)]
    upload(orthanc, added)
    # the changed ones go to the end, so the next change picks others
    return keep + [uid_of(files) for files in added] + grow


def uid_of(files: list[bytes]) -> str:
    import io

    import pydicom

    return str(pydicom.dcmread(io.BytesIO(files[0]), stop_before_pixels=True).StudyInstanceUID)


def measured(label: str, run: object) -> tuple[float, int]:
    before = Counting.requests
    started = time.perf_counter()
    result = run()  # type: ignore[operator]
    seconds = time.perf_counter() - started
    requests = Counting.requests - before
    print(f"{label:<28} {seconds:>8.2f}s {requests:>8} requests   {result}")
    return seconds, requests


def follower_latency(url: str, orthanc: LocalOrthanc, count: int) -> list[float]:
    """Seconds from StableStudy in Orthanc to INSTANCES_ADDED in the index, per new study."""
    stop = threading.Event()
    config = dicomweb_config(orthanc.root, name=SOURCE)
    with MetaStore(url) as store, open_feed("orthanc", orthanc.base, name=SOURCE) as feed:
        runner = threading.Thread(
            target=follow,
            args=(store, feed, config),
            kwargs={"stop": stop, "poll": 0.1, "start": "latest"},
        )
        runner.start()
        time.sleep(1.0)  # let it catch up with the feed so far
        latencies = []
        seen = max([0, *(e.seq for e in store.changes(after=0, limit=1_000_000))])
        with orthanc.client() as client:
            for i in range(count):
                files = study(900_000 + i)
                uid = uid_of(files)
                orthanc.upload(files)
                resource = client.post("/tools/lookup", content=uid).json()[0]["ID"]
                stable = indexed = None
                after = client.get("/changes", params={"last": ""}).json()["Last"] - 10
                while indexed is None:
                    now = time.perf_counter()
                    if stable is None:
                        changes = client.get("/changes", params={"since": after}).json()["Changes"]
                        if any(
                            c["ChangeType"] == "StableStudy" and c["ID"] == resource
                            for c in changes
                        ):
                            stable = now
                    events = store.changes(after=seen)
                    seen = max([seen, *(e.seq for e in events)])
                    if any(e.type == EVENTS.INSTANCES_ADDED and e.study_uid == uid for e in events):
                        indexed = now
                    time.sleep(0.02)
                latencies.append(indexed - (stable or indexed))
        stop.set()
        runner.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="a PostgreSQL URL (default: a SQLite file)")
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of studies changed")
    parser.add_argument("--follow", type=int, default=20, help="studies for the follower latency")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    transport = Counting()
    sources.register("dicomweb", lambda c: DicomWebSource(c, transport=transport))
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalOrthanc(Path(tmp) / "o", stable_age=1) as orthanc,
    ):
        started = time.perf_counter()
        files = [study(i) for i in range(args.studies)]
        upload(orthanc, files)
        uids = [uid_of(f) for f in files]
        print(f"{args.studies} studies in Orthanc ({time.perf_counter() - started:.1f}s)")
        url = fresh_database(args.db, Path(tmp), "bench")
        config: SourceConfig = dicomweb_config(orthanc.root, name=SOURCE)
        measured("initial index (full crawl)", lambda: ingest_source(url, config).studies)
        count = max(3, round(args.studies * args.changed))
        print(f"{count} studies changed before each run; database: {args.db or 'SQLite file'}")
        uids = change(orthanc, uids, count, args.studies)
        crawl_s, crawl_r = measured(
            "full crawl (ingest dicomweb)", lambda: ingest_source(url, config)
        )
        uids = change(orthanc, uids, count, args.studies + count)
        sync_s, sync_r = measured(
            "sync --prune", lambda: str(sync_source(url, config, prune=True)).splitlines()[0]
        )
        print(
            f"sync vs full crawl: {crawl_r / sync_r:.1f}x fewer requests, "
            f"{crawl_s / sync_s:.1f}x faster"
        )
        if args.follow:
            latencies = sorted(follower_latency(url, orthanc, args.follow))
            p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
            print(
                f"follower: StableStudy -> INSTANCES_ADDED over {len(latencies)} studies: "
                f"p50 {statistics.median(latencies):.2f}s, p99 {p99:.2f}s, max {latencies[-1]:.2f}s"
            )


if __name__ == "__main__":
    main()
