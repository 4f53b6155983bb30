"""The shared rule table on matching.py and on the SQL of both engines."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from search_cases import CASES, COMPUTED, DATASET, DECOY, DECOY_COMPUTED, case_id

from metastore import MetaStore
from metastore.matching import parse_query
from metastore.search import search_instances, search_series, search_studies

UIDS = {
    "StudyInstanceUID": "1.2.826.0.1.3680043.9.7.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.9.7.1.1",
    "SOPInstanceUID": "1.2.826.0.1.3680043.9.7.1.1.1",
}
DECOY_UIDS = {
    "StudyInstanceUID": "2.25.1",
    "SeriesInstanceUID": "2.25.1.1",
    "SOPInstanceUID": "2.25.1.1.1",
}
DATA_SETS = [({**DATASET, **UIDS}, COMPUTED), ({**DECOY, **DECOY_UIDS}, DECOY_COMPUTED)]


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def indexed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MetaStore]:
    """Both data sets, indexed once per backend as launch files and folders index them."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("rules") / "rules.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres").migrated_clone()
    with MetaStore(url) as store:
        for data_set, _ in DATA_SETS:
            store.add_instances([{**data_set, "url": "http://archive/1"}], source="rules")
        yield store


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_matching_py(case: tuple[dict[str, str], bool]) -> None:
    query, expected = case
    assert parse_query(query).matches({**DATASET, **COMPUTED, **UIDS}) is expected


def _uids(rows: list[dict[str, Any]], tag: str) -> list[str]:
    return [row[tag]["Value"][0] for row in rows]


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_sql(indexed: MetaStore, case: tuple[dict[str, str], bool]) -> None:
    query, _ = case
    parsed = parse_query(query)
    matching = [d for d, computed in DATA_SETS if parsed.matches({**d, **computed})]
    studies = search_studies(indexed, query, count=True)
    assert sorted(_uids(studies.rows, "0020000D")) == sorted(
        d["StudyInstanceUID"] for d in matching
    )
    assert studies.total == len(studies.rows)
    series = search_series(indexed, query)
    assert sorted(_uids(series.rows, "0020000E")) == sorted(
        d["SeriesInstanceUID"] for d in matching
    )
    for data_set, _ in DATA_SETS:
        found = search_instances(indexed, query, study_uid=data_set["StudyInstanceUID"])
        expected = [data_set["SOPInstanceUID"]] if data_set in matching else []
        assert _uids(found.rows, "00080018") == expected
