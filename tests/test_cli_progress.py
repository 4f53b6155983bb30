"""Progress off a terminal: a line every few seconds on stderr; launch files by bytes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom.data
import pytest

from metastore.cli import main
from metastore.cli import progress as display

SAMPLE = Path(__file__).resolve().parent.parent / "metastore" / "data" / "sample.json.gz"
PYDICOM_FILES = Path(pydicom.data.__file__).resolve().parent / "test_files"


@pytest.fixture
def every_update(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(display, "INTERVAL", 0.0)


@pytest.mark.usefixtures("every_update")
def test_a_launch_file_shows_bytes_with_a_total(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", db_url, "ingest", "dicomjson", str(SAMPLE)]) == 0
    lines = capsys.readouterr().err.splitlines()
    size = SAMPLE.stat().st_size
    assert lines and all(line.startswith(f"ingest {SAMPLE}: ") for line in lines)
    assert f"/{size:,} bytes" in lines[0]
    assert f"{size:,}/{size:,} bytes (100%), 38 studies" in lines[-1]
    assert any("left" in line for line in lines[:-1])  # a time left while it runs


@pytest.mark.usefixtures("every_update")
def test_a_folder_shows_files_with_a_total(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(PYDICOM_FILES / name, folder / name)
    assert main(["--db", db_url, "ingest", "folder", str(folder), "--workers", "1"]) == 0
    last = capsys.readouterr().err.splitlines()[-1]
    assert "2/2 files (100%), 2 studies, 2 instances" in last


def test_quick_work_off_a_terminal_prints_no_progress(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", folder / "CT_small.dcm")
    assert main(["--db", db_url, "ingest", "folder", str(folder)]) == 0
    assert capsys.readouterr().err == ""
