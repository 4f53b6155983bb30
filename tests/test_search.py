"""Search: paging, order, counts, return attributes and errors, on both engines."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import instance_meta, instances, series_meta, study_meta

from metastore import MetaStore
from metastore.search import QueryError, search_instances, search_series, search_studies


def _values(rows: list[dict[str, Any]], tag: str) -> list[Any]:
    return [row[tag]["Value"][0] if "Value" in row.get(tag, {}) else None for row in rows]


def _fill(store: MetaStore, count: int) -> list[str]:
    """``count`` studies on distinct dates; returns their UIDs newest first."""
    uids = []
    for n in range(count):
        study = f"1.2.5.{n}"
        uids.append(study)
        store.add_instances(
            instances(
                study,
                f"{study}.1",
                count=2,
                StudyDate=f"2020{1 + n % 12:02d}{1 + n:02d}",
                StudyTime="101500",
                PatientID=f"P{n}",
            ),
            source="pacs",
        )
    return sorted(
        uids,
        key=lambda u: f"2020{1 + int(u.split('.')[-1]) % 12:02d}{1 + int(u.split('.')[-1]):02d}",
        reverse=True,
    )


def test_pages_are_stable_newest_first_and_counted(store: MetaStore) -> None:
    newest_first = _fill(store, 7)
    seen: list[str] = []
    for offset in range(0, 7, 3):
        page = search_studies(store, {}, limit=3, offset=offset, count=True)
        assert page.total == 7
        assert not page.truncated
        seen += _values(page.rows, "0020000D")
    assert seen == newest_first
    # limit and offset given as QIDO parameters work the same
    assert (
        _values(search_studies(store, {"limit": "2", "offset": "1"}).rows, "0020000D")
        == newest_first[1:3]
    )


def test_the_cap_truncates_and_says_so(store: MetaStore) -> None:
    _fill(store, 4)
    capped = search_studies(store, {}, max_limit=3)
    assert len(capped.rows) == 3 and capped.truncated
    asked = search_studies(store, {}, limit=10, max_limit=3)
    assert len(asked.rows) == 3 and asked.truncated
    within = search_studies(store, {}, limit=3, max_limit=3)
    assert len(within.rows) == 3 and not within.truncated  # the client's own limit
    assert not search_studies(store, {}, max_limit=4).truncated
    assert search_studies(store, {}, count=False).total is None


def test_study_rows_default_attributes_and_computed_counts(store: MetaStore) -> None:
    store.add_instances(instances("1.2.6", "1.2.6.1", count=3), source="pacs")
    store.add_instances(instances("1.2.6", "1.2.6.2", count=2, Modality="SR"), source="pacs")
    # The same series from a second source: one series, its instances counted once.
    store.add_instances(instances("1.2.6", "1.2.6.1", count=4), source="mirror")
    (row,) = search_studies(store, {"PatientID": "PAT001"}).rows
    assert row["00080061"] == {"vr": "CS", "Value": ["CT", "SR"]}
    assert row["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
    assert row["00201208"]["Value"] == [6]  # NumberOfStudyRelatedInstances: 4 distinct + 2
    assert row["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert list(row) == sorted(row)
    assert "00081030" in row and "00280010" not in row  # Rows is no study attribute
    (series_row,) = search_series(store, {"SeriesInstanceUID": "1.2.6.1"}).rows
    assert series_row["00201209"]["Value"] == [4]  # NumberOfSeriesRelatedInstances
    assert series_row["0020000D"]["Value"] == ["1.2.6"]
    assert len(search_instances(store, {}, study_uid="1.2.6", series_uid="1.2.6.1").rows) == 4


def test_modalities_in_study_is_left_out_when_empty(store: MetaStore) -> None:
    store.add_study(study_meta("1.2.7"), source="pacs")
    (row,) = search_studies(store, {}).rows
    assert "00080061" not in row
    assert row["00201206"]["Value"] == [0]


def test_includefield(store: MetaStore) -> None:
    store.add_instances(
        [instance_meta("1.2.8", "1.2.8.1", 1, PatientWeight=70.5, NumberOfFrames=3)], source="pacs"
    )
    (row,) = search_studies(
        store, {"includefield": ["00101030", "PatientAge,IssuerOfPatientID"]}
    ).rows
    assert "00101030" not in row  # not held at study level (a study row built from instances)
    everything = search_instances(store, {"includefield": "all"}).rows[0]
    assert everything["00101030"]["Value"] == [70.5]
    assert everything["00200032"]["Value"] == [0.0, 0.0, 1.0]  # ImagePositionPatient
    default = search_instances(store, {}).rows[0]
    for tag in ("00080016", "00080018", "00200013", "00280010", "00280011", "00280008"):
        assert tag in default  # SOPClassUID, SOPInstanceUID, InstanceNumber, Rows, Columns, frames
    assert "00200032" not in default
    classes = search_studies(store, {"includefield": "SOPClassesInStudy"}).rows[0]
    assert classes["00080062"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]


def test_a_matching_key_is_returned(store: MetaStore) -> None:
    store.add_instances(
        [instance_meta("1.2.9", "1.2.9.1", 1, BodyPartExamined="HEAD")], source="pacs"
    )
    row = search_series(store, {"BodyPartExamined": ""}).rows[0]
    assert row["00180015"]["Value"] == ["HEAD"]


def test_series_scoped_to_a_study(store: MetaStore) -> None:
    store.add_series_metadata(
        [series_meta("1.3.1", "1.3.1.1"), series_meta("1.3.1", "1.3.1.2", SeriesNumber=2)],
        source="pacs",
    )
    store.add_series_metadata([series_meta("1.3.2", "1.3.2.1")], source="pacs")
    rows = search_series(store, {}, study_uid="1.3.1").rows
    assert _values(rows, "0020000E") == ["1.3.1.1", "1.3.1.2"]
    assert search_series(store, {}, study_uid="1.3.9").rows == []


def test_fuzzy_where_it_cannot_apply_is_a_warning(store: MetaStore) -> None:
    result = search_studies(
        store, {"fuzzymatching": "true", "StudyDescription": "CT*", "PatientName": "do"}
    )
    assert any("StudyDescription" in w for w in result.warnings)
    assert search_studies(store, {"fuzzymatching": "true", "PatientName": "do"}).warnings == ()


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"PatientNam": "x"}, "PatientNam"),
        ({"StudyDate": "2013-"}, "StudyDate"),
        ({"StudyDate": "20130201-20130101"}, "StudyDate"),
        ({"SeriesNumber": "three"}, "SeriesNumber"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
        ({"includefield": "NotAKeyword"}, "NotAKeyword"),
        ({"PatientID": "PAT\x00001"}, "PatientID"),
        ({"PatientID.SeriesInstanceUID": "1"}, "PatientID"),
        ({"StudyInstanceUID": ",".join(f"1.{n}" for n in range(1001))}, "StudyInstanceUID"),
    ],
)
def test_malformed_queries_name_the_parameter(
    store: MetaStore, query: dict[str, str], named: str
) -> None:
    with pytest.raises(QueryError) as caught:
        search_studies(store, query)
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_hostile_values_leave_the_index_alone(store: MetaStore) -> None:
    store.add_instances(instances("1.4.1", "1.4.1.1", count=1), source="pacs")
    for value in (
        "'; DELETE FROM studies; --",
        'x" OR 1=1 --',
        "%",
        "_",
        "\\\\",
        "$1",
        "%(p)s",
        ":p",
        "?",
    ):
        for key in (
            "PatientID",
            "PatientName",
            "StudyDescription",
            "ReferencedSeriesSequence.SeriesDescription",
        ):
            assert search_studies(store, {key: value}).rows == []
    assert len(search_studies(store, {}).rows) == 1


def test_study_attributes_kept_only_by_instances_are_searched_there(store: MetaStore) -> None:
    # Indexed from its instances, the study row keeps the main study keys only.
    store.add_instances([instance_meta("1.5.1", "1.5.1.1", 1, PatientWeight=70.5)], source="pacs")
    # A study row of its own (a QIDO study row) holds the attribute: that row decides.
    store.add_study(study_meta("1.5.2", PatientWeight=80), source="pacs")
    store.add_instances([instance_meta("1.5.2", "1.5.2.1", 1, PatientWeight=70.5)], source="pacs")
    assert _values(search_studies(store, {"PatientWeight": "70.5"}).rows, "0020000D") == ["1.5.1"]
    assert _values(search_studies(store, {"PatientWeight": "80"}).rows, "0020000D") == ["1.5.2"]
    found = search_instances(store, {"PatientWeight": "70.5"}).rows
    assert sorted(_values(found, "0020000D")) == ["1.5.1", "1.5.2"]
