"""The service under hostile requests: the token guards every route; nothing answers 500 or writes.

Hypothesis sends every route hostile path segments and QIDO parameters
(SQL text, LIKE and JSON-path metacharacters, huge numbers, control and
non-ASCII characters) on both engines: each answer is a clean 2xx/4xx, the
index is unchanged afterwards, and a hostile value never reaches SQL as
text (it would have to break out of a bound parameter to drop a table).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from helpers import instances
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from launch_helpers import table_rows
from starlette.routing import Route
from starlette.testclient import TestClient
from test_fuzz import FUZZ_EXAMPLES

from metastore import MetaStore
from metastore.service import Settings, create_app
from metastore.service.app import routes

TOKEN = "serve-canary-token-31c9"
STUDY, SERIES = "1.2.3", "1.2.3.1"
SOP = f"{SERIES}.1"
# Routes that stream from the archive an instance came from: never asked for a real instance here.
UPSTREAM = ("/frames/", "/rendered", "/bulk/", "{instance}")
HOSTILE = [
    "'; DROP TABLE studies; --",
    "1' OR '1'='1",
    "%",
    "_",
    "\\",
    "*",
    "?",
    "$.x",
    '"',
    "\x00",
    "\u202e",
    "1" * 80,
    "9" * 30,
    "-1",
    "2024-",
    "20240101-20230101",
    "Doe^*",
    "1.2.3\\1.2.4",
]


def paths() -> list[str]:
    found = []
    for route in routes():
        assert isinstance(route, Route)
        found.append(route.path)
    return found


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(
        r"\{(\w+)(?::path)?\}", lambda m: quote(values.get(m.group(1), "x"), safe=""), path
    )


@pytest.fixture
def populated(store: MetaStore) -> MetaStore:
    store.add_instances(instances(STUDY, SERIES, count=2))
    return store


def test_every_route_refuses_a_request_without_the_token(populated: MetaStore) -> None:
    with TestClient(create_app(populated, Settings(token=TOKEN))) as client:
        _token_everywhere(client)


def _token_everywhere(client: TestClient) -> None:
    real = {"study": STUDY, "series": SERIES, "instance": SOP, "frames": "1", "path": "x"}
    every = [fill(path, real) for path in paths()]
    assert "/dicomweb/studies" in every and "/changefeed" in every
    for path in every:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = client.get(path, headers=headers)
            assert answer.status_code == 401, (path, headers, answer.status_code)
            assert TOKEN not in answer.text
    # and with it, the routes answer (a QIDO search, the feed)
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/dicomweb/studies", headers=good).status_code == 200
    assert client.get("/changefeed", headers=good).status_code == 200
    assert (
        client.get(f"/dicomweb/studies/{STUDY}/series/{SERIES}/metadata", headers=good).status_code
        == 200
    )


SEGMENT = st.sampled_from(HOSTILE) | st.text(max_size=20)
KEYS = (
    st.sampled_from(
        [
            "PatientName",
            "StudyDate",
            "StudyInstanceUID",
            "ModalitiesInStudy",
            "00100020",
            "limit",
            "offset",
            "fuzzymatching",
            "includefield",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "ReferencedSeriesSequence.SeriesInstanceUID",
            "after",
            "timeout",
            "Modality",
        ]
    )
    | st.sampled_from(HOSTILE)
    | st.text(max_size=10)
)


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(paths()),
    segments=st.fixed_dictionaries(
        {k: SEGMENT for k in ("study", "series", "instance", "frames", "path")}
    ),
    real=st.booleans(),
    params=st.lists(st.tuples(KEYS, SEGMENT), max_size=4),
)
def test_hostile_requests_get_a_clean_answer_and_write_nothing(
    populated: MetaStore,
    route: str,
    segments: dict[str, str],
    real: bool,
    params: list[tuple[str, str]],
) -> None:
    if real and not any(mark in route for mark in UPSTREAM):
        segments = {**segments, "study": STUDY, "series": SERIES, "instance": SOP}
    before = table_rows(populated)
    path = fill(route, segments)
    query = urlencode(params)
    with TestClient(create_app(populated, Settings()), raise_server_exceptions=True) as client:
        answer = client.get(f"{path}?{query}" if query else path, headers={"Accept": "*/*"})
    assert answer.status_code < 500 or answer.status_code in (502, 504), (
        path,
        query,
        answer.status_code,
        answer.text[:200],
    )
    assert table_rows(populated) == before


def test_sql_text_in_every_qido_parameter_is_only_a_value(populated: MetaStore) -> None:
    with TestClient(create_app(populated, Settings())) as client:
        _sql_text(client)


def _sql_text(client: TestClient) -> None:
    for level in ("/dicomweb/studies", "/dicomweb/series", "/dicomweb/instances"):
        for key in (
            "PatientName",
            "PatientID",
            "StudyDescription",
            "Modality",
            "StudyInstanceUID",
            "SeriesDescription",
            "AccessionNumber",
            "00100010",
        ):
            for value in HOSTILE:
                answer = client.get(level, params={key: value})
                assert answer.status_code in (200, 204, 400), (level, key, value, answer.text[:200])
    found: Any = client.get("/dicomweb/studies").json()
    assert [s["0020000D"]["Value"][0] for s in found] == [STUDY]  # the table is still there
