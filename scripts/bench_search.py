"""Benchmark QIDO-RS search over the index against hand-written SQL, on SQLite and PostgreSQL.

Builds a realistic index (default 1,000,000 instances in 10,000 studies:
patients with common surnames, studies over 20 years, CT/MR/CR/DX/US/MG/PT
mixes of 2-6 series with descriptions, study rows as a DICOMweb archive
sends them, then each study's instances through ``add_instances``), runs
``ANALYZE``, and times each query family with ``search_studies`` (the whole
call: parse, SQL, DICOM JSON rows with computed counts) and, in the same
run, a raw baseline: the hand-written SQL an analyst would write for the
same answer on the same tables and indexes (stored counts, no computed
attributes, no DICOM JSON). Prints p50/p99 per family, the ratio to the
baseline, and SQLite's p50 over PostgreSQL's.

    python scripts/bench_search.py [--instances 1000000] [--studies N]
        [--backends sqlite,postgresql] [--postgres URL] [--runs 40]
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_db import throwaway_postgres  # noqa: E402

from metastore import MetaStore  # noqa: E402
from metastore.progress import Progress  # noqa: E402
from metastore.search import search_instances, search_series, search_studies  # noqa: E402

log = logging.getLogger("bench_search")

SURNAMES = [
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "JONES",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "HERNANDEZ",
    "LOPEZ",
    "GONZALEZ",
    "WILSON",
    "ANDERSON",
    "THOMAS",
    "TAYLOR",
    "MOORE",
    "JACKSON",
    "MARTIN",
    "LEE",
    "PEREZ",
    "THOMPSON",
    "WHITE",
    "HARRIS",
    "SANCHEZ",
    "CLARK",
    "RAMIREZ",
    "LEWIS",
    "ROBINSON",
    "WALKER",
    "YOUNG",
    "ALLEN",
    "KING",
    "WRIGHT",
    "SCOTT",
    "TORRES",
    "NGUYEN",
    "HILL",
    "FLORES",
    "GREEN",
    "ADAMS",
    "NELSON",
    "BAKER",
    "HALL",
    "RIVERA",
    "CAMPBELL",
    "MITCHELL",
    "CARTER",
    "ROBERTS",
    "MUELLER",
    "SCHMIDT",
    "SCHNEIDER",
    "FISCHER",
    "WEBER",
    "MEYER",
    "WAGNER",
    "BECKER",
    "SCHULZ",
    "HOFFMANN",
    "DUBOIS",
    "MOREAU",
    "LAURENT",
    "SIMON",
    "MICHEL",
    "LEFEBVRE",
    "ROSSI",
    "RUSSO",
    "FERRARI",
    "ESPOSITO",
    "BIANCHI",
    "ROMANO",
    "COLOMBO",
    "RICCI",
    "TANAKA",
    "SUZUKI",
    "WATANABE",
    "ITO",
    "YAMAMOTO",
    "NAKAMURA",
    "KOBAYASHI",
    "KATO",
    "KIM",
    "PARK",
    "CHOI",
    "JUNG",
    "KANG",
    "CHO",
    "YOON",
    "JANSSEN",
    "DEVRIES",
    "BAKKER",
    "VISSER",
    "SMIT",
    "MEIJER",
    "NIELSEN",
    "JENSEN",
    "HANSEN",
    "PEDERSEN",
    "ANDERSEN",
    "LARSEN",
    "OCONNOR",
    "MURPHY",
    "KELLY",
    "WALSH",
    "BYRNE",
    "RYAN",
    "OBRIEN",
    "DOYLE",
    "MCCARTHY",
    "GALLAGHER",
    "KOWALSKI",
    "NOWAK",
    "WISNIEWSKI",
]
GIVEN = [
    "JAMES",
    "MARY",
    "ROBERT",
    "PATRICIA",
    "JOHN",
    "JENNIFER",
    "MICHAEL",
    "LINDA",
    "DAVID",
    "ELIZABETH",
    "WILLIAM",
    "BARBARA",
    "RICHARD",
    "SUSAN",
    "JOSEPH",
    "JESSICA",
    "THOMAS",
    "SARAH",
    "CHARLES",
    "KAREN",
    "CHRISTOPHER",
    "LISA",
    "DANIEL",
    "NANCY",
    "MATTHEW",
    "BETTY",
    "ANTHONY",
    "MARGARET",
    "MARK",
    "SANDRA",
    "ANNA",
    "LUCA",
    "SOFIA",
    "HANS",
    "ELENA",
    "YUKI",
    "HIROSHI",
    "MIN",
    "JAN",
    "EVA",
    "PIETER",
    "MAREK",
    "OLGA",
    "SEAN",
    "AOIFE",
]
PHYSICIANS = [f"{s}^{g}" for s, g in zip(SURNAMES[::3], GIVEN * 3, strict=False)][:30]
# (modality mix of a study, its weight, study descriptions, series descriptions, SOP class)
KINDS: list[tuple[tuple[str, ...], int, tuple[str, ...], tuple[str, ...], str]] = [
    (
        ("CT",),
        30,
        ("CT CHEST W CONTRAST", "CT ABDOMEN PELVIS W", "CT HEAD WO CONTRAST", "CTA CHEST PE"),
        ("AXIAL 1.25MM", "AXIAL 5MM", "CORONAL MPR", "SAGITTAL MPR", "SCOUT", "LUNG WINDOW"),
        "1.2.840.10008.5.1.4.1.1.2",
    ),
    (
        ("MR",),
        22,
        ("MR BRAIN WWO CONTRAST", "MR KNEE LEFT WO", "MR LUMBAR SPINE WO", "MR PROSTATE MP"),
        ("T1 SAG", "T2 AX FSE", "FLAIR AX", "DWI B1000", "ADC", "T1 POST GAD"),
        "1.2.840.10008.5.1.4.1.1.4",
    ),
    (
        ("CR",),
        12,
        ("XR CHEST 2 VIEWS", "XR HAND 3 VIEWS", "XR KNEE 2 VIEWS"),
        ("PA", "LATERAL", "OBLIQUE"),
        "1.2.840.10008.5.1.4.1.1.1",
    ),
    (
        ("DX",),
        10,
        ("XR CHEST PORTABLE", "XR ANKLE 3 VIEWS", "XR PELVIS AP"),
        ("AP", "LATERAL", "OBLIQUE"),
        "1.2.840.10008.5.1.4.1.1.1.1",
    ),
    (
        ("US",),
        8,
        ("US ABDOMEN COMPLETE", "US THYROID", "US OB 2ND TRIMESTER"),
        ("LIVER", "KIDNEY", "CINE"),
        "1.2.840.10008.5.1.4.1.1.6.1",
    ),
    (
        ("MG",),
        6,
        ("MAMMO SCREENING BILATERAL", "MAMMO DIAGNOSTIC LEFT"),
        ("L CC", "L MLO", "R CC", "R MLO"),
        "1.2.840.10008.5.1.4.1.1.1.2",
    ),
    (
        ("PT", "CT"),
        4,
        ("PET CT WHOLE BODY FDG",),
        ("PET AC", "PET NAC", "CT AC", "FUSION"),
        "1.2.840.10008.5.1.4.1.1.128",
    ),
    (
        ("CT", "SR"),
        5,
        ("CT CHEST LOW DOSE SCREENING",),
        ("AXIAL 1MM", "LUNG CAD REPORT"),
        "1.2.840.10008.5.1.4.1.1.2",
    ),
    (
        ("XA",),
        3,
        ("CORONARY ANGIOGRAPHY",),
        ("LAO 30", "RAO 30", "CINE"),
        "1.2.840.10008.5.1.4.1.1.12.1",
    ),
]


def build(
    root: str, studies: int, instances: int, seed: int = 7
) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(study row, its instances) of each study, deterministic for a seed."""
    rng = random.Random(seed)
    patients = max(1, studies * 6 // 10)
    weights = [k[1] for k in KINDS]
    per_study, extra = divmod(instances, studies)
    for n in range(studies):
        patient = rng.randrange(patients)
        prng = random.Random(patient)
        name = f"{prng.choice(SURNAMES)}^{prng.choice(GIVEN)}"
        birth = (
            f"{prng.randrange(1930, 2015)}{prng.randrange(1, 13):02d}{prng.randrange(1, 29):02d}"
        )
        sex = prng.choice("MF")
        modalities, _, descriptions, series_names, sop_class = rng.choices(KINDS, weights)[0]
        study_uid = f"{root}.{n}"
        date = f"{rng.randrange(2005, 2026)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        time_ = f"{rng.randrange(7, 20):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
        description = rng.choice(descriptions)
        code = f"P{abs(hash(description)) % 9000 + 1000}"
        study = {
            "SpecificCharacterSet": "ISO_IR 100",
            "StudyInstanceUID": study_uid,
            "StudyDate": date,
            "StudyTime": time_,
            "AccessionNumber": f"A{n:08d}",
            "ReferringPhysicianName": [{"Alphabetic": rng.choice(PHYSICIANS)}],
            "PatientName": [{"Alphabetic": name}],
            "PatientID": f"PID{patient:07d}",
            "PatientBirthDate": birth,
            "PatientSex": sex,
            "StudyID": str(n),
            "StudyDescription": description,
            "ProcedureCodeSequence": [
                {"CodeValue": code, "CodingSchemeDesignator": "LOCAL", "CodeMeaning": description}
            ],
        }
        count = per_study + (1 if n < extra else 0)
        series_count = min(count, rng.randrange(2, 7)) or 1
        rows = []
        for s in range(series_count):
            modality = modalities[s % len(modalities)]
            series_uid = f"{study_uid}.{s + 1}"
            size = count // series_count + (1 if s < count % series_count else 0)
            series_name = rng.choice(series_names)
            for i in range(size):
                rows.append(
                    {
                        **{
                            k: study[k]
                            for k in (
                                "StudyInstanceUID",
                                "StudyDate",
                                "StudyTime",
                                "AccessionNumber",
                                "PatientName",
                                "PatientID",
                                "PatientBirthDate",
                                "PatientSex",
                                "StudyDescription",
                            )
                        },
                        "SeriesInstanceUID": series_uid,
                        "SOPInstanceUID": f"{series_uid}.{i + 1}",
                        "SOPClassUID": sop_class
                        if modality != "SR"
                        else "1.2.840.10008.5.1.4.1.1.88.22",
                        "Modality": modality,
                        "SeriesNumber": s + 1,
                        "SeriesDescription": series_name,
                        "InstanceNumber": i + 1,
                        "Rows": 512,
                        "Columns": 512,
                        "SliceThickness": 1.25,
                        "ImagePositionPatient": [-175.0, -175.0, -100.0 + 1.25 * i],
                        "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                        "PixelSpacing": [0.68, 0.68],
                        "Manufacturer": "ACME Medical",
                        "url": f"dicomweb:http://pacs/studies/{study_uid}/series/{series_uid}/instances/{series_uid}.{i + 1}",
                    }
                )
        yield study, rows


def fill(store: MetaStore, root: str, studies: int, instances: int) -> list[dict[str, Any]]:
    """Index the synthetic data: study rows first (as a DICOMweb archive sends them), then instances."""
    kept: list[dict[str, Any]] = []
    started = time.perf_counter()
    with Progress("indexing", total=instances, unit="instances") as progress:
        pending: list[dict[str, Any]] = []
        for study, rows in build(root, studies, instances):
            kept.append(study)
            pending.append(study)
            if len(pending) == 500:
                store.add_studies(pending, source="pacs")
                pending = []
            store.add_instances(rows, source="pacs", made_in_client=True)
            progress.update(len(rows))
        if pending:
            store.add_studies(pending, source="pacs")
    log.info("indexed %d instances in %.0f s", instances, time.perf_counter() - started)
    return kept


Family = tuple[
    str, Callable[[random.Random], dict[str, str]], str, Callable[[dict[str, str]], tuple[Any, ...]]
]


def families(studies: list[dict[str, Any]], pg: bool) -> list[Family]:
    """(name, query maker, raw SQL, raw parameters) per query family."""
    ilike = "ILIKE" if pg else "LIKE"
    head = "SELECT id, metadata, num_series, num_instances, modalities_in_study FROM studies WHERE "
    tail = " ORDER BY study_date DESC, study_time DESC, study_uid LIMIT 100"
    p = "%s" if pg else "?"

    def pick(rng: random.Random) -> dict[str, Any]:
        return rng.choice(studies)

    def surname(rng: random.Random) -> str:
        return rng.choice(SURNAMES)

    def infix(rng: random.Random) -> str:
        name = surname(rng)
        start = rng.randrange(0, max(1, len(name) - 3))
        return name[start : start + 3]

    def quarter(rng: random.Random) -> tuple[str, str]:
        year = rng.randrange(2005, 2026)
        q = rng.randrange(4)
        return f"{year}{3 * q + 1:02d}01", f"{year}{3 * q + 3:02d}31"

    def date_range(rng: random.Random) -> dict[str, str]:
        low, high = quarter(rng)
        return {"StudyDate": f"{low}-{high}"}

    def births(rng: random.Random) -> dict[str, str]:
        year = rng.randrange(1930, 2015)
        return {"PatientBirthDate": f"{year}0101-{year}0331"}

    json_sql = (
        "metadata->>'PatientBirthDate' BETWEEN %s AND %s"
        if pg
        else "json_extract(metadata, '$.PatientBirthDate') BETWEEN ? AND ?"
    )
    sequence_sql = (
        "metadata @> jsonb_build_object('ProcedureCodeSequence', jsonb_build_array(jsonb_build_object('CodeValue', %s::text)))"
        if pg
        else "EXISTS (SELECT 1 FROM json_each(metadata, '$.ProcedureCodeSequence') AS item WHERE json_extract(item.value, '$.CodeValue') = ?)"
    )
    return [
        (
            "exact ID",
            lambda rng: {"PatientID": pick(rng)["PatientID"]},
            head + f"patient_id = {p}" + tail,
            lambda q: (q["PatientID"],),
        ),
        (
            "name prefix",
            lambda rng: {"PatientName": f"{surname(rng).lower()}*"},
            head + f"patient_name {ilike} {p}" + tail,
            lambda q: (q["PatientName"].replace("*", "%"),),
        ),
        (
            "name infix *x*",
            lambda rng: {"PatientName": f"*{infix(rng).lower()}*"},
            head + f"patient_name {ilike} {p}" + tail,
            lambda q: (q["PatientName"].replace("*", "%"),),
        ),
        (
            "date range",
            date_range,
            head + f"study_date BETWEEN {p} AND {p}" + tail,
            lambda q: tuple(q["StudyDate"].split("-")),
        ),
        (
            "modality",
            lambda rng: {"ModalitiesInStudy": rng.choice(["CT", "MR", "US", "MG", "PT", "XA"])},
            head + f"id IN (SELECT study_id FROM series WHERE modality = {p})" + tail,
            lambda q: (q["ModalitiesInStudy"],),
        ),
        (
            "accession",
            lambda rng: {"AccessionNumber": pick(rng)["AccessionNumber"]},
            head + f"accession_number = {p}" + tail,
            lambda q: (q["AccessionNumber"],),
        ),
        (
            "JSON-only (birth date)",
            births,
            head + json_sql + tail,
            lambda q: tuple(q["PatientBirthDate"].split("-")),
        ),
        (
            "sequence value",
            lambda rng: {
                "ProcedureCodeSequence.CodeValue": pick(rng)["ProcedureCodeSequence"][0][
                    "CodeValue"
                ]
            },
            head + sequence_sql + tail,
            lambda q: (q["ProcedureCodeSequence.CodeValue"],),
        ),
        (
            "deep page (offset 9000)",
            lambda rng: {"offset": str(min(9000, max(0, len(studies) - 100)))},
            "SELECT id, metadata, num_series, num_instances, modalities_in_study FROM studies"
            " ORDER BY study_date DESC, study_time DESC, study_uid LIMIT 100 OFFSET " + p,
            lambda q: (int(q["offset"]),),
        ),
    ]


def _ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


def _raw(connection: Any, sql: str, params: tuple[Any, ...]) -> float:
    """Seconds to run the hand-written SQL and fetch its rows."""
    started = time.perf_counter()
    cursor = connection.cursor()
    cursor.execute(sql, params)
    cursor.fetchall()
    return time.perf_counter() - started


def run_backend(name: str, url: str, args: argparse.Namespace, root: str) -> dict[str, float]:
    print(f"\n== {name} ==")
    p50s: dict[str, float] = {}
    with MetaStore(url) as store:
        studies = fill(store, root, args.studies, args.instances)
        with store.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")
        pg = store.dialect == "postgresql"
        raw = store.engine.raw_connection()
        try:
            print(
                f"{'family':26} {'p50 ms':>8} {'p99 ms':>8} {'raw p50':>8} {'ratio':>6} {'rows':>5}"
            )
            for family, make, sql, params in families(studies, pg):
                rng = random.Random(11)
                queries = [make(rng) for _ in range(args.runs)]
                for query in queries[:3]:  # warm the caches
                    search_studies(store, query, limit=100)
                ours, rows = [], 0
                for query in queries:
                    started = time.perf_counter()
                    rows += len(search_studies(store, query, limit=100).rows)
                    ours.append(time.perf_counter() - started)
                theirs = [_raw(raw, sql, params(query)) for query in queries]
                raw.rollback()
                p50, p99 = _ms(ours)
                base, _ = _ms(theirs)
                p50s[family] = p50
                print(
                    f"{family:26} {p50:8.2f} {p99:8.2f} {base:8.2f} {p50 / base:6.1f} "
                    f"{rows // len(queries):5d}"
                )
            rng = random.Random(13)
            picked = [rng.choice(studies)["StudyInstanceUID"] for _ in range(args.runs)]
            years = [rng.randrange(2005, 2026) for _ in range(args.runs)]
            others: dict[str, list[Callable[[], Any]]] = {
                "count (a year)": [
                    functools.partial(
                        search_studies,
                        store,
                        {"StudyDate": f"{y}0101-{y}1231"},
                        limit=0,
                        count=True,
                    )
                    for y in years
                ],
                "series of a study": [
                    functools.partial(search_series, store, {}, study_uid=s) for s in picked
                ],
                "instances of a series": [
                    functools.partial(search_instances, store, {}, study_uid=s, series_uid=f"{s}.1")
                    for s in picked
                ],
            }
            for family, calls in others.items():
                samples = []
                for call in calls:
                    started = time.perf_counter()
                    call()
                    samples.append(time.perf_counter() - started)
                p50, p99 = _ms(samples)
                p50s[family] = p50
                print(f"{family:26} {p50:8.2f} {p99:8.2f}")
        finally:
            raw.close()
    return p50s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--studies", type=int, default=None, help="default: instances / 100")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=40, help="queries per family")
    args = parser.parse_args()
    args.studies = args.studies or max(1, args.instances // 100)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    root = f"2.25.{uuid.uuid4().int % 10**20}"
    load = os.getloadavg()
    print(
        f"{args.instances:,} instances in {args.studies:,} studies; {args.runs} queries per family, "
        f"limit 100; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    results: dict[str, dict[str, float]] = {}
    backends = args.backends.split(",")
    if "postgresql" in backends:
        with throwaway_postgres(args.postgres) as url:
            results["postgresql"] = run_backend("postgresql", url, args, root)
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as folder:
            results["sqlite"] = run_backend(
                "sqlite", f"sqlite:///{Path(folder) / 'bench.db'}", args, root
            )
    if len(results) == 2:
        print("\nSQLite p50 / PostgreSQL p50")
        for family, pg in results["postgresql"].items():
            print(f"{family:26} {results['sqlite'][family] / pg:6.1f}x")
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
