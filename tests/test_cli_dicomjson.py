"""The ingest dicomjson / ingest folder / export dicomjson commands."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pydicom.data
import pytest
from launch_helpers import launch_study, write_launch

from metastore import MetaStore
from metastore.cli import build_parser, command_group, main

SAMPLE = Path(__file__).resolve().parent.parent / "metastore" / "data" / "sample.json.gz"
PYDICOM_FILES = Path(pydicom.data.__file__).resolve().parent / "test_files"


def test_ingest_then_export_then_ingest(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", db_url, "ingest", "dicomjson", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "38 studies" in out and "into source 'sample'" in out
    assert main(["--db", db_url, "stats"]) == 0
    assert "sample" in capsys.readouterr().out
    exported = tmp_path / "all.json"
    assert main(["--db", db_url, "export", "dicomjson", "--all", "-o", str(exported)]) == 0
    assert "wrote 38 studies" in capsys.readouterr().out
    assert len(orjson.loads(exported.read_bytes())["studies"]) == 38
    assert main(["--db", db_url, "ingest", "dicomjson", str(exported), "--source", "sample"]) == 0
    assert "0 new, 0 changed" in capsys.readouterr().out


def test_bad_study_fails_with_one_line_or_is_listed_with_keep_going(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = launch_study("1.2.4")
    bad["series"][1]["instances"][2]["metadata"].pop("SOPInstanceUID")
    path = write_launch(
        tmp_path / "mixed.json", [launch_study("1.2.3"), bad, launch_study("1.2.5")]
    )
    assert main(["--db", db_url, "ingest", "dicomjson", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("metastore: error: SOPInstanceUID is missing")
    assert "studies[1].series[1].instances[2].metadata.SOPInstanceUID" in err[0]
    assert main(["--db", db_url, "ingest", "dicomjson", "--keep-going", str(path)]) == 1
    captured = capsys.readouterr()
    assert "2 studies" in captured.out and "1 studies failed" in captured.out
    assert "failed: study 1.2.4:" in captured.err and "studies[1].series[1]" in captured.err
    with MetaStore(db_url) as store:
        assert store.get_study("1.2.5") is not None and store.get_study("1.2.4") is None


def test_source_name_from_the_environment(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("METASTORE_INGEST_DICOMJSON_SOURCE", "from-env")
    path = write_launch(tmp_path / "one.json.gz", [launch_study()])
    assert main(["--db", db_url, "ingest", "dicomjson", str(path)]) == 0
    assert "into source 'from-env'" in capsys.readouterr().out


def test_export_needs_studies_or_all(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x.json")
    assert main(["--db", db_url, "export", "dicomjson", "-o", out]) == 1
    assert "name the studies to export, or give --all" in capsys.readouterr().err
    assert main(["--db", db_url, "export", "dicomjson", "9.9", "-o", out]) == 1
    assert "9.9 is not in the index" in capsys.readouterr().err


def test_ingest_folder(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", folder / "CT_small.dcm")
    assert main(["--db", db_url, "ingest", "folder", str(folder), "--url-root", "https://h/x"]) == 0
    assert "1 instances" in capsys.readouterr().out
    # A file that is not DICOM is skipped and listed once: no failure.
    (folder / "notes.txt").write_text("not DICOM")
    assert main(["--db", db_url, "ingest", "folder", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "skipped notes.txt" in err and err.count("notes.txt") == 1
    # A DICOM file that cannot be read is a failure.
    (folder / "cut.dcm").write_bytes((PYDICOM_FILES / "CT_small.dcm").read_bytes()[:600])
    assert main(["--db", db_url, "ingest", "folder", str(folder)]) == 1
    assert "unreadable: cut.dcm" in capsys.readouterr().err


def test_the_ingest_group_takes_more_kinds() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    ingest = command_group(commands, "ingest", "unused")  # type: ignore[arg-type]
    assert {"dicomjson", "folder"} <= set(ingest.choices)
    ingest.add_parser("other", help="a kind another area adds")
    assert "other" in command_group(commands, "ingest", "unused").choices  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "argv", [["ingest", "dicomjson"], ["ingest", "folder"], ["export", "dicomjson"]]
)
def test_commands_have_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    assert "[env: METASTORE_" in capsys.readouterr().out


def test_a_launch_file_with_a_byte_order_mark_is_read(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import gzip

    sample = Path(__file__).resolve().parent.parent / "metastore" / "data" / "sample.json.gz"
    plain = tmp_path / "bom.json"
    plain.write_bytes(b"\xef\xbb\xbf" + gzip.decompress(sample.read_bytes()))
    assert main(["--db", db_url, "ingest", "dicomjson", str(plain)]) == 0
    assert "38 studies" in capsys.readouterr().out


def test_an_error_with_a_uid_names_no_item_number() -> None:
    from metastore.errors import InvalidMetadata

    text = str(InvalidMetadata("bad", item=0, study_uid="1.2", field="Rows"))
    assert text == "bad (study 1.2, field Rows)"
    assert str(InvalidMetadata("bad", item=3)) == "bad (item 3)"
