"""Folders of DICOM files: the generator script on pydicom's files, and ingest folder."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pydicom
import pydicom.data
import pytest

from metastore import MetaStore
from metastore.ingest import ingest_folder, ingest_launch_file
from metastore.launchfile import LAUNCH_INSTANCE_KEYS
from metastore.sources import SourceConfig, open_source
from metastore.sources.folder import FolderSource, scan_folder

PYDICOM_FILES = Path(pydicom.data.__file__).resolve().parent / "test_files"
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], int]:
    """pydicom's shipped files through scripts/dicom_json_generator.py."""
    out = tmp_path_factory.mktemp("gen") / "pydicom.json"
    code = load_script("dicom_json_generator").main(
        [str(PYDICOM_FILES), "https://files.example/td", str(out)]
    )
    return out, orjson.loads(out.read_bytes()), code


def dataset_of(path: Path) -> Any:
    """pydicom's reading of a file (its warnings about odd files silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def valid_value(dataset: Any, key: str) -> bool:
    """Whether the file has a non-empty value for ``key`` that pydicom accepts as valid."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return dataset.get(key) not in (None, "", [])
        except Exception:
            return False


def entries_by_file(document: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for study in document["studies"]:
        for one in study["series"]:
            for entry in one["instances"]:
                name = unquote(entry["url"].removeprefix("dicomweb:https://files.example/td/"))
                found.setdefault(name.split("?frame=")[0], []).append(entry)
    return found


def test_generator_covers_every_file_pydicom_ships(
    generated: tuple[Path, dict[str, Any], int],
) -> None:
    _out, document, code = generated
    index = scan_folder(PYDICOM_FILES, url_root="https://files.example/td", progress=False)
    every_file = sorted(
        str(p.relative_to(PYDICOM_FILES)) for p in PYDICOM_FILES.rglob("*") if p.is_file()
    )
    written = entries_by_file(document)
    skipped = {path for path, _reason in index.unreadable}
    # Every file is either in the launch file or reported with a reason; never both, never lost.
    assert not set(written) & skipped
    assert sorted(set(written) | skipped) == every_file
    assert code == 1  # some files (README.txt, DICOMDIRs, .json) were skipped, not fatal
    reasons = dict(index.unreadable)
    assert (
        "no SOPInstanceUID" in reasons["README.txt"]
        or "no StudyInstanceUID" in reasons["README.txt"]
    )
    # Every file pydicom reads as a composite instance is in (or the same instance as one that is).
    for path in every_file:
        try:
            dataset = dataset_of(PYDICOM_FILES / path)
        except Exception:
            continue
        if (
            dataset.get("SOPInstanceUID")
            and dataset.get("StudyInstanceUID")
            and dataset.get("SeriesInstanceUID")
        ):
            assert (
                path in written
                or "the same instance as" in reasons.get(path, "")
                or path in reasons
            )


def test_generator_writes_what_ohif_needs_per_modality(
    generated: tuple[Path, dict[str, Any], int],
) -> None:
    _out, document, _code = generated
    written = entries_by_file(document)
    ct = written["CT_small.dcm"][0]
    assert ct["url"] == "dicomweb:https://files.example/td/CT_small.dcm"
    # The list for every image, and MPR geometry, on a real CT.
    needed = "SOPClassUID Rows Columns PhotometricInterpretation BitsAllocated BitsStored HighBit"
    needed += " PixelRepresentation SamplesPerPixel PixelSpacing InstanceNumber RescaleSlope"
    needed += " RescaleIntercept ImagePositionPatient ImageOrientationPatient FrameOfReferenceUID"
    assert set(needed.split()) <= set(ct["metadata"])
    assert "PixelData" not in ct["metadata"]
    # Whatever OHIF needs that a file has, its entries carry (WindowCenter, sequences...).
    for name, entries in written.items():
        dataset = dataset_of(PYDICOM_FILES / name)
        present = [key for key in LAUNCH_INSTANCE_KEYS if valid_value(dataset, key)]
        for key in present:
            assert key in entries[0]["metadata"], (name, key)
    structure = written["rtstruct.dcm"][0]["metadata"]
    for key in (
        "StructureSetROISequence",
        "ROIContourSequence",
        "ReferencedFrameOfReferenceSequence",
    ):
        assert key in structure, key
    report = written["test-SR.dcm"][0]["metadata"]
    for key in ("ConceptNameCodeSequence", "ContentSequence"):
        assert key in report, key
    # A multi-frame instance: every frame, 1-based, and NumberOfFrames kept.
    frames = written["examples_ybr_color.dcm"]
    assert frames[0]["metadata"]["NumberOfFrames"] == 30 == len(frames)
    assert [f["url"].rsplit("?", 1)[1] for f in frames] == [f"frame={n}" for n in range(1, 31)]
    ultrasound = [
        e for entries in written.values() for e in entries if e["metadata"].get("Modality") == "US"
    ]
    assert any("SequenceOfUltrasoundRegions" in e["metadata"] for e in ultrasound)
    for entries in written.values():
        for entry in entries:
            text = orjson.dumps(entry["metadata"])
            assert b"InlineBinary" not in text or len(text) < 20_000  # nothing bulky inline


def test_generated_file_ingests(
    store: MetaStore, generated: tuple[Path, dict[str, Any], int]
) -> None:
    out, document, _code = generated
    summary = ingest_launch_file(store, str(out), progress=False)
    assert summary.ok
    assert summary.studies == len(document["studies"])
    study = store.get_study(document["studies"][0]["StudyInstanceUID"])
    assert study is not None


def test_ingest_folder_indexes_full_metadata_and_skips_bad_files(
    store: MetaStore, tmp_path: Path
) -> None:
    folder = tmp_path / "scans"
    (folder / "sub dir").mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm", "rtstruct.dcm", "README.txt"):
        shutil.copy(PYDICOM_FILES / name, folder / "sub dir" / name)
    (folder / "broken.dcm").write_bytes(b"DICM" + b"\x00" * 10)
    summary = ingest_folder(store, folder, url_root="https://pacs.example/files", progress=False)
    assert summary.studies == 3 and summary.instances == 3
    assert not summary.ok
    assert {path for path, _ in summary.skipped_files} == {"broken.dcm", "sub dir/README.txt"}
    ct = dataset_of(PYDICOM_FILES / "CT_small.dcm")
    found = store.get_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert found is not None
    assert found["url"] == "dicomweb:https://pacs.example/files/sub%20dir/CT_small.dcm"
    assert found["KVP"] == float(ct.KVP)  # full metadata, not the launch-file subset
    source = store.get_source("scans")
    assert source is not None and source.kind == "folder"
    again = ingest_folder(store, folder, url_root="https://pacs.example/files", progress=False)
    assert again.unchanged == 3 and again.events == 0


def test_folder_source_protocol(tmp_path: Path) -> None:
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(PYDICOM_FILES / name, tmp_path / name)
    source = open_source(SourceConfig(name="f", kind="folder", root=str(tmp_path)))
    assert isinstance(source, FolderSource)
    rows = list(source.search_studies())
    assert len(rows) == 2
    ct = dataset_of(tmp_path / "CT_small.dcm")
    [series_row] = source.search_series(ct.StudyInstanceUID)
    assert series_row["SeriesInstanceUID"] == ct.SeriesInstanceUID
    [instance] = source.retrieve_series_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert instance["SOPInstanceUID"] == ct.SOPInstanceUID
    assert instance["url"].startswith("dicomweb:file://")
    assert source.get_image_ids(instance) == [instance["url"]]
    source.close()


def test_ingest_folder_counts_what_pydicoms_json_needed_normalized(
    store: MetaStore, tmp_path: Path
) -> None:
    # pydicom writes an empty value among several as "" (PS3.18 F.2.5 says null)
    shutil.copy(PYDICOM_FILES / "examples_overlay.dcm", tmp_path / "overlay.dcm")
    summary = ingest_folder(store, tmp_path, progress=False)
    assert summary.instances == 1
    assert summary.quirks == {"empty string value": 1}
    assert "normalized: empty string value 1" in str(summary)
    dataset = dataset_of(PYDICOM_FILES / "examples_overlay.dcm")
    found = store.get_instance(
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID
    )
    assert found is not None and None in found["ImageType"]
