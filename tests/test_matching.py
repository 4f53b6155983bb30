"""QIDO matching (PS3.4 C.2.2.2): a table per rule, then the bundled real studies."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import DATA, read_gz

from metastore import ConfigurationError, naturalize
from metastore.matching import parse_query

DATASET: dict[str, Any] = {
    "StudyInstanceUID": "1.2.840.1",
    "PatientID": "PAT001",
    "PatientName": [{"Alphabetic": "Müller^Jürgen", "Ideographic": "ミュラー^ユルゲン"}],
    "StudyDate": "20130125",
    "StudyTime": "105919.123",
    "AcquisitionDateTime": "20130125105919+0100",
    "StudyDescription": "CT chest",
    "ModalitiesInStudy": ["CT", "SR"],
    "NumberOfStudyRelatedInstances": 12,
    "SeriesNumber": "3",
    "ReferencedSeriesSequence": [{"SeriesInstanceUID": "1.2.3.9"}],
}

CASES = [
    # single value matching (C.2.2.2.1)
    ({"PatientID": "PAT001"}, True),
    ({"PatientID": "PAT00"}, False),
    ({"PatientID": "pat001"}, False),  # case-sensitive outside PN
    ({"StudyDescription": " CT chest "}, True),  # leading/trailing spaces do not count
    ({"00100020": "PAT001"}, True),  # a tag instead of a keyword
    ({"NumberOfStudyRelatedInstances": "12"}, True),  # numbers compare as numbers
    ({"SeriesNumber": "3.0"}, True),
    ({"SeriesNumber": "4"}, False),
    # universal matching (C.2.2.2.3)
    ({"PatientID": ""}, True),
    ({"AccessionNumber": ""}, True),  # also where the attribute is absent
    ({"AccessionNumber": "*"}, True),
    ({"AccessionNumber": "A*"}, False),
    # wildcards (C.2.2.2.4): the whole value, not a substring
    ({"StudyDescription": "CT*"}, True),
    ({"StudyDescription": "*chest"}, True),
    ({"StudyDescription": "chest*"}, False),  # OHIF would match a substring here
    ({"StudyDescription": "CT?chest"}, True),
    ({"StudyDescription": "CT?c"}, False),
    ({"StudyDescription": "ct*"}, False),  # case-sensitive outside PN
    # person names: case-insensitive, per component group
    ({"PatientName": "müller^jürgen"}, True),
    ({"PatientName": "MÜLLER*"}, True),
    ({"PatientName": "Müller"}, False),  # single value: the whole name
    ({"PatientName": "ミュラー*"}, True),  # the ideographic group
    ({"PatientName": "Muller^Jurgen"}, False),  # accents count without fuzzy matching
    ({"PatientName": "Muller^Jurgen", "fuzzymatching": "true"}, True),
    ({"PatientName": "jur mul", "fuzzymatching": "true"}, True),
    ({"PatientName": "smith", "fuzzymatching": "true"}, False),
    # UID lists (C.2.2.2.2)
    ({"StudyInstanceUID": "1.2.840.1"}, True),
    ({"StudyInstanceUID": "1.2.840"}, False),
    ({"StudyInstanceUID": "9.9\\1.2.840.1"}, True),
    ({"StudyInstanceUID": "9.9,1.2.840.1"}, True),
    ({"StudyInstanceUID": ["9.9", "1.2.840.1"]}, True),
    ({"StudyInstanceUID": "9.9,8.8"}, False),
    # ranges (C.2.2.2.5)
    ({"StudyDate": "20130101-20130131"}, True),
    ({"StudyDate": "20130126-"}, False),
    ({"StudyDate": "-20130125"}, True),
    ({"StudyDate": "20130125"}, True),
    ({"StudyDate": "20130124"}, False),
    ({"StudyTime": "1000-1059"}, True),  # an upper bound covers its whole minute
    ({"StudyTime": "1100-"}, False),
    ({"StudyTime": "10:59-11:00"}, True),
    ({"AcquisitionDateTime": "2013-2013"}, True),
    ({"AcquisitionDateTime": "20130126-"}, False),
    # multi-valued attributes and several query values
    ({"ModalitiesInStudy": "SR"}, True),
    ({"ModalitiesInStudy": "MR"}, False),
    ({"ModalitiesInStudy": "MR\\SR"}, True),
    # sequence matching (C.2.2.2.6)
    ({"ReferencedSeriesSequence.SeriesInstanceUID": "1.2.3.9"}, True),
    ({"ReferencedSeriesSequence.SeriesInstanceUID": "1.2.3.8"}, False),
    # several keys: all must match
    ({"PatientID": "PAT001", "StudyDate": "2013*"}, True),  # no wildcards in DA: literal
    ({"PatientID": "PAT001", "ModalitiesInStudy": "CT"}, True),
    ({"PatientID": "PAT001", "ModalitiesInStudy": "MR"}, False),
]


@pytest.mark.parametrize(("query", "expected"), CASES, ids=[str(q) for q, _ in CASES])
def test_matching_rules(query: dict[str, Any], expected: bool) -> None:
    if query.get("StudyDate") == "2013*":
        with pytest.raises(ConfigurationError, match="StudyDate"):
            parse_query(query).matches(DATASET)
        return
    assert parse_query(query).matches(DATASET) is expected


def test_backslash_joined_values_are_several_values() -> None:
    # Real data sends multi-valued strings as one backslash-joined value.
    assert parse_query({"ModalitiesInStudy": "SR"}).matches({"ModalitiesInStudy": "CT\\SR"})


def test_limit_and_offset_page_the_matches() -> None:
    rows = [{"PatientID": f"P{i}"} for i in range(10)]
    query = parse_query({"PatientID": "P*", "limit": "3", "offset": 4})
    assert [r["PatientID"] for r in query.filter(rows)] == ["P4", "P5", "P6"]
    assert query.limit == 3 and query.offset == 4


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"NoSuchKeyword": "x"}, "NoSuchKeyword"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"StudyDate": "2013-01-01"}, "StudyDate"),
        ({"SeriesNumber": "three"}, "SeriesNumber"),
        ({"PatientID": {"a": 1}}, "PatientID"),
    ],
)
def test_bad_queries_name_the_key(query: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_query(query).matches(DATASET)


def test_real_studies_filtered() -> None:
    rows = [naturalize(row) for row in read_gz(DATA / "studies" / "index.json.gz")]
    uids = {r["StudyInstanceUID"] for r in rows}
    assert len(rows) == 8

    def found(**query: Any) -> set[str]:
        return {r["StudyInstanceUID"] for r in parse_query(query).filter(rows)}

    assert found() == uids
    ct = found(ModalitiesInStudy="CT")
    assert ct and all(
        "CT" in str(r.get("ModalitiesInStudy")) for r in rows if r["StudyInstanceUID"] in ct
    )
    assert found(StudyDescription="ECG") == {"1.3.76.13.65829.2.20130125082826.1072139.2"}
    assert found(StudyDate="20130101-20130131") >= {"1.3.76.13.65829.2.20130125082826.1072139.2"}
    two = sorted(uids)[:2]
    assert found(StudyInstanceUID=",".join(two)) == set(two)
    # The Thorax study's patient is Test^Röntgen: case-insensitive; fuzzy matching ignores accents.
    thorax = found(PatientName="test^röntgen")
    assert len(thorax) == 1
    assert found(PatientName="TEST^R*") == thorax
    assert not found(PatientName="Test^Rontgen")
    assert found(PatientName="rontgen", fuzzymatching="true") == thorax
