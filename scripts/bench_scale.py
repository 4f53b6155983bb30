"""Build a 10M-instance index from real IDC series shapes and measure it as it grows.

Series come from the NCI Imaging Data Commons index (``idc-index-data``,
see ``scale_data.py``); each study is written through ``write_study``, the
one path every ingest uses, as a DICOMweb worker writes it (study row,
series summaries with one ``SERIES_ADDED``, then the series, consecutive
small ones together up to ``worker.INSTANCES_PER_CALL`` instances a
transaction, one ``INSTANCES_ADDED`` per series). Two synthetic CT studies
come first: 100 instances (one series) and 1,000 instances (four series of
250), the ``get_study`` probes.

It prints, as they come (a killed run still leaves its figures), and writes
to ``--out`` as JSON:

- every ``--every`` instances: ingest instances/s over the last interval and
  overall, the database size, autovacuum activity (PostgreSQL), the load;
- at 1M, 10M and the last instance (checkpoints): the size of each table and
  index, bytes per instance with and without the metadata JSON,
  ``get_study`` p50/p95 of the probes, ``bench_search``'s query families
  through ``metastore.search``, the indexes those scans used, and WADO-RS
  series metadata cold (the service's rendered cache dropped) and warm,
  through the function the service calls.

    python scripts/bench_scale.py [--instances 10000000] [--backend postgresql|sqlite]
        [--postgres URL] [--sqlite-dir DIR] [--idc PATH] [--every N] [--runs 40]
        [--writers 2] [--out FILE.json] [--keep] [--measure URL]

``scale_decide.py`` runs the schema experiments (partitioning, index costs,
TOAST compression) on copies of such an index, while it grows or after.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_db import throwaway_postgres  # noqa: E402
from bench_search import families  # noqa: E402
from scale_data import StudyShape, idc_index_path, probe_study, studies  # noqa: E402

from metastore import MetaStore  # noqa: E402
from metastore.errors import MetastoreError  # noqa: E402
from metastore.ingest.worker import INSTANCES_PER_CALL  # noqa: E402
from metastore.ingest.write import write_study  # noqa: E402
from metastore.progress import Progress  # noqa: E402
from metastore.search import search_series, search_studies  # noqa: E402
from metastore.service.metadata import series_metadata  # noqa: E402
from metastore.sources import StudyMetadata  # noqa: E402

log = logging.getLogger("bench_scale")
BASE = "http://bench.example/dicomweb"
SAMPLE = 10_000  # study rows kept for the search families (deep page: offset 9,000)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} {five:.1f} {fifteen:.1f}"


def say(text: str) -> None:
    print(text, flush=True)


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95 in ms of samples in seconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": statistics.median(ordered) * 1000, "p95_ms": p95 * 1000}


def timed(call: Callable[[], Any], runs: int, warm: int = 2) -> tuple[dict[str, float], Any]:
    result = None
    for _ in range(warm):
        result = call()
    samples, cpu = [], []
    for _ in range(runs):
        started, used = time.perf_counter(), time.process_time()
        result = call()
        samples.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
    # Under load the wall clock mostly waits for a core: the CPU this process used
    # (all of the work on SQLite, the client's part on PostgreSQL) says what the call costs.
    return {**percentiles(samples), "cpu_p50_ms": statistics.median(cpu) * 1000}, result


class Bench:
    """One run: the store, the figures so far, and where they are written."""

    def __init__(self, store: MetaStore, args: argparse.Namespace, path: str) -> None:
        self.store = store
        self.args = args
        self.pg = store.dialect == "postgresql"
        self.path = path  # the SQLite file, for its size
        self.results: dict[str, Any] = {
            "backend": store.dialect,
            "target": args.instances,
            "commit": _commit(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_start": load(),
            "ingest": [],
            "checkpoints": [],
        }

    def save(self) -> None:
        if self.args.out:
            Path(self.args.out).write_text(json.dumps(self.results, indent=1))

    def scalar(self, sql: str) -> Any:
        with self.store.reading("bench") as connection:
            return connection.exec_driver_sql(sql).scalar()

    def rows(self, sql: str) -> list[Any]:
        with self.store.reading("bench") as connection:
            return list(connection.exec_driver_sql(sql).all())

    def size(self) -> int:
        if self.pg:
            return int(self.scalar("SELECT pg_database_size(current_database())"))
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))

    def autovacuum(self) -> dict[str, Any]:
        if not self.pg:
            return {}
        found = self.rows(
            "SELECT relname, autovacuum_count, autoanalyze_count, n_dead_tup, n_live_tup,"
            " to_char(last_autovacuum, 'HH24:MI:SS') FROM pg_stat_user_tables"
            " WHERE relname IN ('instances', 'series', 'studies', 'outbox')"
        )
        return {
            r[0]: {
                "autovacuums": r[1],
                "autoanalyzes": r[2],
                "dead": r[3],
                "live": r[4],
                "last": r[5],
            }
            for r in found
        }

    def sample(self) -> list[dict[str, Any]]:
        """Up to SAMPLE indexed study rows, spread over the index, for the search families."""
        modulo = "%%" if self.pg else "%"  # psycopg reads a lone % as a placeholder
        found = self.rows(
            f"SELECT metadata FROM studies ORDER BY (id * 7919) {modulo} 10007, id LIMIT {SAMPLE}"
        )
        return [m if isinstance(m, dict) else json.loads(m) for (m,) in found]

    # ---- the checkpoint figures -------------------------------------------------------------

    def sizes(self, instances: int) -> dict[str, Any]:
        if self.pg:
            tables = dict(
                self.rows(
                    "SELECT relname, pg_total_relation_size(oid) FROM pg_class"
                    " WHERE relkind IN ('r', 'p') AND relnamespace = 'public'::regnamespace"
                )
            )
            indexes = dict(
                self.rows(
                    "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes"
                    " ORDER BY 2 DESC"
                )
            )
            percent = min(100.0, 100.0 * 20_000 / max(instances, 1))
            # metadata_text (revision 0008): the same document kept as text, for reads.
            stored, text, kept_text = self.rows(
                "SELECT avg(pg_column_size(metadata)), avg(octet_length(metadata::text)),"
                " avg(pg_column_size(metadata_text))"
                f" FROM instances TABLESAMPLE SYSTEM ({percent:.4f}) REPEATABLE (1)"
            )[0]
        else:
            found = self.rows("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
            names = dict(self.rows("SELECT name, type FROM sqlite_master"))
            tables = {n: s for n, s in found if names.get(n) == "table"}
            indexes = dict(
                sorted(((n, s) for n, s in found if names.get(n) == "index"), key=lambda x: -x[1])
            )
            high = self.scalar("SELECT max(id) FROM instances") or 0
            stored = text = self.scalar(
                f"SELECT avg(length(metadata)) FROM instances WHERE id > {max(0, high - 20_000)}"
            )
            kept_text = 0  # virtual on SQLite: computed on read, not stored
        total = self.size()
        json_bytes = (float(stored or 0) + float(kept_text or 0)) * instances
        return {
            "database_bytes": total,
            "bytes_per_instance": total / instances,
            "metadata_stored_bytes_per_instance": float(stored or 0),
            "metadata_text_bytes_per_instance": float(text or 0),
            "metadata_text_kept_bytes_per_instance": float(kept_text or 0),
            "bytes_per_instance_without_metadata": (total - json_bytes) / instances,
            "tables": tables,
            "indexes": indexes,
        }

    def index_scans(self) -> dict[str, int]:
        if not self.pg:
            return {}
        return dict(self.rows("SELECT indexrelname, idx_scan FROM pg_stat_user_indexes"))

    def searches(self) -> dict[str, Any]:
        runs = self.args.runs
        found: dict[str, Any] = {}
        sample = self.sample()
        for name, make, _sql, _params in families(sample, self.pg):
            rng = random.Random(11)
            queries = [make(rng) for _ in range(runs)]
            for query in queries[:2]:
                search_studies(self.store, query, limit=100)
            samples, rows = [], 0
            for query in queries:
                started = time.perf_counter()
                rows += len(search_studies(self.store, query, limit=100).rows)
                samples.append(time.perf_counter() - started)
            found[name] = {**percentiles(samples), "rows": rows / len(queries)}
            say(
                f"  search {name:26} p50 {found[name]['p50_ms']:8.2f} ms  p95 {found[name]['p95_ms']:8.2f} ms  rows {found[name]['rows']:.0f}"
            )
        rng = random.Random(13)
        years = [rng.randrange(2005, 2026) for _ in range(runs)]
        picked = [rng.choice(sample)["StudyInstanceUID"] for _ in range(runs)]
        others = {
            "count (a year)": [
                lambda y=y: search_studies(
                    self.store, {"StudyDate": f"{y}0101-{y}1231"}, limit=0, count=True
                )
                for y in years
            ],
            "series of a study": [
                lambda s=s: search_series(self.store, {}, study_uid=s) for s in picked
            ],
        }
        for name, calls in others.items():
            samples = []
            for call in calls:
                started = time.perf_counter()
                call()
                samples.append(time.perf_counter() - started)
            found[name] = percentiles(samples)
            say(
                f"  search {name:26} p50 {found[name]['p50_ms']:8.2f} ms  p95 {found[name]['p95_ms']:8.2f} ms"
            )
        return found

    def wado(self, probes: list[StudyShape]) -> dict[str, Any]:
        """WADO-RS series metadata, cold (rendered cache dropped) and warm."""
        found: dict[str, Any] = {}
        for probe in probes:
            study_uid = probe.row["StudyInstanceUID"]
            series_uid, size = probe.series[0]

            def cold(study_uid: str = study_uid, series_uid: str = series_uid) -> Any:
                with self.store.engine.begin() as connection:
                    connection.exec_driver_sql("DELETE FROM rendered_series")
                started = time.perf_counter()
                rendered = series_metadata(self.store, study_uid, series_uid, BASE)
                return time.perf_counter() - started, rendered

            cold_samples = []
            for _ in range(max(5, self.args.runs // 4)):
                seconds, rendered = cold()
                assert rendered is not None and rendered.instances == size
                cold_samples.append(seconds)
            warm, rendered = timed(
                lambda s=study_uid, se=series_uid: series_metadata(self.store, s, se, BASE),
                self.args.runs,
            )
            assert rendered is not None and rendered.instances == size
            found[f"{size} instances"] = {"cold": percentiles(cold_samples), "warm": warm}
            say(
                f"  WADO-RS series metadata, {size} instances: cold p50 {found[f'{size} instances']['cold']['p50_ms']:.1f} ms"
                f" p95 {found[f'{size} instances']['cold']['p95_ms']:.1f}; warm p50 {warm['p50_ms']:.2f} ms p95 {warm['p95_ms']:.2f}"
            )
        return found

    def checkpoint(self, instances: int, probes: list[StudyShape]) -> None:
        started = time.perf_counter()
        say(f"\n== checkpoint at {instances:,} instances ({self.store.dialect}), load {load()} ==")
        with self.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("ANALYZE")
        point: dict[str, Any] = {"instances": instances, "load": load()}
        point["sizes"] = sizes = self.sizes(instances)
        say(
            f"  database {sizes['database_bytes'] / 2**30:.2f} GiB: {sizes['bytes_per_instance']:,.0f} B/instance,"
            f" of which metadata JSON {sizes['metadata_stored_bytes_per_instance']:,.0f} B as stored"
            f" ({sizes['metadata_text_bytes_per_instance']:,.0f} B as text),"
            f" kept again as text for reads {sizes.get('metadata_text_kept_bytes_per_instance', 0):,.0f} B;"
            f" without both {sizes['bytes_per_instance_without_metadata']:,.0f} B/instance"
        )
        for name, size in sorted(sizes["tables"].items(), key=lambda x: -x[1])[:8]:
            say(f"  table {name:32} {size / 2**20:10.1f} MiB")
        for name, size in sizes["indexes"].items():
            say(f"  index {name:40} {size / 2**20:10.1f} MiB  {size / instances:6.1f} B/instance")
        point["autovacuum"] = self.autovacuum()
        for table, figures in point["autovacuum"].items():
            say(f"  autovacuum {table}: {figures}")
        point["get_study"] = {}
        for probe in probes:
            uid = probe.row["StudyInstanceUID"]
            figures, study = timed(lambda uid=uid: self.store.get_study(uid), self.args.runs)
            assert study is not None and study["NumberOfStudyRelatedInstances"] == probe.instances
            point["get_study"][str(probe.instances)] = figures
            say(
                f"  get_study {probe.instances:5,} instances: p50 {figures['p50_ms']:.1f} ms,"
                f" p95 {figures['p95_ms']:.1f} ms; CPU of this process p50 {figures['cpu_p50_ms']:.1f} ms"
            )
        before = self.index_scans()
        point["search"] = self.searches()
        after = self.index_scans()
        point["index_scans_during_search"] = {
            k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)
        }
        if self.pg:
            say(f"  index scans during the searches: {point['index_scans_during_search']}")
        point["wado_series_metadata"] = self.wado(probes)
        point["seconds"] = time.perf_counter() - started
        self.results["checkpoints"].append(point)
        self.save()
        say(f"== checkpoint took {point['seconds']:.0f} s ==\n")


def _commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return done.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_share(
    url: str, idc: str, limit: int, k: int, n: int, done: Any, go: Any, idle: Any, ready: Any
) -> None:
    """Writer ``k`` of ``n``: every n-th study of the order, pausing while ``go`` is clear."""
    logging.basicConfig(level=logging.WARNING)
    with MetaStore(url) as store:
        shapes = studies(Path(idc), limit)
        head = next(shapes, None)  # the IDC index read and ordered before the clock starts
        with ready.get_lock():
            ready.value += 1
        go.wait()
        for index, shape in enumerate(itertools.chain([head] if head else [], shapes)):
            if index % n != k:
                continue
            if not go.is_set():
                idle[k] = 1
                go.wait()
                idle[k] = 0
            try:
                # As a DICOMweb worker writes a study: its small series together.
                write_study(
                    store, shape.metadata, source="idc", instances_per_call=INSTANCES_PER_CALL
                )
            except MetastoreError as err:
                # Real metadata the store refuses (the IDC index holds SeriesDescriptions
                # with a NUL byte, which no engine keeps): that study, not the run.
                print(f"refused study {shape.row['StudyInstanceUID']}: {err}", flush=True)
            with done.get_lock():
                done.value += shape.instances
        idle[k] = 1


def run(url: str, args: argparse.Namespace, path: str) -> dict[str, Any]:
    root = f"2.25.{uuid.uuid4().int % 10**20}"
    with MetaStore(url) as store:
        bench = Bench(store, args, path)
        probes = [probe_study(root, [100], 1), probe_study(root, [250] * 4, 2)]
        for probe in probes:  # also registers the source before the writers start
            write_study(store, probe.metadata, source="idc")
        first = sum(p.instances for p in probes)
        context = multiprocessing.get_context("spawn")
        done, go, idle = context.Value("q", 0), context.Event(), context.Array("i", args.writers)
        ready = context.Value("i", 0)
        writers = [
            context.Process(
                target=write_share,
                args=(
                    url,
                    args.idc,
                    args.instances - first,
                    k,
                    args.writers,
                    done,
                    go,
                    idle,
                    ready,
                ),
                daemon=True,
            )
            for k in range(args.writers)
        ]
        say(
            f"{args.instances:,} instances on {store.dialect} by {args.writers} writer process(es),"
            f" commit {bench.results['commit']}, load {load()}"
        )
        for writer in writers:
            writer.start()
        try:
            return _drive(bench, args, writers, probes, first, done, go, idle, ready)
        finally:
            for writer in writers:  # an interrupted run leaves no writer behind
                if writer.is_alive():
                    writer.terminate()
                writer.join()


def _drive(
    bench: Bench,
    args: argparse.Namespace,
    writers: list[Any],
    probes: list[StudyShape],
    first: int,
    done: Any,
    go: Any,
    idle: Any,
    ready: Any,
) -> dict[str, Any]:
    """Start the writers together, report as they go, pause them for each checkpoint."""
    marks = sorted({m for m in (1_000_000, 10_000_000) if m < args.instances} | {args.instances})
    while ready.value < args.writers and all(w.exitcode in (None, 0) for w in writers):
        time.sleep(0.2)
    go.set()
    last_done, paused = first, 0.0
    started = last = time.perf_counter()
    with Progress("ingest", total=args.instances, unit="instances", interval=60) as progress:
        while True:
            alive = [w for w in writers if w.is_alive()]
            if any(w.exitcode not in (None, 0) for w in writers):
                for writer in alive:
                    writer.terminate()
                raise SystemExit("a writer failed (its traceback is above)")
            time.sleep(0.2)
            now_done = first + done.value
            progress.update(now_done - progress.counts["instances"])
            at_mark = bool(marks) and (now_done >= marks[0] or not alive)
            if now_done - last_done >= args.every or (
                now_done > last_done and (at_mark or not alive)
            ):
                now = time.perf_counter()
                line = {
                    "instances": now_done,
                    "interval_rate": (now_done - last_done) / (now - last),
                    "overall_rate": (now_done - first) / (now - started - paused),
                    "database_bytes": bench.size(),
                    "load": load(),
                    "autovacuum": bench.autovacuum().get("instances", {}),
                }
                bench.results["ingest"].append(line)
                say(
                    f"ingest {now_done:>11,} instances: {line['interval_rate']:7,.0f}/s now,"
                    f" {line['overall_rate']:7,.0f}/s overall, {line['database_bytes'] / 2**30:6.2f} GiB,"
                    f" load {line['load']}, autovacuum(instances) {line['autovacuum']}"
                )
                last_done, last = now_done, time.perf_counter()
            if at_mark:
                mark_started = time.perf_counter()
                go.clear()
                while not all(idle[k] or not w.is_alive() for k, w in enumerate(writers)):
                    time.sleep(0.2)
                bench.checkpoint(first + done.value, probes)
                marks.pop(0)
                go.set()
                paused += time.perf_counter() - mark_started
                last = time.perf_counter()
                last_done = first + done.value
            if not alive and not marks:
                break
    total = first + done.value
    bench.results["instances"] = total
    bench.results["ingest_seconds"] = seconds = time.perf_counter() - started - paused
    bench.results["load_end"] = load()
    bench.save()
    say(
        f"\n{total:,} instances, {seconds:,.0f} s of ingest: {(total - first) / seconds:,.0f} instances/s; load {load()}"
    )
    return bench.results


def measure(url: str, args: argparse.Namespace) -> None:
    """One checkpoint of an index a run built (``--measure URL``: writers may be paused meanwhile)."""
    with MetaStore(url) as store:
        bench = Bench(store, args, url.removeprefix("sqlite:///"))
        probes = []
        for patient in ("PROBE1", "PROBE2"):
            rows = bench.rows(
                "SELECT st.study_uid, se.series_uid, se.num_instances FROM studies st"
                f" JOIN series se ON se.study_id = st.id WHERE st.patient_id = '{patient}'"
                " ORDER BY se.series_number"
            )
            probes.append(
                StudyShape(
                    metadata=StudyMetadata(study={}, summaries=[], series=[]),
                    row={"StudyInstanceUID": rows[0][0]},
                    instances=sum(r[2] for r in rows),
                    series=[(r[1], r[2]) for r in rows],
                )
            )
        count = int(bench.scalar("SELECT sum(num_instances) FROM studies"))
        bench.checkpoint(count, probes)


@contextlib.contextmanager
def database(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    if args.backend == "postgresql":
        with throwaway_postgres(args.postgres, keep=args.keep) as url:
            if args.keep:
                say(f"the database stays after the run: {url}")
            yield url, ""
        return
    if args.keep:
        path = str(Path(tempfile.mkdtemp(dir=args.sqlite_dir)) / "scale.db")
        say(f"the database stays after the run: sqlite:///{path}")
        yield f"sqlite:///{path}", path
        return
    with tempfile.TemporaryDirectory(dir=args.sqlite_dir) as folder:
        path = str(Path(folder) / "scale.db")
        yield f"sqlite:///{path}", path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000_000)
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--sqlite-dir", default=None, help="where the SQLite file goes (a temporary folder in it)"
    )
    parser.add_argument(
        "--idc",
        default=None,
        help="the IDC series index (parquet, or a CSV excerpt); default: idc-index-data's",
    )
    parser.add_argument(
        "--every",
        type=int,
        default=None,
        help="instances between ingest lines (default instances/50)",
    )
    parser.add_argument(
        "--writers", type=int, default=2, help="writer processes (studies dealt round robin)"
    )
    parser.add_argument(
        "--measure", default=None, help="no run: one checkpoint of the index at this URL"
    )
    parser.add_argument("--runs", type=int, default=40, help="timed calls per latency figure")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the database (for --measure later)"
    )
    args = parser.parse_args()
    args.every = args.every or max(1000, args.instances // 50)
    if args.idc is None:
        try:
            args.idc = str(idc_index_path())
        except ImportError:
            parser.error(
                "idc-index-data is not installed (pip install -e '.[bench]'), or give --idc"
            )
    # A background run (nohup ... &) ignores SIGINT: SIGTERM ends it cleanly too (the database dropped).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.measure:
        measure(args.measure, args)
        return
    with database(args) as (url, path):
        run(url, args, path)


if __name__ == "__main__":
    main()
