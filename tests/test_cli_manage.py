"""Sources and studies from the command line: list, delete (with their events), no silent merges."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import instances, series_meta

from metastore import EVENTS, MetaStore
from metastore.cli import main

SAMPLE = Path(__file__).resolve().parent.parent / "metastore" / "data" / "sample.json.gz"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _two_sources(url: str) -> None:
    with MetaStore(url) as store:
        store.add_series_metadata([series_meta()], source="pacs")
        store.add_instances(instances(count=3), source="pacs")
        store.add_series_metadata([series_meta(series="1.2.3.9")], source="cache")
        store.add_instances(instances(series="1.2.3.9", count=2), source="cache")
        store.add_series_metadata([series_meta(study="7.7", series="7.7.1")], source="cache")
        store.add_instances(instances(study="7.7", series="7.7.1", count=1), source="cache")


def test_sources_lists_names_kinds_and_counts(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_sources(db_url)
    code, out, _ = run(capsys, "--db", db_url, "sources", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert rows["pacs"]["series"] == 1 and rows["pacs"]["instances"] == 3
    assert rows["cache"]["series"] == 2 and rows["cache"]["instances"] == 3
    code, out, _ = run(capsys, "--db", db_url, "sources")
    assert code == 0 and out.splitlines()[0].split() == [
        "name",
        "kind",
        "series",
        "instances",
        "root_url",
    ]


def test_delete_source_keeps_other_lists_and_writes_events(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_sources(db_url)
    code, out, _ = run(capsys, "--db", db_url, "delete", "source", "cache")
    assert code == 0 and "2 series, 3 instances; 1 studies removed, 1 kept" in out
    with MetaStore(db_url) as store:
        assert store.get_source("cache") is None
        study = store.get_study("1.2.3")
        assert study is not None and [s["source"] for s in study["seriesLists"]] == ["pacs"]
        assert [(r["source"], r["series"], r["instances"]) for r in store.stats()] == [
            ("pacs", 1, 3)
        ]
        assert store.get_study("7.7") is None
        tail = store.changes(after=0, limit=100)[-2:]
    assert {(e.type, e.study_uid) for e in tail} == {
        (EVENTS.SERIES_REMOVED, "1.2.3"),
        (EVENTS.STUDY_DELETED, "7.7"),
    }
    code, _, err = run(capsys, "--db", db_url, "delete", "source", "cache")
    assert code == 1 and "no source named 'cache'" in err


def test_delete_study(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _two_sources(db_url)
    assert run(capsys, "--db", db_url, "delete", "study", "1.2.3")[0] == 0
    with MetaStore(db_url) as store:
        assert store.get_study("1.2.3") is None
        assert store.changes(after=0, limit=100)[-1].type == EVENTS.STUDY_DELETED
    code, _, err = run(capsys, "--db", db_url, "delete", "study", "1.2.3")
    assert code == 1 and "study 1.2.3 is not in the index" in err


def test_two_files_of_one_name_do_not_merge(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a" / "sample.json.gz", tmp_path / "b" / "sample.json.gz"
    for path in (first, second):
        path.parent.mkdir()
        shutil.copy(SAMPLE, path)
    assert run(capsys, "--db", db_url, "ingest", "dicomjson", str(first))[0] == 0
    code, _, err = run(capsys, "--db", db_url, "ingest", "dicomjson", str(second))
    assert code == 1 and f"already holds {first}" in err and "--source" in err
    with MetaStore(db_url) as store:
        source = store.get_source("sample")
    assert source is not None and source.root_url == str(first)  # absolute, unchanged
    assert run(capsys, "--db", db_url, "ingest", "dicomjson", str(second), "--source", "b")[0] == 0


def test_a_launch_file_that_cannot_be_read_registers_no_source(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for location in (str(tmp_path / "missing.json"), "ftp://files.example/x.json"):
        assert run(capsys, "--db", db_url, "ingest", "dicomjson", location)[0] == 1
    with MetaStore(db_url) as store:
        assert store.list_sources() == []
