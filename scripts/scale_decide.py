"""Schema decisions for scale, measured on copies of a bench_scale index (PostgreSQL).

Copies the first ``--rows`` instances of an index built by
``bench_scale.py`` (its database, given by URL, may still be growing: only
rows already written are read) into side tables, measures, and drops them:

- partitioning: ``instances`` as it is vs hash-partitioned by study (16
  partitions; the study id must join every unique key): bulk load, one
  transaction per series, the rows of the 1,000-instance probe study, a
  look-up by SOPInstanceUID alone;
- indexes: the three single-column instance indexes (``sop_uid``,
  ``image_id``, ``url``): their size, the time to build each, the per-series
  insert rate with and without them, and the look-up each serves;
- TOAST compression of ``metadata``: pglz, lz4, none (``STORAGE EXTERNAL``):
  size, load time and the time to read the probe study's metadata as text.

    python scripts/scale_decide.py --db postgresql+psycopg://postgres@127.0.0.1:5432/metastore_bench_xxx
        [--rows 1000000] [--series 200] [--runs 40] [--nice N] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa

from metastore import db

PARTITIONS = 16
_COLUMNS = (
    "id, series_id, sop_uid, sop_class_uid, instance_number, number_of_frames, rows, columns,"
    " url, image_id, version, metadata, created_at, updated_at"
)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000,
    }


class Lab:
    def __init__(self, url: str, say: Callable[[str], None], nice: int = 0) -> None:
        libpq = sa.make_url(db.resolve_url(url)).set(drivername="postgresql")
        self.conn = psycopg.connect(libpq.render_as_string(hide_password=False), autocommit=True)
        self.say = say
        if nice:
            # The experiments share the machine with the ingest they copy from: their
            # server process yields to it (possible where the server runs on this host).
            pid = self.one("SELECT pg_backend_pid()")[0]
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, pid, nice)
                os.setpriority(os.PRIO_PROCESS, 0, nice)

    def one(self, sql: str, params: Any = None) -> Any:
        return self.conn.execute(sql, params).fetchone()

    def all(self, sql: str, params: Any = None) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    def timed(self, sql: str, params: Any = None) -> float:
        started = time.perf_counter()
        self.conn.execute(sql, params)
        return time.perf_counter() - started

    def fetch_time(self, sql: str, params: Any) -> float:
        started = time.perf_counter()
        self.conn.execute(sql, params).fetchall()
        return time.perf_counter() - started

    def size(self, table: str) -> int:
        if self.one("SELECT relkind FROM pg_class WHERE relname = %s", (table,))[0] == "p":
            return int(
                self.one(
                    "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                    " WHERE inhparent = %s::regclass",
                    (table,),
                )[0]
            )
        return int(self.one("SELECT pg_total_relation_size(%s::regclass)", (table,))[0])

    def drop(self, *tables: str) -> None:
        for table in tables:
            self.conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")


def _copy_sql(table: str, where: str) -> str:
    return (
        f"INSERT INTO {table} ({_COLUMNS}, study_id) SELECT "
        + ", ".join(f"i.{c.strip()}" for c in _COLUMNS.split(","))
        + f", s.study_id FROM instances i JOIN series s ON s.id = i.series_id WHERE {where}"
    )


def partition_and_indexes(lab: Lab, rows: int, series_count: int, runs: int) -> dict[str, Any]:
    say = lab.say
    tables = ("exp_plain", "exp_part", "exp_lean", "exp_hashurl")
    lab.drop(*tables)
    like = "LIKE instances INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION"
    lab.conn.execute(f"CREATE TABLE exp_plain ({like}, study_id bigint NOT NULL)")
    lab.conn.execute("ALTER TABLE exp_plain ADD PRIMARY KEY (id), ADD UNIQUE (series_id, sop_uid)")
    for column in ("sop_uid", "image_id", "url"):
        lab.conn.execute(f"CREATE INDEX ON exp_plain ({column})")
    lab.conn.execute(f"CREATE TABLE exp_lean ({like}, study_id bigint NOT NULL)")
    lab.conn.execute("ALTER TABLE exp_lean ADD PRIMARY KEY (id), ADD UNIQUE (series_id, sop_uid)")
    # As it is, but the url (looked up by equality only) under a hash index.
    lab.conn.execute(f"CREATE TABLE exp_hashurl ({like}, study_id bigint NOT NULL)")
    lab.conn.execute(
        "ALTER TABLE exp_hashurl ADD PRIMARY KEY (id), ADD UNIQUE (series_id, sop_uid)"
    )
    lab.conn.execute("CREATE INDEX ON exp_hashurl (sop_uid)")
    lab.conn.execute("CREATE INDEX ON exp_hashurl (image_id)")
    lab.conn.execute("CREATE INDEX exp_hashurl_url_hash ON exp_hashurl USING hash (url)")
    lab.conn.execute(
        f"CREATE TABLE exp_part ({like}, study_id bigint NOT NULL) PARTITION BY HASH (study_id)"
    )
    for k in range(PARTITIONS):
        lab.conn.execute(
            f"CREATE TABLE exp_part_{k} PARTITION OF exp_part"
            f" FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {k})"
        )
    lab.conn.execute(
        "ALTER TABLE exp_part ADD PRIMARY KEY (study_id, id), ADD UNIQUE (study_id, series_id, sop_uid)"
    )
    for column in ("sop_uid", "image_id", "url"):
        lab.conn.execute(f"CREATE INDEX ON exp_part ({column})")
    found: dict[str, Any] = {"rows": rows, "bulk_load_s": {}}
    for table in tables:
        seconds = lab.timed(_copy_sql(table, "i.id <= %s"), (rows,))
        found["bulk_load_s"][table] = seconds
        say(
            f"  bulk load of {rows:,} rows into {table}: {seconds:.1f} s ({rows / seconds:,.0f} rows/s), load {_load()}"
        )
    lab.conn.execute("ANALYZE exp_plain")
    lab.conn.execute("ANALYZE exp_part")
    lab.conn.execute("ANALYZE exp_lean")
    lab.conn.execute("ANALYZE exp_hashurl")
    # One transaction per series, as the store writes: series written after the copied rows.
    # Whole series only, well behind a writer that may still be adding rows.
    high = lab.one("SELECT max(id) FROM instances")[0] - 20_000
    picked = lab.all(
        "SELECT series_id, count(*) FROM instances WHERE series_id IN"
        " (SELECT series_id FROM instances WHERE id > %s AND id < %s)"
        " GROUP BY series_id HAVING min(id) > %s AND max(id) < %s ORDER BY min(id) LIMIT %s",
        (rows, high, rows, high, series_count),
    )
    spent = dict.fromkeys(tables, 0.0)
    inserted = sum(n for _, n in picked)
    for series_id, _ in picked:
        for table in tables:
            with lab.conn.transaction():
                spent[table] += lab.timed(_copy_sql(table, "i.series_id = %s"), (series_id,))
    found["per_series_insert"] = {
        t: {"rows_per_s": inserted / spent[t], "series": len(picked), "rows": inserted}
        for t in tables
    }
    for table in tables:
        say(
            f"  per-series insert into {table}: {inserted / spent[table]:,.0f} rows/s ({len(picked)} series, {inserted:,} rows)"
        )
    big = lab.one("SELECT id FROM studies WHERE patient_id = 'PROBE2'")[0]
    series_ids = [r[0] for r in lab.all("SELECT id FROM series WHERE study_id = %s", (big,))]
    sop, url = lab.one(
        "SELECT sop_uid, url FROM instances WHERE series_id = %s LIMIT 1", (series_ids[0],)
    )
    reads = {
        "study (1,000 instances), plain": (
            "SELECT metadata::text FROM exp_plain WHERE series_id = ANY(%s)",
            (series_ids,),
        ),
        "study (1,000 instances), partitioned": (
            "SELECT metadata::text FROM exp_part WHERE study_id = %s AND series_id = ANY(%s)",
            (big, series_ids),
        ),
        "SOPInstanceUID alone, plain": ("SELECT id FROM exp_plain WHERE sop_uid = %s", (sop,)),
        "SOPInstanceUID alone, partitioned": ("SELECT id FROM exp_part WHERE sop_uid = %s", (sop,)),
        "url, with ix url": ("SELECT id FROM exp_plain WHERE url = %s", (url,)),
        "url, hash index": ("SELECT id FROM exp_hashurl WHERE url = %s", (url,)),
        "url, without (lean)": ("SELECT id FROM exp_lean WHERE url = %s", (url,)),
        "SOPInstanceUID alone, without ix (lean)": (
            "SELECT id FROM exp_lean WHERE sop_uid = %s",
            (sop,),
        ),
    }
    samples: dict[str, list[float]] = {name: [] for name in reads}
    for run in range(runs + 2):
        for name, (sql, params) in reads.items():
            if "lean" in name and run >= 5:
                continue  # a sequential scan: a few runs tell
            seconds = lab.fetch_time(sql, params)
            if run >= 2:
                samples[name].append(seconds)
    found["reads"] = {name: _ms(s) for name, s in samples.items() if s}
    for name, figures in found["reads"].items():
        say(f"  read {name:42} p50 {figures['p50_ms']:8.2f} ms  p95 {figures['p95_ms']:8.2f} ms")
    found["sizes"] = {t: lab.size(t) for t in tables}
    found["index_sizes"] = dict(
        lab.all(
            "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes"
            " WHERE relname IN ('exp_plain', 'exp_hashurl') ORDER BY 2 DESC"
        )
    )
    say(f"  sizes: {', '.join(f'{t} {s / 2**20:,.0f} MiB' for t, s in found['sizes'].items())}")
    found["index_build_s"] = {}
    for column in ("sop_uid", "image_id", "url"):
        found["index_build_s"][column] = seconds = lab.timed(f"CREATE INDEX ON exp_lean ({column})")
        say(f"  CREATE INDEX on {column} over {rows:,} rows: {seconds:.1f} s")
    found["index_build_s"]["url (hash)"] = seconds = lab.timed(
        "CREATE INDEX ON exp_lean USING hash (url)"
    )
    say(f"  CREATE INDEX USING hash on url over {rows:,} rows: {seconds:.1f} s")
    for name, size in found["index_sizes"].items():
        say(f"  index {name:40} {size / 2**20:8.1f} MiB  {size / rows:6.1f} B/row")
    lab.drop(*tables)
    return found


def toast(lab: Lab, rows: int, runs: int) -> dict[str, Any]:
    say = lab.say
    # A row under TOAST_TUPLE_THRESHOLD (~2 KB) is stored as it is, whatever the method.
    kinds = {
        "pglz": "COMPRESSION pglz",
        "lz4": "COMPRESSION lz4",
        "none": "",
    }
    found: dict[str, Any] = {}
    big = lab.one("SELECT id FROM studies WHERE patient_id = 'PROBE2'")[0]
    series_ids = [r[0] for r in lab.all("SELECT id FROM series WHERE study_id = %s", (big,))]
    for number, (kind, clause) in enumerate(kinds.items()):
        table = f"exp_toast_{number}"
        lab.drop(table)
        lab.conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, series_id bigint NOT NULL,"
            f" metadata jsonb {clause} NOT NULL)"
        )
        if kind == "none":
            lab.conn.execute(f"ALTER TABLE {table} ALTER COLUMN metadata SET STORAGE EXTERNAL")
        lab.conn.execute(f"CREATE INDEX ON {table} (series_id)")
        # ::text::jsonb makes a fresh value, so it is compressed with this table's method.
        seconds = lab.timed(
            f"INSERT INTO {table} SELECT id, series_id, metadata::text::jsonb FROM instances WHERE id <= %s",
            (rows,),
        )
        lab.conn.execute(f"VACUUM ANALYZE {table}")
        samples = []
        for run in range(runs + 2):
            took = lab.fetch_time(
                f"SELECT metadata::text FROM {table} WHERE series_id = ANY(%s)", (series_ids,)
            )
            if run >= 2:
                samples.append(took)
        stored = lab.one(f"SELECT avg(pg_column_size(metadata)) FROM {table}")[0]
        found[kind] = {
            "bytes": lab.size(table),
            "load_s": seconds,
            "stored_bytes_per_row": float(stored),
            "read_study_1000": _ms(samples),
        }
        say(
            f"  TOAST {kind:28}: {found[kind]['bytes'] / 2**20:8,.0f} MiB, {float(stored):6,.0f} B/row stored,"
            f" load {seconds:.1f} s, read 1,000 p50 {found[kind]['read_study_1000']['p50_ms']:.1f} ms"
            f" p95 {found[kind]['read_study_1000']['p95_ms']:.1f} ms, load {_load()}"
        )
        lab.drop(table)
    return found


def decide(
    url: str, rows: int, series_count: int, runs: int, say: Callable[[str], None], nice: int = 0
) -> dict[str, Any]:
    lab = Lab(url, say, nice)
    try:
        have = lab.one("SELECT max(id) FROM instances")[0] or 0
        if have < rows + 50_000:
            raise SystemExit(f"the index holds {have:,} instances; --rows {rows:,} needs more")
        say(f"== schema experiments on the first {rows:,} of {have:,} instances, load {_load()} ==")
        found = {"rows": rows, "load_start": _load()}
        found["partition_and_indexes"] = partition_and_indexes(lab, rows, series_count, runs)
        found["toast"] = toast(lab, rows, runs)
        found["load_end"] = _load()
        say(f"== done, load {_load()} ==")
        return found
    finally:
        lab.drop(
            "exp_plain",
            "exp_part",
            "exp_lean",
            "exp_hashurl",
            *(f"exp_toast_{n}" for n in range(3)),
        )
        lab.conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a bench_scale database (PostgreSQL)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--series", type=int, default=200, help="series for the per-series insert rate"
    )
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--nice", type=int, default=0, help="run at this niceness (server side too)"
    )
    args = parser.parse_args()
    found = decide(
        args.db, args.rows, args.series, args.runs, lambda text: print(text, flush=True), args.nice
    )
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(found, handle, indent=1)


if __name__ == "__main__":
    main()
