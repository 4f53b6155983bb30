"""`metastore search`: table, JSON lines, CSV, count, and one-line errors with exit 2."""

from __future__ import annotations

import csv
import io

import orjson
import pytest
from helpers import instances

from metastore import MetaStore
from metastore.cli import main


@pytest.fixture
def url(store: MetaStore) -> str:
    store.add_instances(instances("1.2.1", "1.2.1.1", count=2), source="pacs")
    store.add_instances(
        instances(
            "1.2.2", "1.2.2.1", count=1, PatientName=[{"Alphabetic": "Roe^Rick"}], Modality="MR"
        ),
        source="pacs",
    )
    return store.url


def test_table_with_count(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", url, "search", "studies", "PatientName=doe*", "--count"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["StudyDate", "StudyTime"]
    assert "Doe^Jane" in out[1] and "Roe^Rick" not in "\n".join(out)
    assert out[-1] == "1 matching"


def test_json_lines_are_dicom_json(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--db",
        url,
        "search",
        "instances",
        "--study",
        "1.2.1",
        "--format",
        "json",
        "--includefield",
        "00200032",
    ]
    assert main(argv) == 0
    rows = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["00080018"]["Value"][0] for r in rows] == ["1.2.1.1.1", "1.2.1.1.2"]
    assert rows[0]["00200032"] == {"vr": "DS", "Value": [0.0, 0.0, 1.0]}


def test_csv_with_paging(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["--db", url, "search", "series", "--format", "csv", "--limit", "1", "--offset", "1"])
        == 0
    )
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == 1
    assert table[0]["Modality"] in ("CT", "MR")


def test_negative_limit_is_a_usage_error(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--db", url, "search", "studies", "--limit", "-1"])
    assert exited.value.code == 2
    assert "--limit" in capsys.readouterr().err


@pytest.mark.parametrize("words", [["StudyDate=2013-"], ["Nonsense=1"], ["PatientID"]])
def test_malformed_query_is_one_line_and_exit_2(
    url: str, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", url, "search", "studies", *words]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "malformed query" in err
