"""Key columns from real-world values (metastore.records): old DA/TM forms, IS as written, padded UIDs."""

from __future__ import annotations

from typing import Any

import pytest

from metastore import records
from metastore.errors import InvalidMetadata
from metastore.records import Where


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("19970424", "19970424"),
        ("1997.04.24", "19970424"),
        ("1997-04-24", "19970424"),
        (" 19970424 ", "19970424"),
        ("", None),
        (None, None),
        ("unknown", "unknown"),
    ],
)
def test_date_key(value: str | None, key: str | None) -> None:
    assert records.date_key(value) == key


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("102030", "102030"),
        ("102030.123456", "102030.123456"),
        ("10:20:30", "102030"),
        ("10:20:30.5", "102030.5"),
        ("10:20", "1020"),
        ("10", "10"),
        (" 1020 ", "1020"),
        (None, None),
        ("noon", "noon"),
    ],
)
def test_time_key(value: str | None, key: str | None) -> None:
    assert records.time_key(value) == key


@pytest.mark.parametrize(
    ("value", "number"),
    [
        (12, 12),
        ("12", 12),
        (" 12 ", 12),
        ("12.", 12),
        ("1.2e1", 12),
        ("+7", 7),
        (3.0, 3),
        (["4"], 4),
        ("  ", None),
    ],
)
def test_integer_key_column_takes_is_as_written(value: Any, number: int | None) -> None:
    assert records.integer({"InstanceNumber": value}, "InstanceNumber", Where()) == number


@pytest.mark.parametrize("value", ["twelve", "1.5", True, {"x": 1}])
def test_integer_key_column_refuses_what_is_no_integer(value: Any) -> None:
    with pytest.raises(InvalidMetadata) as caught:
        records.integer({"InstanceNumber": value}, "InstanceNumber", Where(item=3))
    assert caught.value.context["field"] == "InstanceNumber"


def test_study_and_series_rows_normalize_dates_and_times_but_keep_the_metadata() -> None:
    meta = {
        "StudyInstanceUID": "1.2 ",
        "SeriesInstanceUID": "1.2.3 ",
        "StudyDate": "1997.04.24",
        "StudyTime": "10:20:30",
        "SeriesDate": "1997-04-25",
        "SeriesTime": "08:00",
        "SeriesNumber": " 3.",
    }
    study = records.study_row(meta, Where())
    series = records.series_row(meta, Where())
    assert (study["study_uid"], study["study_date"], study["study_time"]) == (
        "1.2",
        "19970424",
        "102030",
    )
    assert (series["series_uid"], series["series_date"], series["series_time"]) == (
        "1.2.3",
        "19970425",
        "0800",
    )
    assert series["series_number"] == 3
    assert '"StudyDate":"1997.04.24"' in study["metadata"]
