"""Fuzzing with a fixed budget: hostile input ends in a ``MetastoreError`` or is read, never another exception.

What is fuzzed: the DICOM JSON codec, the launch-file reader (mutations of a
real launch file), folder reading of damaged DICOM files (written into a
real SQLite index, which ``check`` must find consistent afterwards) and QIDO
parameter parsing and matching. The budget is fixed per test
(``FUZZ_EXAMPLES``, raised with ``METASTORE_FUZZ_EXAMPLES`` for a longer run).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from launch_helpers import launch_study
from pydicom.data import get_testdata_file

from metastore import MetaStore, denaturalize, naturalize
from metastore.check import check
from metastore.errors import MetastoreError
from metastore.ingest import ingest_folder
from metastore.launchfile import LaunchStudy, read_studies
from metastore.matching import parse_query

FUZZ_EXAMPLES = int(os.environ.get("METASTORE_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,  # CI runs the same examples every time
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
TAGS = st.sampled_from(
    ["00100010", "0020000D", "00080060", "00081115", "7FE00010", "00280010", "zzzz", "0008103E"]
)
VRS = st.sampled_from(["PN", "SQ", "UI", "DA", "US", "DS", "IS", "AT", "OB", "LO", "XX", ""])
ELEMENT = st.fixed_dictionaries(
    {},
    optional={
        "vr": VRS | JSON,
        "Value": JSON,
        "InlineBinary": st.text(max_size=12) | JSON,
        "BulkDataURI": st.text(max_size=12) | JSON,
    },
)
DICOM_JSON = st.dictionaries(TAGS | st.text(max_size=10), ELEMENT | JSON, max_size=6)


@FUZZ
@given(DICOM_JSON)
def test_the_codec_reads_or_refuses(dataset: dict[str, Any]) -> None:
    try:
        natural = naturalize(dataset)
    except MetastoreError:
        return
    with contextlib.suppress(MetastoreError):
        denaturalize(natural)


@FUZZ
@given(st.dictionaries(st.text(max_size=12), JSON, max_size=6))
def test_denaturalize_refuses_cleanly(dataset: dict[str, Any]) -> None:
    with contextlib.suppress(MetastoreError):
        denaturalize(dataset)


def _launch_bytes() -> bytes:
    study = launch_study("1.2.3", series=2, instances=2)
    study["series"][0]["instances"][0]["metadata"]["ReferencedSeriesSequence"] = [
        {
            "SeriesInstanceUID": "1.2.3.1",
            "ReferencedInstanceSequence": [{"ReferencedSOPInstanceUID": "1.2"}],
        }
    ]
    return orjson.dumps({"studies": [study, launch_study("1.2.4", series=1, instances=2)]})


LAUNCH = _launch_bytes()
MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(LAUNCH) - 1), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, len(LAUNCH)), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, len(LAUNCH) - 1), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, len(LAUNCH) - 1), st.just(0)),
)


def mutate(data: bytes, mutations: list[tuple[str, int, Any]]) -> bytes:
    buffer = bytearray(data)
    for kind, at, arg in mutations:
        at = min(at, len(buffer))
        if kind == "flip" and at < len(buffer):
            buffer[at] = arg
        elif kind == "insert":
            buffer[at:at] = arg
        elif kind == "delete":
            del buffer[at : at + arg]
        elif kind == "truncate":
            del buffer[at:]
    return bytes(buffer)


def read_all(data: bytes) -> list[str]:
    """The UIDs of the studies read whole; the failures are fine, other exceptions are not."""
    read = []
    try:
        for item in read_studies(io.BytesIO(data), name="fuzz.json"):
            if isinstance(item, LaunchStudy):
                with item:
                    read.append(item.study_uid)
                    for _summary, instances in item.series():
                        assert all(isinstance(i, dict) for i in instances)
    except MetastoreError as err:
        assert "fuzz.json" in str(err)
    return read


@FUZZ
@given(st.lists(MUTATION, min_size=1, max_size=4))
def test_a_mutated_launch_file_is_read_or_refused(mutations: list[tuple[str, int, Any]]) -> None:
    read_all(mutate(LAUNCH, mutations))


@FUZZ
@given(st.lists(MUTATION, min_size=1, max_size=3))
def test_a_mutated_gzip_launch_file_is_read_or_refused(
    mutations: list[tuple[str, int, Any]],
) -> None:
    read_all(mutate(gzip.compress(LAUNCH), mutations))


def test_the_unmutated_file_reads_whole() -> None:
    assert read_all(LAUNCH) == ["1.2.3", "1.2.4"]


DICOM_FILES = [
    Path(str(get_testdata_file(name))) for name in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")
]


@pytest.fixture(scope="module")
def folder_store(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("fuzzdb") / "fuzz.db"
    shutil.copyfile(sqlite_template, path)
    with MetaStore(f"sqlite:///{path}") as store:
        yield store


@settings(
    max_examples=max(FUZZ_EXAMPLES // 3, 10),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    st.sampled_from(range(len(DICOM_FILES))),
    st.lists(
        st.one_of(
            st.tuples(st.just("flip"), st.integers(0, 4000), st.integers(0, 255)),
            st.tuples(st.just("delete"), st.integers(0, 4000), st.integers(1, 64)),
            st.tuples(st.just("truncate"), st.integers(0, 4000), st.just(0)),
            st.tuples(st.just("insert"), st.integers(0, 4000), st.binary(min_size=1, max_size=8)),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_a_damaged_dicom_file_is_skipped_or_read(
    folder_store: MetaStore, which: int, mutations: list[tuple[str, int, Any]]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        damaged = mutate(DICOM_FILES[which].read_bytes(), mutations)
        Path(folder, "damaged.dcm").write_bytes(damaged)
        shutil.copyfile(DICOM_FILES[(which + 1) % len(DICOM_FILES)], Path(folder, "good.dcm"))
        good = pydicom.dcmread(DICOM_FILES[(which + 1) % len(DICOM_FILES)], stop_before_pixels=True)
        try:
            ingest_folder(folder_store, folder, source="fuzz", keep_going=True)
        except MetastoreError:
            pass
        else:
            # the good file always gets in, whatever the damaged one holds
            assert folder_store.get_instance(
                good.StudyInstanceUID, good.SeriesInstanceUID, good.SOPInstanceUID
            )
    report = check(folder_store)
    assert report.clean, report.findings


QIDO_KEYS = st.sampled_from(
    [
        "PatientName",
        "StudyDate",
        "StudyTime",
        "ModalitiesInStudy",
        "StudyInstanceUID",
        "00100020",
        "limit",
        "offset",
        "fuzzymatching",
        "includefield",
        "PatientID",
        "SeriesNumber",
        "ReferencedSeriesSequence.SeriesInstanceUID",
        "Nope",
        "0020000D.x",
        "",
    ]
) | st.text(max_size=12)
QIDO_VALUES = st.text(max_size=16) | st.sampled_from(
    [
        "*",
        "?",
        "-",
        "2024-",
        "-20240101",
        "20240101-20230101",
        "1\\2",
        "^",
        "=",
        "1e999",
        "-1",
        "nan",
    ]
)


@FUZZ
@given(
    st.dictionaries(
        QIDO_KEYS, QIDO_VALUES | st.integers() | st.lists(QIDO_VALUES, max_size=3), max_size=4
    )
)
def test_qido_parameters_parse_or_refuse(params: dict[str, Any]) -> None:
    try:
        query = parse_query(params)
    except MetastoreError:
        return
    dataset = {
        "PatientName": "Doe^Jane",
        "StudyDate": "20240102",
        "StudyTime": "101500",
        "ModalitiesInStudy": ["CT", "SR"],
        "StudyInstanceUID": "1.2.3",
        "PatientID": "P1",
        "SeriesNumber": 3,
        "ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.2"}],
    }
    with contextlib.suppress(MetastoreError):
        query.filter([dataset, {}])
