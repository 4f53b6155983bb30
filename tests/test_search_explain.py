"""The study list's common queries are served by indexes: EXPLAIN shows no scan of studies.

PostgreSQL: with sequential scans discouraged (tables this small would
otherwise be read whole, which is the cheapest plan for a few rows), a
``Seq Scan on studies`` appears only where no index can serve the query.
SQLite: ``SCAN studies`` (without an index) is a full-table scan; ``SEARCH``
uses an index. Wildcards in the middle or at the start of a value are
served by pg_trgm on PostgreSQL; SQLite has no index for them (see README).
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from helpers import instances

from metastore import MetaStore
from metastore.search import search_statements

COMMON = [
    {},  # the plain study list, newest first
    {"PatientID": "PAT001"},
    {"PatientName": "Doe*"},
    {"PatientName": "doe^jane"},
    {"StudyDate": "20130101-20131231"},
    {"StudyDate": "20240101-", "ModalitiesInStudy": "CT"},
    {"AccessionNumber": "ACC1"},
    {"ModalitiesInStudy": "CT"},
    {"ModalitiesInStudy": "CT\\MR"},
    {"StudyDescription": "CT*"},
    {"PatientID": "PAT*"},
]
INFIX = [
    {"00100020": "*AT0*"},
    {"PatientName": "*jan*"},
    {"PatientName": "jane", "fuzzymatching": "true"},
    {"StudyDescription": "*chest*"},
    {"AccessionNumber": "*CC1*"},
]


def _plan(store: MetaStore, statement: sa.Select[Any]) -> str:
    engine = store.engine
    compiled = statement.compile(
        dialect=engine.dialect, compile_kwargs={"render_postcompile": True}
    )
    with engine.connect() as connection:
        if store.dialect == "postgresql":
            connection.exec_driver_sql("SET enable_seqscan = off")
            rows = connection.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params)
            return "\n".join(row[0] for row in rows)
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params)
        return "\n".join(row[-1] for row in rows)


def _scans_studies(store: MetaStore, plan: str) -> bool:
    if store.dialect == "postgresql":
        return "Seq Scan on studies" in plan
    return any(
        line.strip() == "SCAN studies"
        or line.strip().startswith("SCAN studies ")
        and "INDEX" not in line
        for line in plan.splitlines()
    )


@pytest.fixture
def filled(store: MetaStore) -> MetaStore:
    for n in range(6):
        study = f"1.2.9.{n}"
        modality = "CT" if n % 2 else "MR"
        store.add_instances(
            instances(study, f"{study}.1", count=2, Modality=modality, PatientID=f"PAT00{n}"),
            source="pacs",
        )
    return store


@pytest.mark.parametrize("query", COMMON, ids=str)
def test_common_study_queries_use_indexes(filled: MetaStore, query: dict[str, str]) -> None:
    page, count = search_statements(filled, query)
    for statement in (page, count):
        plan = _plan(filled, statement)
        assert not _scans_studies(filled, plan), plan


@pytest.mark.parametrize("query", INFIX, ids=str)
def test_infix_wildcards_use_trigram_indexes_on_postgresql(
    filled: MetaStore, query: dict[str, str]
) -> None:
    page, _ = search_statements(filled, query)
    plan = _plan(filled, page)
    if filled.dialect == "postgresql":
        assert not _scans_studies(filled, plan), plan
        if (
            "fuzzymatching" not in query
        ):  # three ORed patterns: on six rows the planner walks the list
            assert "_trgm" in plan, plan
    else:
        # SQLite: no index serves an infix pattern; the table is read in the list's order.
        assert "studies" in plan
