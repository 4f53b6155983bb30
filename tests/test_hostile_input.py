"""Input crafted to hurt, found by mutating a real launch file: a clear error, nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from launch_helpers import launch_study, table_rows, write_launch

from metastore import MetaStore, cli
from metastore.errors import ConfigurationError, InvalidMetadata
from metastore.ingest import ingest_launch_file
from metastore.records import MAX_NESTING

HUGE = "1000000000000000000000"
DEEP = "DEEP"


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_an_overlong_utf8_sequence_is_a_clear_error(store: MetaStore, tmp_path: Path) -> None:
    good = orjson.dumps({"studies": [launch_study("1.2.3")]})
    path = tmp_path / "bad.json"
    path.write_bytes(good.replace(b'"Doe^Jane"', b'"Doe\xc0\x80Jane"'))
    with pytest.raises(InvalidMetadata) as caught:
        ingest_launch_file(store, str(path))
    text = str(caught.value)
    assert "not valid UTF-8 (bytes c0" in text and "bad.json" in text and "studies[0]" in text
    assert "\n" not in text
    assert store.study_uids() == []


def test_the_cli_says_it_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    good = orjson.dumps({"studies": [launch_study("1.2.3")]})
    path.write_bytes(good.replace(b'"Doe^Jane"', b'"Doe\xc0\x80Jane"'))
    code = cli.main(["--db", f"sqlite:///{tmp_path / 'm.db'}", "ingest", "dicomjson", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("metastore: error: not valid UTF-8")


@pytest.mark.parametrize("where", ["instance", "series", "study"])
def test_a_value_nested_too_deep_is_refused_before_anything_is_written(
    store: MetaStore, tmp_path: Path, where: str
) -> None:
    first, second = launch_study("1.2.3"), launch_study("1.2.4")
    if where == "instance":
        second["series"][1]["instances"][2]["metadata"]["ImageComments"] = DEEP
        path_start = "studies[1].series[1].instances[2].metadata.ImageComments[0][0]"
    elif where == "series":
        second["series"][1]["SeriesDescription"] = DEEP
        path_start = "studies[1].series[1].SeriesDescription[0]"
    else:
        second["StudyDescription"] = DEEP
        path_start = "studies[1].StudyDescription[0]"
    # orjson will not write 300 levels: the placeholder string becomes them
    path = tmp_path / "deep.json"
    document = orjson.dumps({"studies": [first, second]}).replace(
        b'"DEEP"', b"[" * 300 + b"1" + b"]" * 300
    )
    path.write_bytes(document)
    with pytest.raises(InvalidMetadata) as caught:
        ingest_launch_file(store, str(path))
    text = str(caught.value)
    assert f"more than {MAX_NESTING} levels deep" in text
    assert "deep.json" in text and path_start in text, text
    # the first study went in whole; of the second, not a row
    assert store.study_uids() == ["1.2.3"]
    rows = table_rows(store)
    assert all("1.2.4" not in str(row) for row in rows["series"])


def test_nesting_up_to_the_limit_is_read(store: MetaStore, tmp_path: Path) -> None:
    study = launch_study("1.2.3")
    study["series"][0]["instances"][0]["metadata"]["ImageComments"] = nested(MAX_NESTING - 1)
    ingest_launch_file(store, str(write_launch(tmp_path / "ok.json", [study])))
    instance = store.get_instance("1.2.3", "1.2.3.1", "1.2.3.1.1")
    assert instance is not None and instance["ImageComments"] == nested(MAX_NESTING - 1)


def test_changes_after_negative_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    MetaStore(url).close()
    with pytest.raises(SystemExit) as exited:
        cli.main(["--db", url, "changes", "--after", "-1"])
    assert exited.value.code == 2
    assert "--after" in capsys.readouterr().err


@pytest.mark.parametrize("after", [HUGE, str(2**63)])
def test_changes_after_out_of_range_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], after: str
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    MetaStore(url).close()  # read commands never create a database
    code = cli.main(["--db", url, "changes", "--after", after])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"metastore: error: after must be an integer from 0 to {2**63 - 1}, not {after}\n"


def test_the_largest_sequence_number_is_accepted(store: MetaStore) -> None:
    assert store.changes(after=2**63 - 1) == []
    with pytest.raises(ConfigurationError):
        store.changes(limit=2**64)
