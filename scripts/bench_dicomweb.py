"""Benchmark: DICOMweb ingestion from a local Orthanc against the bare fetch floor.

Starts a throw-away Orthanc (see ``orthanc_local.py``), loads generated CT
studies (by default 24 studies x 4 series x 25 instances = 2,400 instances),
then measures, in the same run, for each worker count N (``--workers``,
default 1 2 4):

- the fetch floor: the very QIDO-RS and WADO-RS requests an ingest makes,
  made bare (bodies read, nothing parsed, nothing stored) by N clients at once;
- ``metastore.ingest.ingest_source`` with N workers (N > 1: processes) into
  a fresh database whose schema is made beforehand (the whole run: search,
  queue, workers, writes), reading
  ``--prefetch`` series ahead; with one worker also without reading ahead
  (``prefetch 0``: fetch, decode and write one after the other).

Each line gives instances/s, the ratio of ingest to floor, and where the
CPU went during the ingest: seconds used by Orthanc, by the database server
(PostgreSQL's processes; SQLite runs inside the workers) and by metastore's
own processes, with the wall time and the load average. A side near
``wall x cores`` of CPU, or the machine's load, is the limit.

    python scripts/bench_dicomweb.py [--db postgresql+psycopg://user@host/db] [--repeat 3]

``--db`` names a PostgreSQL server: each run gets a throwaway database on
it (``bench_db.py``); the default is a new SQLite file per run.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_db import throwaway_postgres  # noqa: E402
from orthanc_local import LocalOrthanc, ct_study  # noqa: E402

from metastore import MetaStore  # noqa: E402
from metastore.ingest import ingest_source  # noqa: E402
from metastore.ingest.prefetch import DEFAULT_DEPTH  # noqa: E402
from metastore.sources.dicomweb import DicomWebSource, dicomweb_config  # noqa: E402

PAGE = 1000
_TICK = os.sysconf("SC_CLK_TCK")

Plan = list[list[tuple[str, dict[str, int]]]]


def request_plan(root: str) -> Plan:
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


def fetch_floor(root: str, plan: Plan, clients: int) -> float:
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


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _postgres_backends(database: str | None) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend serving ``database``, by pid.

    A backend names its database in its title (``postgres: ... user database host``);
    other clients of the same server are not counted.
    """
    found: dict[int, float] = {}
    if database is None:
        return found
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres:") and f" {database} " in title:
                found[int(entry.name)] = _process_cpu(int(entry.name))
    return found


def _descendants(root: int) -> dict[int, float]:
    """CPU seconds used so far by each process below ``root`` (worker processes, by pid)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    below = {root}
    grew = True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in below} - below
        below |= found
        grew = bool(found)
    return {pid: _process_cpu(pid) for pid in below - {root}}


def _own_cpu() -> float:
    """CPU seconds of this process."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


@contextmanager
def database(server: str | None, folder: Path, label: str) -> Iterator[str]:
    """A fresh database for one run, its schema made (not timed: a pull's cost, not a setup's).

    A throwaway PostgreSQL database, or a new SQLite file.
    """
    with ExitStack() as stack:
        if server is None:
            url = f"sqlite:///{folder / f'{label}.db'}"
        else:
            url = stack.enter_context(throwaway_postgres(server))
        MetaStore(url).close()
        yield url


