"""DICOM files to naturalized metadata: the direct reader gives what pydicom's JSON path gave.

The reference is the previous reader: ``dataset.to_json_dict`` (strict
reading, invalid elements dropped), one orjson round trip, ``naturalize``.
Compared on every file pydicom ships and on every instance of the bundled
static DICOMweb tree written out as a DICOM file (explicit and implicit VR).
"""

from __future__ import annotations

import gzip
import logging
import warnings
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from metastore.dicom import naturalize
from metastore.dicomfile import read_file

PYDICOM_FILES = Path(pydicom.data.__file__).resolve().parent / "test_files"
STATIC_TREE = Path(__file__).resolve().parent.parent / "metastore" / "data" / "static-dicomweb"


def reference(path: Path, bulk_uri: str) -> dict[str, Any] | None:
    """What the reader before this one gave (None: not an instance, or unreadable)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if not all(dataset.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID")):
                return None
            if not dataset.get("SOPInstanceUID"):
                return None
            document = dataset.to_json_dict(
                bulk_data_threshold=1024,
                bulk_data_element_handler=lambda _element: bulk_uri,
                suppress_invalid_tags=True,
            )
        return naturalize(orjson.loads(orjson.dumps(document)))
    except Exception:
        return None


def compare(path: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    url = f"dicomweb:https://files.example/{path.name}"
    expected = reference(path, url.removeprefix("dicomweb:"))
    got = read_file(path, url).meta
    if got is not None:
        assert got.pop("url") == url and got.pop("imageId") == url
    return expected, got


@pytest.fixture(autouse=True)
def _quiet_pydicom() -> Any:
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def test_same_as_pydicom_json_on_every_file_pydicom_ships() -> None:
    files = sorted(p for p in PYDICOM_FILES.rglob("*") if p.is_file())
    read = 0
    for path in files:
        expected, got = compare(path)
        assert got == expected, path.name
        read += got is not None
    assert read > 140  # most of pydicom's ~170 files are instances


def _static_instances() -> list[dict[str, Any]]:
    found = []
    for metadata in sorted(STATIC_TREE.rglob("metadata.gz")):
        found += orjson.loads(gzip.decompress(metadata.read_bytes()))
    return found


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"]
)
def test_same_as_pydicom_json_on_the_bundled_data(tmp_path: Path, syntax: str) -> None:
    instances = _static_instances()
    assert len(instances) > 400
    written = 0
    for number, document in enumerate(instances):
        path = tmp_path / f"{number}.dcm"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dataset = Dataset.from_json(
                    document, bulk_data_uri_handler=lambda _tag, _vr, _uri: b"\x01" * 2048
                )
                dataset.file_meta = FileMetaDataset()
                dataset.file_meta.TransferSyntaxUID = syntax
                dataset.file_meta.MediaStorageSOPClassUID = dataset.get("SOPClassUID", "1.2")
                dataset.file_meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID", "1.2")
                dataset.save_as(path, enforce_file_format=True)
            except Exception:
                continue  # pydicom cannot build or write this one (a VR missing, ...)
        expected, got = compare(path)
        assert got == expected, (number, document.get("00080018"))
        written += 1
    assert written > 300, written


def test_not_dicom_and_unreadable_are_told_apart(tmp_path: Path) -> None:
    text = tmp_path / "README.txt"
    text.write_text("hello\n")
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff")
    result = read_file(text, "dicomweb:x")
    assert result.meta is None and result.error is None and result.not_dicom
    result = read_file(broken, "dicomweb:x")
    assert result.meta is None and result.error


def test_pydicom_complaints_are_collected_not_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The file meta says explicit VR, the data set is written implicit: pydicom warns.
    source = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    source.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "odd.dcm"
    pydicom.dcmwrite(path, source, implicit_vr=True, little_endian=True, force_encoding=True)
    with caplog.at_level(logging.WARNING, logger="pydicom"):
        result = read_file(path, "dicomweb:x")
    assert result.meta is not None
    assert any("implicit VR" in message for message in result.messages)
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