def measured(orthanc_pid: int, url: str, run: Callable[[], float]) -> dict[str, float]:
    """Run ``run`` (it returns its own wall time) and the CPU each side used meanwhile.

    Processes that exit during the run (worker processes, their database
    backends) take their CPU with them, so both are sampled while it goes on
    (what one uses in its last 0.2 s is missed).
    """
    name = sa.make_url(url).database if url.startswith("postgresql") else None
    me = os.getpid()
    backends: dict[int, float] = {}
    workers: dict[int, float] = {}
    done = threading.Event()
    sampling = [0.0]  # CPU the sampler itself uses, not the ingest's

    def sample() -> None:
        backends.update(_postgres_backends(name))
        workers.update(_descendants(me))

    def keep_sampling() -> None:
        while not done.wait(0.2):
            sample()
        sampling[0] = time.thread_time()

    sampler = threading.Thread(target=keep_sampling, daemon=True)
    sample()
    start = {**backends, **workers}
    before = (_process_cpu(orthanc_pid), _own_cpu())
    sampler.start()
    wall = run()
    done.set()
    sampler.join()
    sample()
    after = (_process_cpu(orthanc_pid), _own_cpu())
    orthanc, own = (b - a for a, b in zip(before, after, strict=True))
    workers.pop(orthanc_pid, None)
    postgres = sum(cpu - start.get(pid, 0.0) for pid, cpu in backends.items())
    own += sum(cpu - start.get(pid, 0.0) for pid, cpu in workers.items()) - sampling[0]
    return {"wall": wall, "orthanc": orthanc, "postgres": postgres, "metastore": own}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=None, help="a PostgreSQL server URL (default: SQLite)")
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--instances", type=int, default=25)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--prefetch", type=int, default=DEFAULT_DEPTH, help="series read ahead")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each line")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    total = args.studies * args.series * args.instances
    lines = [(1, 0)] + [(n, args.prefetch) for n in args.workers]
    with tempfile.TemporaryDirectory() as tmp, LocalOrthanc(Path(tmp) / "orthanc") as orthanc:
        assert orthanc._process is not None
        pid = orthanc._process.pid
        started = time.perf_counter()
        for index in range(args.studies):
            orthanc.upload(ct_study(series=args.series, instances=args.instances, index=index))
        print(f"loaded {total} instances into Orthanc in {time.perf_counter() - started:.1f}s")
        plan = request_plan(orthanc.root)
        n_requests = sum(len(study) for study in plan) + 2
        fetch_floor(orthanc.root, plan, 1)  # warm Orthanc's caches for both sides
        print(f"{n_requests} requests per ingest; database: {args.db or 'SQLite file'}")
        print(
            f"{'workers':>7} {'prefetch':>8}  {'floor/s':>7}  {'ingest/s':>8}  {'ratio':>5}"
            f"  {'wall':>5}  {'cpu: orthanc':>12} {'db':>5} {'metastore':>9}  load"
        )
        config = dicomweb_config(orthanc.root, name="orthanc")
        ratios: dict[tuple[int, int], list[float]] = {}
        rates: dict[tuple[int, int], list[float]] = {}
        for round_ in range(args.repeat):
            for workers, prefetch in lines:
                floor = total / fetch_floor(orthanc.root, plan, workers)
                label = f"bench{round_}-{workers}-{prefetch}"
                with database(args.db, Path(tmp), label) as url:

                    def ingest(
                        url: str = url, workers: int = workers, depth: int = prefetch
                    ) -> float:
                        summary = ingest_source(
                            url, config, workers=workers, lease=120, prefetch=depth
                        )
                        if summary.instances != total or summary.failures:
                            raise SystemExit(f"ingest incomplete: {summary}")
                        return summary.seconds

                    cpu = measured(pid, url, ingest)
                rate = total / cpu["wall"]
                rates.setdefault((workers, prefetch), []).append(rate)
                ratios.setdefault((workers, prefetch), []).append(rate / floor)
                load = " ".join(f"{x:.1f}" for x in os.getloadavg())
                print(
                    f"{workers:>7} {prefetch:>8}  {floor:>7,.0f}  {rate:>8,.0f}  {rate / floor:>5.0%}"
                    f"  {cpu['wall']:>5.2f}  {cpu['orthanc']:>12.2f} {cpu['postgres']:>5.2f}"
                    f" {cpu['metastore']:>9.2f}  {load}",
                    flush=True,
                )
        print("median of the runs (min-max):")
        for key in lines:
            low, high = min(ratios[key]), max(ratios[key])
            print(
                f"  {key[0]} workers, prefetch {key[1]}: {statistics.median(rates[key]):,.0f} inst/s,"
                f" ratio {statistics.median(ratios[key]):.0%} ({low:.0%}-{high:.0%})"
            )


if __name__ == "__main__":
    main()
